"""Report section on disaggregated serving: each pool's replicas, busy share, energy and
power, the KV moves between them, and the ports and uplinks that carried them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dcsim.report.figures_run import COLORS
from dcsim.summary import RunSummary


def pool_table(s: RunSummary) -> pd.DataFrame:
    """One row per pool of each disaggregated service (the summary's `pools`)."""
    rows = []
    for name, v in s.services.items():
        for pool, p in (v.pools or {}).items():
            if pool == "kv_transfer":
                continue
            kv = (v.pools or {}).get("kv_transfer", {})
            rows.append({"service": name, "pool": pool, "replicas": int(p["replicas"]),
                         "GPUs": int(p["gpus"]), "busy": f"{p['busy_fraction']:.0%}",
                         "GPU energy (kWh)": round(p["energy_kwh"], 3),
                         "mean GPU power (kW)": round(p["mean_power_w"] / 1e3, 3),
                         "KV moved (GB)": round(kv.get("kv_gb", 0.0), 1)
                         if pool == "prefill" else None})
    return pd.DataFrame(rows)


def port_use(links: pd.DataFrame) -> pd.DataFrame:
    """Mean utilisation per time bucket of the KV ports by pool side and medium
    (prefill NVLink / NIC, decode NVLink / NIC) and of the leaf uplinks."""
    ports = links[links["link"].str.contains("/replica-") | links["link"].str.endswith(
        "/uplink")].copy()
    kind = ports["link"].str.extract(r"/(nvlink|nic)-(out|in)$")
    side = kind[1].map({"out": "prefill", "in": "decode"})
    ports["group"] = np.where(kind[0].notna(), side + " " + kind[0].str.replace(
        "nic", "NIC").str.replace("nvlink", "NVLink"), "leaf uplinks")
    return ports.groupby(["group", "t_start_s"], as_index=False)["utilization"].mean()


def kv_figure(requests: pd.DataFrame, links: pd.DataFrame) -> go.Figure:
    """Left: the distribution of KV transfer times and of waits for a decode replica's
    room; right: the ports' and uplinks' mean utilisation over time."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        "KV transfer and decode-wait times", "mean utilisation of KV ports and uplinks"))
    moved = requests[requests["kv_transfer_s"].notna()] if "kv_transfer_s" in requests else (
        requests.iloc[:0])
    for i, (col, label) in enumerate((("kv_transfer_s", "transfer"), ("kv_wait_s", "wait"))):
        x = np.sort(moved[col].to_numpy())
        if len(x):
            fig.add_trace(go.Scatter(x=np.maximum(x, 1e-6), y=np.arange(1, len(x) + 1) / len(x),
                                     mode="lines", name=label,
                                     line={"color": COLORS[i]}), row=1, col=1)
    use = port_use(links)
    for i, (group, g) in enumerate(use.groupby("group", sort=True)):
        fig.add_trace(go.Scatter(x=g["t_start_s"], y=g["utilization"], mode="lines",
                                 name=str(group), line={"color": COLORS[(i + 2) % len(COLORS)]}),
                      row=1, col=2)
    fig.update_xaxes(type="log", title_text="seconds", row=1, col=1)
    fig.update_yaxes(title_text="share of requests moved", row=1, col=1)
    fig.update_xaxes(title_text="time (s)", row=1, col=2)
    fig.update_yaxes(title_text="utilisation", tickformat=".0%", row=1, col=2)
    fig.update_layout(title="KV cache moves between the prefill and decode pools")
    return fig
