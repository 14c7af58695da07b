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


def swing(trace: pd.DataFrame, entry: dict) -> go.Figure:
    """The meter's power phase by phase in the traced window (MW)."""
    x = [*trace["t_s"], float(trace["t_end_s"].iloc[-1])]
    y = [*(trace["facility_w"] / 1e6), float(trace["facility_w"].iloc[-1]) / 1e6]
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines", name="facility",
                               line={"shape": "hv", "color": COLORS[0]}))
    fig.update_layout(title=f"Power swings: {entry['largest_swing_mw']:.3g} MW, steepest "
                            f"ramp {entry['steepest_ramp_mw_per_s']:.3g} MW/s over "
                            f"{entry['ramp_window_s']:g} s", xaxis_title="time (s)",
                      yaxis_title="facility power (MW)")
    return fig


def swing_note(entry: dict) -> str:
    """What battery the grid's ramp limit asks for (empty without a limit)."""
    if entry.get("grid_ramp_kw_per_s") is None:
        return ""
    return (f"<p>To keep grid import within {entry['grid_ramp_kw_per_s']:g} kW/s, a battery "
            f"of {entry['battery_power_kw']:,.1f} kW and {entry['battery_energy_kwh']:,.3g} kWh "
            "covers the difference in this window.</p>")
