"""Closed loop over the whole horizon: a plan (or baseline) as one continuous run.

Per period and service: requests, finished share, p99s and SLO attainment of the
requests that arrived in the period, facility energy in it; per plan: the day's
attainment, facility, IT and GPU energy, GPU-hours in use, cold starts and the energy
they drew.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dcsim.engine.context import Context
from dcsim.engine.simulation import simulate
from dcsim.results import in_use_gpu_hours
from dcsim.scenario import Scenario
from dcsim.slo import slo_attainment
from dcsim.workloads.spec import InferenceService


def verify_continuous(sc: Scenario, services: list[InferenceService], n: int,
                      period_s: float, ctx: Context, label: str
                      ) -> tuple[pd.DataFrame, dict[str, object]]:
    """Run plan scenario `sc` (dcsim.optimize.plan_scenario) and score it per period."""
    r = simulate(sc, context=ctx)
    fac = r.power[r.power["domain"] == "facility"]
    fac_j = (fac["power_w"] + fac["cooling_w"] + fac["losses_w"]) * (
        fac["t_end_s"] - fac["t_start_s"])
    period_of = np.minimum((fac["t_start_s"] // period_s).astype(int), n - 1)
    kwh = fac_j.groupby(period_of).sum().reindex(range(n), fill_value=0.0) / 3.6e6
    req = r.requests
    req = req.assign(period=np.minimum((req["arrival_s"] // period_s).astype(int), n - 1))
    rows = []
    for t in range(n):
        for svc in services:
            mine = req[(req["period"] == t)
                       & req["service"].astype(str).str.startswith(f"{svc.name}@")]
            done = mine[mine["status"] == "finished"]
            rows.append({"plan": label, "period": t, "service": svc.name,
                         "requests": len(mine),
                         "finished_share": len(done) / max(len(mine), 1),
                         "ttft_p99_s": _q(done["ttft_s"]), "tpot_p99_s": _q(done["tpot_s"]),
                         "slo_attainment": slo_attainment(mine, svc.slo, period_s)
                         if len(mine) else float("nan"),
                         "period_facility_kwh": float(kwh[t])})  # the whole site's
    rep = r.replicas
    scaling = r.scaling
    starts = int((scaling["event"] == "ready").sum()) if len(scaling) else 0
    gpu = r.power[r.power["domain"] == "gpu"]
    day = {"plan": label, "facility_kwh": float(kwh.sum()),
           "it_kwh": float((fac["power_w"] * (fac["t_end_s"] - fac["t_start_s"])).sum()
                           / 3.6e6),
           "gpu_kwh": float((gpu["power_w"] * (gpu["t_end_s"] - gpu["t_start_s"])).sum()
                            / 3.6e6),
           "slo_attainment": {svc.name: slo_attainment(
               req[req["service"].astype(str).str.startswith(f"{svc.name}@")], svc.slo,
               n * period_s) for svc in services},
           "gpu_hours_in_use": in_use_gpu_hours(rep),
           "cold_starts": starts,
           "cold_start_kwh": float(rep["cold_start_energy_j"].sum() / 3.6e6),
           "server_switches": int(scaling["event"].isin(["server_on", "server_off"]).sum())
           if len(scaling) else 0}
    return pd.DataFrame(rows), day


def _q(v: pd.Series) -> float:
    v = v.dropna()
    return float(np.quantile(v, 0.99)) if len(v) else float("nan")
