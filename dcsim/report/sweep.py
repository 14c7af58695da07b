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


METRIC_NAMES = {"facility_kwh": "facility energy (kWh)", "ttft_p99_s": "TTFT p99 (s)",
                "tpot_p99_s": "TPOT p99 (s)", "slo_attainment": "SLO attainment",
                "goodput": "goodput"}
LOAD_AXES = ("rate_per_s", "rate_scale", "arrival_time_scale", "demand_per_s")


def metric_title(m: str) -> str:
    """A sweep metric column as a reader's title: ``chat/ttft_p99_s`` -> ``chat: TTFT
    p99 (s)``."""
    who, _, what = m.rpartition("/")
    name = METRIC_NAMES.get(what, what)
    return f"{who}: {name}" if who else name


def metric_vs_axis(table: pd.DataFrame, axes: list[str], axis: str,
                   titles: dict[str, str] | None = None) -> go.Figure:
    """Each metric against one axis (mean over seeds, bars: its 95 % t-interval), one
    line per combination of the other axes; `titles`: the axes' field descriptions."""
    pts = per_point(table, axes)
    metrics = metric_columns(table[table["status"] == "finished"])
    others = [a for a in axes if a != axis]
    fig = make_subplots(rows=1, cols=max(len(metrics), 1),
                        subplot_titles=[metric_title(m) for m in metrics],
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
    fig.update_xaxes(title_text=(titles or {}).get(axis, axis))
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


def load_axis(table: pd.DataFrame, axes: list[str]) -> str | None:
    """The axis that sets the load (an arrival rate or its scale), if one varies: fronts
    are drawn per level of it, as points of different load are not alternatives."""
    for a in axes:
        if a.rsplit(".", 1)[-1] in LOAD_AXES and table[a].nunique(dropna=False) > 1:
            return a
    return None


def pareto(table: pd.DataFrame, axes: list[str], titles: dict[str, str] | None = None
           ) -> go.Figure | None:
    """Facility energy against the p99 TTFT of the first service; the front highlighted,
    one per load level when an axis sets the load."""
    lat = [c for c in table.columns if c.endswith("/ttft_p99_s")]
    if "facility_kwh" not in table or not lat:
        return None
    pts = per_point(table, axes)
    load = load_axis(pts, axes)
    levels = [(None, pts)] if load is None else list(pts.groupby(load, sort=True, dropna=False))
    fig = go.Figure()
    for i, (level, g) in enumerate(levels):
        x, y = g["facility_kwh_mean"].to_numpy(float), g[f"{lat[0]}_mean"].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        front = pareto_mask(np.where(ok, x, np.inf), np.where(ok, y, np.inf)) & ok
        text = g[axes].map(_label).agg(lambda r: "<br>".join(
            f"{a} = {v}" for a, v in zip(axes, r, strict=True)), axis=1)
        tag = "" if load is None else f" at {_label(level)}"
        color = COLORS[(i + 1) % len(COLORS)]
        fig.add_trace(go.Scatter(x=x[~front], y=y[~front], mode="markers",
                                 name=f"dominated{tag}", text=text[~front],
                                 marker={"color": color, "size": 8, "opacity": 0.35}))
        order = np.argsort(x[front])
        fig.add_trace(go.Scatter(x=x[front][order], y=y[front][order], mode="lines+markers",
                                 name=f"Pareto front{tag}", text=text[front].to_numpy()[order],
                                 marker={"color": color, "size": 11}))
    per = "" if load is None else (f"; one front per load level "
                                   f"({(titles or {}).get(load, load)})")
    fig.update_layout(title=f"Energy against latency: the Pareto front{per}",
                      xaxis_title="facility energy (kWh, mean over seeds)",
                      yaxis_title=f"{metric_title(lat[0])}, mean over seeds")
    return fig


def _label(v: object) -> str:
    """An axis value as text; a null (e.g. the default power limit) reads "default"."""
    return "default" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
