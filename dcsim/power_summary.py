"""Energy, power and carbon summaries from the power table (pure pandas)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def energy_split(power: pd.DataFrame) -> dict[str, float]:
    """Facility energy (kWh) split into GPU, host + PSU, cooling and losses; effective PUE."""
    dt = power["t_end_s"] - power["t_start_s"]
    kwh = power["power_w"] * dt / 3.6e6
    gpu = float(kwh[power["domain"] == "gpu"].sum())
    network = float(kwh[power["domain"] == "network"].sum())
    fac = power["domain"] == "facility"
    it = float(kwh[fac].sum())
    cooling = float((power.loc[fac, "cooling_w"] * dt[fac]).sum() / 3.6e6)
    losses = float((power.loc[fac, "losses_w"] * dt[fac]).sum() / 3.6e6)
    total = it + cooling + losses
    return {"gpu_energy_kwh": gpu, "host_and_psu_energy_kwh": it - gpu - network,
            "network_energy_kwh": network, "it_energy_kwh": it,
            "cooling_kwh": cooling, "losses_kwh": losses, "facility_kwh": total,
            "effective_pue": total / it if it else None,
            "carbon_kg": float(power.loc[fac, "carbon_g"].sum()) / 1e3,
            "cost_usd": float(power.loc[fac, "cost_usd"].sum())}


def domain_peaks(power: pd.DataFrame, budgets: pd.DataFrame) -> list[dict[str, object]]:
    """Per rack, row and facility: peak and p99 power, headroom, stranded power, and how many
    more servers like its own the budget would hold at their p99 draw (POLCA-style)."""
    out = []
    # one pass over the power table: row positions of every (domain, name)
    at = power.groupby(["domain", "name"], sort=False).indices
    watts = power["power_w"].to_numpy()
    for b in budgets.itertuples():
        p = watts[at[(b.domain, b.name)]]
        peak, p99 = float(p.max()), float(np.quantile(p, 0.99))
        row: dict[str, object] = {"domain": b.domain, "name": b.name, "servers": b.servers,
                                  "peak_w": peak, "p99_w": p99, "budget_w": None,
                                  "gpus": int(b.gpus), "idle_w": float(b.idle_w),
                                  "throttled": bool(b.throttled),
                                  "gpu_limit_w": float(b.gpu_limit_w)}
        if not math.isnan(b.budget_w):
            per_server = p99 / b.servers
            row.update(budget_w=float(b.budget_w), headroom_w=float(b.budget_w) - p99,
                       stranded_w=float(b.budget_w) - peak,
                       worst_case_w=float(b.worst_case_w),
                       extra_servers_at_p99=max(int((b.budget_w - p99) // per_server), 0)
                       if per_server > 0 else None)  # a domain switched off draws nothing
        out.append(row)
    return out


def request_carbon_and_cost(requests: pd.DataFrame, power: pd.DataFrame) -> pd.DataFrame:
    """Each request's share of facility carbon and cost: its GPU energy, scaled up by the
    facility / GPU energy ratio of the bucket it finished in (or arrived, if unfinished)."""
    fac = power[power["domain"] == "facility"].sort_values("t_start_s")
    gpu = power[power["domain"] == "gpu"].groupby("t_start_s")["power_w"].sum()
    dt = (fac["t_end_s"] - fac["t_start_s"]).to_numpy()
    gpu_j = gpu.reindex(fac["t_start_s"]).to_numpy() * dt
    ratio_c = fac["carbon_g"].to_numpy() / np.maximum(gpu_j, 1e-12)
    ratio_usd = fac["cost_usd"].to_numpy() / np.maximum(gpu_j, 1e-12)
    t = requests["finish_s"].fillna(requests["arrival_s"]).to_numpy()
    idx = np.clip(np.searchsorted(fac["t_start_s"].to_numpy(), t, side="right") - 1, 0,
                  len(fac) - 1)
    e = requests["energy_j"].to_numpy()
    return requests.assign(carbon_g=e * ratio_c[idx], cost_usd=e * ratio_usd[idx])
