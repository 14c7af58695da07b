"""Figures of a simulated run, each from tidy tables of the results folder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative
from plotly.subplots import make_subplots

from dcsim.summary import RunSummary, Totals

COLORS = qualitative.Plotly
MAX_RACKS = 12  # racks drawn in the power chart: those closest to their budgets
CDF_POINTS = 400  # quantiles per latency curve (keeps the page small at any request count)
HEAT_ROWS = 64  # replicas in a heatmap (the busiest)


def translucent(color: str, alpha: float = 0.25) -> str:
    """A '#rrggbb' colour as rgba with that opacity (a band's fill that leaves its mean
    line visible)."""
    r, g, b = hex_to_rgb(color)
    return f"rgba({r},{g},{b},{alpha})"


def power_vs_budgets(power: pd.DataFrame, budgets: pd.DataFrame) -> go.Figure:
    """Left: facility and row IT power over time (kW), budgets dashed. Right: the racks
    closest to their budgets as a share of it (racks of any size on one scale), the
    others as one line of their highest share."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        "facility and rows (kW)", "racks: share of their budget"))
    doms = power[power["domain"].isin(["rack", "row", "facility"])]
    peak = doms.groupby(["domain", "name"])["power_w"].max()
    budget = budgets.set_index(["domain", "name"])["budget_w"]
    keep = [("facility", "facility")] + [("row", n) for n in peak.get("row", pd.Series()).index]
    for i, (dom, name) in enumerate(k for k in keep if k in peak.index):
        d = doms[(doms["domain"] == dom) & (doms["name"] == name)].sort_values("t_start_s")
        color, label = COLORS[i % len(COLORS)], "facility (IT)" if dom == "facility" else \
            f"row {name}"
        fig.add_trace(go.Scatter(x=d["t_start_s"] / 3600, y=d["power_w"] / 1e3, name=label,
                                 mode="lines", line={"color": color, "shape": "hv"}), 1, 1)
        b = budget.get((dom, name), np.nan)
        if pd.notna(b):
            fig.add_trace(go.Scatter(x=[d["t_start_s"].min() / 3600, d["t_end_s"].max() / 3600],
                                     y=[b / 1e3] * 2, name=f"{label} budget", mode="lines",
                                     line={"color": color, "dash": "dash"}), 1, 1)
    _rack_shares(fig, doms[doms["domain"] == "rack"], budget)
    fig.update_xaxes(title_text="time (h)")
    fig.update_yaxes(rangemode="tozero")
    fig.update_yaxes(tickformat=".0%", row=1, col=2)
    fig.update_layout(title="Power against budgets")
    return fig


def _rack_shares(fig: go.Figure, racks: pd.DataFrame, budget: pd.Series) -> None:
    """The MAX_RACKS racks of highest peak share, then the rest as their maximum."""
    if racks.empty:
        return
    b = budget.xs("rack", level="domain") if "rack" in budget.index.get_level_values(
        0) else pd.Series(dtype=float)
    r = racks.assign(share=racks["power_w"] / racks["name"].map(b))
    r = r[r["share"].notna()]
    if r.empty:
        return
    order = r.groupby("name")["share"].max().sort_values(ascending=False).index
    for i, name in enumerate(order[:MAX_RACKS]):
        d = r[r["name"] == name].sort_values("t_start_s")
        fig.add_trace(go.Scatter(x=d["t_start_s"] / 3600, y=d["share"], name=f"rack {name}",
                                 mode="lines", line={"color": COLORS[(i + 2) % len(COLORS)],
                                                     "shape": "hv"}), 1, 2)
    rest = r[r["name"].isin(order[MAX_RACKS:])]
    if len(rest):
        m = rest.groupby("t_start_s")["share"].max().sort_index()
        fig.add_trace(go.Scatter(x=m.index / 3600, y=m.to_numpy(), mode="lines",
                                 name=f"{len(order) - MAX_RACKS} other racks: highest",
                                 line={"color": "grey", "shape": "hv"}), 1, 2)
    t = r["t_start_s"]
    fig.add_trace(go.Scatter(x=[t.min() / 3600, r["t_end_s"].max() / 3600], y=[1.0, 1.0],
                             mode="lines", name="rack budget", line={"color": "black",
                                                                     "dash": "dash"}), 1, 2)


def power_bands(bands: pd.DataFrame) -> go.Figure:
    """IT and facility power over time: mean across replications and its 95 % band."""
    fig = go.Figure()
    t = bands["t_start_s"] / 3600
    for i, (col, label) in enumerate((("facility_w", "facility"), ("it_w", "IT"))):
        color = COLORS[i % len(COLORS)]
        low, high = bands[f"{col}_low"].fillna(bands[f"{col}_mean"]), bands[
            f"{col}_high"].fillna(bands[f"{col}_mean"])
        fig.add_trace(go.Scatter(x=t, y=high / 1e3, mode="lines", line={"width": 0,
                                 "shape": "hv"}, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=t, y=low / 1e3, mode="lines", fill="tonexty",
                                 line={"width": 0, "shape": "hv"},
                                 name=f"{label}: 95 % interval", fillcolor=translucent(color)))
        fig.add_trace(go.Scatter(x=t, y=bands[f"{col}_mean"] / 1e3, mode="lines",
                                 name=f"{label}: mean", line={"color": color, "shape": "hv"}))
    fig.update_layout(title="Power across replications (mean and 95 % interval)",
                      xaxis_title="time (h)", yaxis_title="power (kW)")
    return fig


def energy_breakdown(total: Totals, by_workload: pd.DataFrame) -> go.Figure:
    """Facility energy by component, and energy by service or job (kWh)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "facility energy by component", "energy by service or job"))
    parts = [("GPUs", "gpu_energy_kwh"), ("hosts and PSUs", "host_and_psu_energy_kwh"),
             ("network", "network_energy_kwh"), ("cooling", "cooling_kwh"),
             ("power losses", "losses_kwh")]
    for i, (label, key) in enumerate(parts):
        fig.add_trace(go.Bar(x=["facility"], y=[float(getattr(total, key) or 0.0)], name=label,
                             marker_color=COLORS[i]), row=1, col=1)
    if len(by_workload):
        fig.add_trace(go.Bar(x=by_workload["workload"], y=by_workload["energy_kwh"],
                             name="GPU energy", marker_color=COLORS[5], showlegend=True),
                      row=1, col=2)
    fig.update_layout(barmode="stack", title="Where the energy goes")
    fig.update_yaxes(title_text="kWh")
    return fig


def workload_energy(summary: RunSummary) -> pd.DataFrame:
    """GPU energy per service and per training job, kWh (tidy)."""
    rows = [{"workload": name, "kind": "service", "energy_kwh": float(s.energy_kwh)}
            for name, s in summary.services.items()]
    rows += [{"workload": j.job, "kind": "job", "energy_kwh": float(j.energy_j) / 3.6e6}
             for j in summary.jobs]
    return pd.DataFrame(rows, columns=["workload", "kind", "energy_kwh"])


LATENCY_COLS = (("ttft", "TTFT (s)"), ("tpot", "TPOT (s)"), ("e2e", "end to end (s)"))


def latency_cdfs(requests: pd.DataFrame, slos: dict[str, dict[str, float]],
                 bands: pd.DataFrame | None = None) -> go.Figure:
    """Per service, the distribution of TTFT, TPOT and E2E latency, the p99 bound marked;
    with `bands` (replications_latency), each curve is the mean quantile across
    replications with its 95 % interval shaded."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=[c[1] for c in LATENCY_COLS])
    curves = _band_curves(bands) if bands is not None and len(bands) else _curves(requests)
    for i, svc in enumerate(sorted({svc for svc, _ in curves})):
        color = COLORS[i % len(COLORS)]
        for j, (key, _) in enumerate(LATENCY_COLS):
            if (svc, key) not in curves:
                continue
            q, mean, low, high = curves[(svc, key)]
            if low is not None:
                fig.add_trace(go.Scatter(
                    x=np.concatenate([high, low[::-1]]), y=np.concatenate([q, q[::-1]]),
                    fill="toself", fillcolor=translucent(color), line={"width": 0},
                    name=f"{svc}: 95 % interval", legendgroup=str(svc), showlegend=j == 0,
                    hoverinfo="skip"), row=1, col=j + 1)
            fig.add_trace(go.Scatter(x=mean, y=q, mode="lines", name=str(svc),
                                     legendgroup=str(svc), showlegend=j == 0,
                                     line={"color": color}), row=1, col=j + 1)
            bound = slos.get(str(svc), {}).get(key)
            if bound is not None:
                fig.add_trace(go.Scatter(x=[bound, bound], y=[0, 1], mode="lines",
                                         name=f"{svc} p99 bound", legendgroup=str(svc),
                                         showlegend=False, line={"color": color, "dash": "dot"}),
                              row=1, col=j + 1)
    fig.add_hline(y=0.99, line_dash="dot", line_color="grey")
    # latencies span decades (ms TPOT, s E2E; a tail 100x the median): log axes keep
    # the body and the tail readable in one view
    fig.update_xaxes(type="log")
    across = ", mean across replications and 95 % band" if bands is not None and len(
        bands) else ""
    fig.update_layout(title=f"Latency distributions (log scale{across}; dotted: p99 bound "
                            "and the 99th percentile)")
    fig.update_yaxes(title_text="share of requests", row=1, col=1)
    return fig


Curve = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]


def _curves(requests: pd.DataFrame) -> dict[tuple[str, str], Curve]:
    """(service, latency) -> quantile levels and values of one run's finished requests."""
    done = requests[(requests["status"] == "finished") & ~requests.get(
        "in_warmup", pd.Series(False, index=requests.index))]
    q = np.linspace(0, 1, CDF_POINTS)
    out: dict[tuple[str, str], Curve] = {}
    for svc, g in done.groupby("service", sort=True):
        for key, _ in LATENCY_COLS:
            v = g[f"{key}_s"].dropna().to_numpy()
            if v.size:
                out[(str(svc), key)] = (q, np.quantile(v, q), None, None)
    return out


def _band_curves(bands: pd.DataFrame) -> dict[tuple[str, str], Curve]:
    """(service, latency) -> quantile levels, mean value and interval across replications
    (a missing interval, from identical replications, is the mean)."""
    out: dict[tuple[str, str], Curve] = {}
    for (svc, key), g in bands.sort_values("q").groupby(["service", "metric"], sort=True):
        mean = g["value_s_mean"].to_numpy(float)
        out[(str(svc), str(key))] = (
            g["q"].to_numpy(float), mean, g["value_s_low"].fillna(g["value_s_mean"]).to_numpy(
                float), g["value_s_high"].fillna(g["value_s_mean"]).to_numpy(float))
    return out


def busy_bands(bands: pd.DataFrame) -> go.Figure:
    """Per service over time, its replicas' mean busy share and KV-cache use: mean across
    replications with the 95 % interval shaded."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("GPU busy share", "KV-cache use"),
                        horizontal_spacing=0.12)
    for i, (svc, g) in enumerate(bands.sort_values("t_start_s").groupby("service", sort=True)):
        color, t = COLORS[i % len(COLORS)], g["t_start_s"] / 3600
        for j, col in enumerate(("busy_fraction", "kv_use")):
            mean = g[f"{col}_mean"]
            fig.add_trace(go.Scatter(x=t, y=g[f"{col}_high"].fillna(mean), mode="lines",
                                     line={"width": 0, "shape": "hv"}, showlegend=False,
                                     legendgroup=str(svc), hoverinfo="skip"), row=1, col=j + 1)
            fig.add_trace(go.Scatter(x=t, y=g[f"{col}_low"].fillna(mean), mode="lines",
                                     fill="tonexty", fillcolor=translucent(color),
                                     line={"width": 0, "shape": "hv"}, legendgroup=str(svc),
                                     name=f"{svc}: 95 % interval", showlegend=j == 0),
                          row=1, col=j + 1)
            fig.add_trace(go.Scatter(x=t, y=mean, mode="lines", name=str(svc),
                                     legendgroup=str(svc), showlegend=j == 0,
                                     line={"color": color, "shape": "hv"}), row=1, col=j + 1)
    fig.update_xaxes(title_text="time (h)")
    fig.update_yaxes(range=[0, 1.02])
    fig.update_layout(title="Utilisation per service across replications (mean of its "
                            "replicas; line: mean across replications, band: 95 % interval)")
    return fig


def heatmaps(ts: pd.DataFrame) -> go.Figure:
    """GPU busy share and KV-cache use per replica over time."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("GPU busy share", "KV-cache use"),
                        horizontal_spacing=0.12)
    busiest = ts.groupby("replica")["busy_fraction"].mean().sort_values(
        ascending=False).index[:HEAT_ROWS]
    ts = ts[ts["replica"].isin(busiest)]
    for j, col in enumerate(("busy_fraction", "kv_use")):
        grid = ts.pivot_table(index="replica", columns="t_start_s", values=col)
        labels = [f"{r} ({s})" for r, s in ts.groupby("replica")["service"].first()
                  .reindex(grid.index).items()]
        fig.add_trace(go.Heatmap(z=grid.to_numpy(), x=grid.columns / 3600, y=labels, zmin=0,
                                 zmax=1, colorscale="Viridis", showscale=j == 1),
                      row=1, col=j + 1)
    fig.update_xaxes(title_text="time (h)")
    fig.update_layout(title="Replica utilisation")
    return fig


def training_timeline(jobs: pd.DataFrame, failures: pd.DataFrame,
                      checkpoints: pd.DataFrame, end_s: float) -> go.Figure:
    """Each job from start to end (or the end of the run), its checkpoints and failures."""
    fig = go.Figure()
    for i, j in enumerate(jobs.itertuples()):
        start = float(j.start_s) if pd.notna(j.start_s) else np.nan
        stop = float(j.end_s) if pd.notna(j.end_s) else end_s
        if np.isnan(start):
            continue
        fig.add_trace(go.Bar(y=[j.job], x=[(stop - start) / 3600], base=[start / 3600],
                             orientation="h", name=str(j.job), marker_color=COLORS[i % 10],
                             showlegend=False, hovertext=f"goodput {j.goodput:.2f}"))
    if len(checkpoints):
        fig.add_trace(go.Scatter(x=checkpoints["end_s"] / 3600, y=checkpoints["job"],
                                 mode="markers", name="checkpoint",
                                 marker={"symbol": "line-ns-open", "size": 10, "color": "black"}))
    if len(failures):
        fig.add_trace(go.Scatter(x=failures["time_s"] / 3600, y=failures["job"], mode="markers",
                                 name="failure", marker={"symbol": "x", "size": 11,
                                                         "color": "red"}))
    fig.update_layout(title="Training jobs", xaxis_title="time (h)", barmode="overlay")
    return fig


def cluster_use(cluster: pd.DataFrame) -> go.Figure:
    """GPU allocation and queue length of scheduled jobs or replayed clusters over time."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for i, (w, g) in enumerate(cluster.groupby("workload", sort=True)):
        t = g["t_start_s"] / 3600
        fig.add_trace(go.Scatter(x=t, y=g["gpu_allocation"], name=f"{w}: GPUs allocated",
                                 line={"color": COLORS[i % 10]}), secondary_y=False)
        fig.add_trace(go.Scatter(x=t, y=g["queue_length"], name=f"{w}: jobs waiting",
                                 line={"color": COLORS[i % 10], "dash": "dot"}), secondary_y=True)
    fig.update_layout(title="Cluster allocation", xaxis_title="time (h)")
    fig.update_yaxes(title_text="share of GPUs allocated", range=[0, 1.05], tickformat=".0%",
                     secondary_y=False)
    fig.update_yaxes(rangemode="tozero", secondary_y=True)
    fig.update_yaxes(title_text="jobs waiting", secondary_y=True)
    return fig
