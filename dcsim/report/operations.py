"""Report figures of operations over time: per service the replicas serving, their GPU
limit and the requests waiting, with each cold start and drain marked and the spans a
power-capping controller capped shaded; and the optimizer's plan run as one horizon
against its baselines (energy saved, the worst period's latency)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dcsim.report.figures_run import COLORS

STARTING = ("boot", "load", "warmup", "ready", "cancel")  # a replica that began off


def serving_steps(scaling: pd.DataFrame, replicas: pd.DataFrame) -> pd.DataFrame:
    """Replicas open for work per service after each change (t_s, service, serving):
    those serving at 0 s (their first action is not a cold start) plus readies and
    undrains, minus drains."""
    rows = []
    acts = scaling[scaling["replica"] >= 0]
    first = acts.groupby("replica")["event"].first()
    for svc, reps in replicas.groupby("service", sort=True, observed=True):
        ids = reps["replica"].tolist()
        n0 = sum(1 for r in ids if first.get(r, "drain") not in STARTING)
        mine = acts[acts["replica"].isin(ids)]
        step = mine["event"].map({"ready": 1, "undrain": 1, "drain": -1}).fillna(0)
        t = np.concatenate([[0.0], mine["t_s"].to_numpy()])
        n = n0 + np.concatenate([[0], np.cumsum(step.to_numpy())])
        rows.append(pd.DataFrame({"t_s": t, "service": str(svc), "serving": n}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        {"t_s": [], "service": [], "serving": []})


def capped_spans(capping: pd.DataFrame, end_s: float) -> pd.DataFrame:
    """Per domain, each span from a cap or brake to its release (or the run's end)."""
    spans = []
    for (kind, name), g in capping.groupby(["kind", "domain"], sort=True):
        start = None
        for ev in g.itertuples():
            if ev.event in ("cap", "brake") and start is None:
                start = ev.t_s
            elif ev.event == "release" and start is not None:
                spans.append((f"{kind} {name}", start, ev.t_s))
                start = None
        if start is not None:
            spans.append((f"{kind} {name}", start, end_s))
    return pd.DataFrame(spans, columns=["domain", "start_s", "end_s"])


def timeline(scaling: pd.DataFrame, capping: pd.DataFrame, timeseries: pd.DataFrame,
             replicas: pd.DataFrame, end_s: float) -> go.Figure:
    """Three rows over time: replicas serving (cold starts ▲ at ready, drains ▼), GPU
    limit changes, requests waiting; capped spans shaded across all rows."""
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=("replicas serving", "GPU power limit (W)",
                                        "requests waiting"))
    counts = replicas.groupby(replicas["service"].astype(str)).size()
    steps = serving_steps(scaling, replicas) if len(scaling) else pd.DataFrame(
        {"t_s": 0.0, "service": counts.index, "serving": counts.to_numpy()})
    for i, svc in enumerate(sorted(replicas["service"].astype(str).unique())):
        c = COLORS[i % 10]
        s = steps[steps["service"] == svc]
        fig.add_trace(go.Scatter(x=np.append(s["t_s"], end_s) / 3600, mode="lines",
                                 y=np.append(s["serving"], s["serving"].iloc[-1]),
                                 line={"shape": "hv", "color": c}, name=svc,
                                 legendgroup=svc), row=1, col=1)
        if len(scaling):
            _marks(fig, scaling, replicas, svc, s, c)
        if "limit_w" in replicas:  # (folders of older versions lack it)
            t, w = limit_steps(scaling, capping, replicas, svc, end_s)
            fig.add_trace(go.Scatter(x=np.append(t, end_s) / 3600, y=np.append(w, w[-1]),
                                     mode="lines", line={"shape": "hv", "color": c},
                                     name=f"{svc}: limit", legendgroup=svc,
                                     showlegend=False), row=2, col=1)
        q = timeseries[timeseries["service"].astype(str) == svc].groupby("t_start_s")[
            "queue_length"].sum()
        fig.add_trace(go.Scatter(x=q.index / 3600, y=q.to_numpy(), line={"color": c},
                                 name=svc, legendgroup=svc, showlegend=False), row=3, col=1)
    for sp in capped_spans(capping, end_s).itertuples() if len(capping) else ():
        fig.add_vrect(x0=sp.start_s / 3600, x1=sp.end_s / 3600, fillcolor="red",
                      opacity=0.12, line_width=0, row="all", col=1)
    fig.update_xaxes(title_text="time (h)", row=3, col=1)
    fig.update_layout(title="Operations over time" + (" (shaded: capped by the power-"
                                                       "capping controller)" if len(capping)
                                                       else ""), height=640)
    return fig


def _marks(fig: go.Figure, scaling: pd.DataFrame, replicas: pd.DataFrame, svc: str,
           steps: pd.DataFrame, color: str) -> None:
    ids = replicas.loc[replicas["service"].astype(str) == svc, "replica"]
    mine = scaling[scaling["replica"].isin(ids)]
    for ev, symbol, label in (("ready", "triangle-up", "ready after a cold start"),
                              ("drain", "triangle-down", "drain begins")):
        t = mine.loc[mine["event"] == ev, "t_s"].to_numpy()
        if not len(t):
            continue
        k = np.searchsorted(steps["t_s"].to_numpy(), t, side="right") - 1
        fig.add_trace(go.Scatter(x=t / 3600, y=steps["serving"].to_numpy()[k], mode="markers",
                                 marker={"symbol": symbol, "size": 9, "color": color},
                                 name=f"{svc}: {label}", legendgroup=svc), row=1, col=1)


def limit_steps(scaling: pd.DataFrame, capping: pd.DataFrame, replicas: pd.DataFrame,
                svc: str, end_s: float) -> tuple[np.ndarray, np.ndarray]:
    """The GPU limit of the service's first replica over time, W (t_s, limit_w as steps):
    its schedule's limit changes, or under the capping controller the lowest capped
    limit (capping.parquet's limit_w) of its rack, row, the facility and the site's
    supply while they are capped."""
    first = replicas[replicas["service"].astype(str) == svc].iloc[0]
    if "capped_limit_w" in replicas and pd.notna(first.get("capped_limit_w")):
        mine = capping[((capping["kind"] == "rack") & (capping["domain"] == first["rack"]))
                       | ((capping["kind"] == "row") & (capping["domain"] == first["row"]))
                       | capping["kind"].isin(["facility", "supply"])] if len(capping) \
            else capping
        t, w = [0.0], [float(first["limit_w"])]
        capped: dict[tuple[str, str], float] = {}
        for ev in mine.sort_values("t_s", kind="stable").itertuples():
            key = (ev.kind, ev.domain)
            if ev.event in ("cap", "brake"):
                capped[key] = ev.limit_w
            elif ev.event == "release":
                capped.pop(key, None)
            elif key in capped:  # a new hour's budget
                capped[key] = ev.limit_w
            t.append(float(ev.t_s))
            w.append(min([float(first["limit_w"]), *capped.values()]))
        return np.array(t), np.array(w)
    lim = scaling[(scaling["replica"] == first["replica"]) & (scaling["event"] == "limit")]
    t = np.concatenate([[0.0], lim["t_s"].to_numpy()])
    w = np.concatenate([[first["limit_w"]],
                        lim["value"].fillna(first["default_limit_w"]).to_numpy()])
    return t, w.astype(float)


def continuous_rows(day: list[dict], periods: pd.DataFrame) -> pd.DataFrame:
    """Per plan run as one horizon: facility energy, saving against the peak baseline,
    the lowest SLO attainment, GPU-hours in use, cold starts, and the worst period (the
    highest p99 TTFT of any service) with its p99s."""
    peak = next((r["facility_kwh"] for r in day if r["plan"] == "peak"), None)
    rows = []
    for r in day:
        mine = periods[periods["plan"] == r["plan"]]
        worst = mine.loc[mine["ttft_p99_s"].idxmax()] if mine["ttft_p99_s"].notna().any() \
            else None
        rows.append({
            "plan": r["plan"], "facility kWh": round(r["facility_kwh"], 1),
            "saved vs peak": "-" if not peak else f"{1 - r['facility_kwh'] / peak:.1%}",
            "lowest SLO attainment": f"{min(r['slo_attainment'].values()):.1%}",
            "GPU-hours in use": round(r["gpu_hours_in_use"], 1),
            "cold starts": r["cold_starts"],
            "worst period": "-" if worst is None else int(worst["period"]),
            "its p99 TTFT (s)": "-" if worst is None else round(float(worst["ttft_p99_s"]), 3),
            "its p99 TPOT (s)": "-" if worst is None else round(float(worst["tpot_p99_s"]), 4)})
    return pd.DataFrame(rows)


def continuous_periods(periods: pd.DataFrame) -> go.Figure:
    """Facility energy and the highest p99 TTFT per period, plan against baselines."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("facility energy per period (kWh)",
                                                        "highest p99 TTFT of a service (s)"))
    for i, (plan, g) in enumerate(periods.groupby("plan", sort=False)):
        per = g.groupby("period").agg(kwh=("period_facility_kwh", "first"),
                                      ttft=("ttft_p99_s", "max"))
        for col, y in ((1, per["kwh"]), (2, per["ttft"])):
            fig.add_trace(go.Scatter(x=per.index, y=y, name=str(plan), legendgroup=str(plan),
                                     showlegend=col == 1, line={"color": COLORS[i % 10]}),
                          row=1, col=col)
    fig.update_xaxes(title_text="period")
    fig.update_layout(title="The plan and its baselines run as one horizon each")
    return fig
