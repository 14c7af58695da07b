"""Figures of a sweep: each metric against each axis, and the energy-latency Pareto front."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dcsim.replications import point_intervals
from dcsim.report.figures_run import COLORS


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The metrics worth a chart: facility energy, and per service p99 TTFT and TPOT and
    SLO attainment, or per job goodput."""
    cols = [c for c in ("facility_kwh",) if c in table]
    for suffix in ("/ttft_p99_s", "/tpot_p99_s", "/slo_attainment", "/goodput"):
        cols += [c for c in table.columns if c.endswith(suffix)]
    return cols


def per_point(table: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """One row per point (finished runs): every metric's mean over seeds and the 95 %
    t-interval of that mean (``<metric>_mean``, ``_low``, ``_high``; no interval from
    one seed), as sweep_points.parquet holds them."""
    return point_intervals(table, axes)


def metric_vs_axis(table: pd.DataFrame, axes: list[str], axis: str) -> go.Figure:
    """Each metric against one axis (mean over seeds, bars: its 95 % t-interval), one
    line per combination of the other axes."""
    pts = per_point(table, axes)
    metrics = metric_columns(table[table["status"] == "finished"])
    others = [a for a in axes if a != axis]
    fig = make_subplots(rows=1, cols=max(len(metrics), 1), subplot_titles=metrics,
                        horizontal_spacing=0.06)
    label = pts[others].map(_label).agg(", ".join, axis=1) if others else pd.Series(
        "all", index=pts.index)
    for i, (name, g) in enumerate(pts.assign(_line=label).groupby("_line", sort=True)):
        # a null value (e.g. the default power limit) makes the axis categorical
        numeric = pd.to_numeric(g[axis], errors="coerce")
        if numeric.isna().any():
            g = g.assign(_x=g[axis].map(_label)).sort_values("_x")
        else:
            g = g.assign(_x=numeric).sort_values("_x")
        x = g["_x"]
        for j, m in enumerate(metrics):
            mean = g[f"{m}_mean"]
            fig.add_trace(go.Scatter(
                x=x, y=mean, mode="lines+markers", name=str(name), legendgroup=str(name),
                showlegend=j == 0, line={"color": COLORS[i % len(COLORS)]},
                error_y={"type": "data", "symmetric": False,
                         "array": (g[f"{m}_high"].astype(float) - mean).fillna(0.0),
                         "arrayminus": (mean - g[f"{m}_low"].astype(float)).fillna(0.0)}),
                row=1, col=j + 1)
    fig.update_xaxes(title_text=axis)
    fig.update_layout(title=f"Metrics against {axis}" + (f" (lines: {', '.join(others)})"
                                                        if others else "")
                      + "; mean over seeds, bars: 95 % interval",
                      width=None, height=420)
    return fig


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points no other point beats on both x and y (lower is better on both)."""
    keep = np.ones(len(x), dtype=bool)
    for i in range(len(x)):
        beaten = (x <= x[i]) & (y <= y[i]) & ((x < x[i]) | (y < y[i]))
        keep[i] = not beaten.any()
    return keep


def pareto(table: pd.DataFrame, axes: list[str]) -> go.Figure | None:
    """Facility energy against the p99 TTFT of the first service; the front highlighted."""
    lat = [c for c in table.columns if c.endswith("/ttft_p99_s")]
    if "facility_kwh" not in table or not lat:
        return None
    pts = per_point(table, axes)
    x, y = pts["facility_kwh_mean"].to_numpy(float), pts[f"{lat[0]}_mean"].to_numpy(float)
    ok = np.isfinite(x) & np.isfinite(y)
    front = pareto_mask(np.where(ok, x, np.inf), np.where(ok, y, np.inf)) & ok
    text = pts[axes].map(_label).agg(lambda r: "<br>".join(
        f"{a} = {v}" for a, v in zip(axes, r, strict=True)), axis=1)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x[~front], y=y[~front], mode="markers", name="dominated",
                             text=text[~front], marker={"color": "lightgrey", "size": 9}))
    order = np.argsort(x[front])
    fig.add_trace(go.Scatter(x=x[front][order], y=y[front][order], mode="lines+markers",
                             name="Pareto front", text=text[front].to_numpy()[order],
                             marker={"color": COLORS[1], "size": 11}))
    fig.update_layout(title="Energy against latency: the Pareto front",
                      xaxis_title="facility energy (kWh, mean over seeds)",
                      yaxis_title=f"{lat[0]} (s, mean over seeds)")
    return fig


def _label(v: object) -> str:
    """An axis value as text; a null (e.g. the default power limit) reads "default"."""
    return "default" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
