"""The report's supply section: where the meter's power came from, bucket by bucket."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dcsim.report.figures_run import COLORS

SOURCES = (("renewable_used_kw", "on-site renewables"), ("battery_discharge_kw", "battery out"),
           ("generators_kw", "generators"), ("grid_kw", "grid"), ("unmet_kw", "unmet"))


def dispatch(table: pd.DataFrame, kind: str = "rule") -> go.Figure:
    """Stacked sources against the load (kW); below, the batteries' state of charge."""
    d = table[table["dispatch"] == kind].sort_values("t_start_s")
    t = d["t_start_s"] / 3600
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3],
                        vertical_spacing=0.08, subplot_titles=(
                            f"supply by source, {kind} dispatch (kW)",
                            "battery state of charge (kWh)"))
    for i, (col, name) in enumerate(SOURCES):
        fig.add_trace(go.Scatter(x=t, y=d[col], name=name, stackgroup="supply", mode="lines",
                                 line={"width": 0.5, "color": COLORS[i % len(COLORS)],
                                       "shape": "hv"}), 1, 1)
    fig.add_trace(go.Scatter(x=t, y=d["load_kw"] + d["battery_charge_kw"], mode="lines",
                             name="load + battery charging", line={"color": "black",
                                                                  "shape": "hv"}), 1, 1)
    fig.add_trace(go.Scatter(x=t, y=d["battery_soc_kwh"], mode="lines", name="state of charge",
                             line={"color": "grey", "shape": "hv"}), 2, 1)
    fig.update_xaxes(title_text="time (h)", row=2, col=1)
    fig.update_layout(title="Where the power came from")
    return fig


def comparison(summary: dict) -> pd.DataFrame:
    """Rule against LP: the policy's objective, energy by source, peak import, money and
    carbon."""
    keys = ["objective", "grid_kwh", "grid_peak_kw", "renewable_used_kwh", "curtailed_kwh",
            "generators_kwh", "battery_discharge_kwh", "unmet_kwh", "cost_usd", "carbon_kg",
            "carbon_kg_location_based"]
    return pd.DataFrame([{"dispatch": k, **{c: summary[k][c] for c in keys}}
                         for k in ("rule", "lp")])
