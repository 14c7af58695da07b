"""Figures of an optimizer plan and of the capacity outlook, from tidy tables."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dcsim.report.figures_run import COLORS


def plan_vs_baselines(summary: dict) -> go.Figure:
    """Predicted facility energy of the plan and of the baselines over the horizon."""
    base = summary.get("baselines", {})
    names = ["plan", *base]
    kwh = [summary["predicted_facility_kwh"], *(b["predicted_facility_kwh"] for b in base.values())]
    fig = go.Figure(go.Bar(x=names, y=kwh, marker_color=COLORS[:len(names)],
                           text=[f"{v:,.1f}" for v in kwh], textposition="outside"))
    fig.update_layout(title="Facility energy over the horizon (predicted), kWh",
                      yaxis_title="kWh")
    return fig


def plan_periods(plan: pd.DataFrame, periods: pd.DataFrame) -> go.Figure:
    """Replicas per configuration and period, and predicted facility power."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    if len(plan):
        grid = plan.pivot_table(index="period", columns="config", values="replicas",
                                aggfunc="sum", fill_value=0)
        for i, cfg in enumerate(grid.columns):
            fig.add_trace(go.Bar(x=grid.index, y=grid[cfg], name=str(cfg),
                                 marker_color=COLORS[i % len(COLORS)]), secondary_y=False)
    fig.add_trace(go.Scatter(x=periods["period"], y=periods["facility_w"] / 1e3,
                             name="facility power (kW)", mode="lines+markers",
                             line={"color": "black"}), secondary_y=True)
    fig.update_layout(barmode="stack", title="The plan per period", xaxis_title="period")
    fig.update_yaxes(title_text="replicas", secondary_y=False)
    fig.update_yaxes(title_text="kW (predicted)", secondary_y=True)
    return fig


def verification(verify: pd.DataFrame) -> go.Figure:
    """Closed loop: simulated SLO attainment and facility power per period, per plan."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "lowest SLO attainment of any service", "facility power: simulated (solid) and "
        "predicted (dotted)"))
    for i, (label, g) in enumerate(verify.groupby("plan", sort=False)):
        color = COLORS[i % len(COLORS)]
        per = g.groupby("period").agg(att=("slo_attainment", "min"),
                                      sim=("simulated_facility_w", "first"),
                                      pred=("predicted_facility_w", "first")).reset_index()
        fig.add_trace(go.Scatter(x=per["period"], y=per["att"], name=str(label),
                                 legendgroup=str(label), line={"color": color}), row=1, col=1)
        fig.add_trace(go.Scatter(x=per["period"], y=per["sim"] / 1e3, name=str(label),
                                 legendgroup=str(label), showlegend=False,
                                 line={"color": color}), row=1, col=2)
        fig.add_trace(go.Scatter(x=per["period"], y=per["pred"] / 1e3, name=f"{label} predicted",
                                 legendgroup=str(label), showlegend=False,
                                 line={"color": color, "dash": "dot"}), row=1, col=2)
    fig.update_xaxes(title_text="period")
    fig.update_yaxes(title_text="kW", row=1, col=2)
    fig.update_layout(title="Plans replayed in the simulator")
    return fig


def outlook(projection: pd.DataFrame, growth_per_month: float) -> go.Figure:
    """Projected use of each resource as a share of its capacity, month by month."""
    fig = go.Figure()
    for i, (res, g) in enumerate(projection.groupby("resource", sort=False)):
        fig.add_trace(go.Scatter(x=g["month"], y=g["share_of_capacity"], name=str(res),
                                 mode="lines", line={"color": COLORS[i % len(COLORS)]}))
    fig.add_hline(y=1.0, line_dash="dash", line_color="red",
                  annotation_text="capacity", annotation_position="top left")
    fig.update_layout(title=f"Capacity outlook at {growth_per_month:.1%} demand growth a month",
                      xaxis_title="months from now", yaxis_title="share of capacity",
                      yaxis_tickformat=".0%")
    return fig
