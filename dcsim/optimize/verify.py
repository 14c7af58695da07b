"""Closed loop: every period of a plan (or a baseline) as a scenario, run in the simulator.

A period's scenario has one inference service per (service, configuration) in use,
named `service@configuration`, with Poisson arrivals at the load the plan gives it
(a load balancer splitting the service's traffic by weight), the service's length
distributions (its trace's lengths when it replays a trace), its SLO, and the
replicas on the servers the plan chose. The facility clock starts at the period.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from dcsim.engine.context import Context
from dcsim.engine.simulation import simulate
from dcsim.hardware.facility import facility_power_w
from dcsim.optimize.capacity import Config, deployment_for
from dcsim.optimize.model import Inputs, period_it_w
from dcsim.scenario import Scenario
from dcsim.slo import meets_p99, slo_attainment
from dcsim.workloads.spec import (
    Disaggregated,
    EmpiricalLength,
    InferenceService,
    PoissonArrivals,
    TraceArrivals,
    TrainingJob,
)


def replica_service(svc: InferenceService, row: pd.Series, use_servers: bool) -> InferenceService:
    """The service of one plan row as a scenario workload: its configuration and replicas,
    Poisson arrivals at the row's load."""
    cfg = Config(row["gpu"], int(row["tp"]), None if pd.isna(row["power_cap_w"]) else float(
        row["power_cap_w"]), int(row["max_num_seqs"]))
    dep = deployment_for(svc, cfg, int(row["replicas"]))
    if use_servers:
        dep = dep.model_copy(update={"servers": list(row["servers"])})
    update: dict[str, object] = {
        "name": f"{svc.name}@{row['config']}", "deployment": dep,
        "arrival": PoissonArrivals(rate_per_s=max(float(row["load_rps"]), 1e-6))}
    a = svc.arrival
    if isinstance(a, TraceArrivals) and a.use_token_lengths:
        update["prompt_tokens"] = EmpiricalLength(trace=a.path)
        update["output_tokens"] = EmpiricalLength(trace=a.path)
    return InferenceService.model_validate(svc.model_copy(update=update).model_dump())


def pools_service(svc: InferenceService, prefill: pd.Series, decode: pd.Series,
                  use_servers: bool) -> InferenceService:
    """The service of a plan's prefill row and decode row (one pool each) as one
    disaggregated workload at the prefill row's load, named service@pools."""
    one = replica_service(svc, prefill, use_servers)
    pools = {role: replica_service(svc, row, use_servers).deployment
             for role, row in (("prefill", prefill), ("decode", decode))}
    pools["decode"] = pools["decode"].model_copy(update={"prefix_caching": False})
    return InferenceService.model_validate(one.model_copy(update={
        "name": f"{svc.name}@pools", "deployment": Disaggregated(**pools)}).model_dump())


def period_workloads(services: list[InferenceService], rows: pd.DataFrame,
                     use_servers: bool) -> list[InferenceService]:
    """One workload per colocated row, one per service for its two pools' rows."""
    role = rows["role"] if "role" in rows else pd.Series("", index=rows.index)
    out = [replica_service(services[int(r["service_index"])], r, use_servers)
           for _, r in rows[role == ""].iterrows()]
    for s_, g in rows[role != ""].groupby("service_index", sort=True):
        pre, dec = (g[role[g.index] == p] for p in ("prefill", "decode"))
        if len(pre) and len(dec):  # (a pool alone carries nothing: balance)
            out.append(pools_service(services[int(s_)], pre.iloc[0], dec.iloc[0],
                                     use_servers))
    return out


def period_scenario(s: Scenario, services: list[InferenceService], dep: pd.DataFrame, t: int,
                    period_s: float, duration_s: float) -> Scenario:
    """The scenario that runs period t of a plan (or baseline) for duration_s."""
    mine = dep[dep["period"] == t]
    workloads = period_workloads(services, mine, "servers" in mine.columns)
    f = s.facility.model_copy(update={"start_time": s.facility.start_time + timedelta(
        seconds=t * period_s)})
    sim = s.simulation.model_copy(update={"duration_s": duration_s,
                                          "warmup_s": min(s.simulation.warmup_s,
                                                          duration_s / 5)})
    data = s.model_copy(update={"name": f"{s.name}-period-{t:02d}", "facility": f,
                                "workloads": workloads, "simulation": sim, "optimize": None})
    return Scenario.model_validate(data.model_dump())


def verify(s: Scenario, services: list[InferenceService], dep: pd.DataFrame, x: Inputs,
           duration_s: float, ctx: Context, label: str
           ) -> pd.DataFrame:
    """Per period and service: simulated p99s, SLO attainment, and facility energy."""
    rows = []
    for t in sorted(dep["period"].unique()):
        sc = period_scenario(s, services, dep, int(t), x.period_s, duration_s)
        r = simulate(sc, context=ctx)
        fac = r.power[r.power["domain"] == "facility"]
        sim_w = float((fac["power_w"] + fac["cooling_w"] + fac["losses_w"]).mul(
            fac["t_end_s"] - fac["t_start_s"]).sum() / duration_s)
        req = r.requests[~r.requests["in_warmup"]]
        for svc in services:
            names = [w.name for w in sc.workloads if w.name.startswith(f"{svc.name}@")]
            mine = req[req["service"].isin(names)]
            done = mine[mine["status"] == "finished"]
            rows.append({
                "plan": label, "period": int(t), "service": svc.name,
                "requests": len(mine), "finished_share": len(done) / max(len(mine), 1),
                "ttft_p99_s": _q(done["ttft_s"]), "tpot_p99_s": _q(done["tpot_s"]),
                "e2e_p99_s": _q(done["e2e_s"]),
                "slo_attainment": slo_attainment(mine, svc.slo, duration_s),
                "meets_slo": meets_p99(mine, svc.slo, duration_s),
                "simulated_facility_w": sim_w,
                "predicted_facility_w": float(facility_power_w(
                    period_it_w(dep, x, int(t)), x.overhead, int(t)))})
    return pd.DataFrame(rows)


def _q(v: pd.Series) -> float:
    v = v.dropna()
    return float(np.quantile(v, 0.99)) if len(v) else float("nan")


def verify_jobs(s: Scenario, chosen: pd.DataFrame, ctx: Context) -> pd.DataFrame:
    """Run the plan's training jobs alone on the fleet, at their limits and on their racks,
    until well past their deadlines; compare run time and GPU energy with the plan."""
    jobs = {w.name: w for w in s.workloads if isinstance(w, TrainingJob)}
    workloads = [jobs[str(r["job"])].model_copy(update={
        "power_cap_w": None if pd.isna(r["power_cap_w"]) else float(r["power_cap_w"]),
        "racks": list(r["racks"]) or None, "start_s": float(r["start_s"])})
        for _, r in chosen.iterrows()]
    ends = [max(float(r["end_s"]), float(r["deadline_s"]) if pd.notna(r["deadline_s"]) else 0.0)
            for _, r in chosen.iterrows()]
    horizon = 1.5 * max(ends) + 3600.0
    sim = s.simulation.model_copy(update={
        "duration_s": horizon, "warmup_s": 0.0,
        "time_bucket_s": max(s.simulation.time_bucket_s, horizon / 2000)})
    sc = Scenario.model_validate(s.model_copy(update={
        "name": f"{s.name}-training", "workloads": workloads, "simulation": sim,
        "optimize": None}).model_dump())
    got = simulate(sc, context=ctx).jobs.set_index("job")
    rows = []
    for _, r in chosen.iterrows():
        g = got.loc[str(r["job"])]
        end = float(g["end_s"]) if bool(g["finished"]) else np.inf
        rows.append({"job": r["job"], "power_cap_w": r["power_cap_w"],
                     "racks": ",".join(r["racks"]), "deadline_s": r["deadline_s"],
                     "predicted_end_s": float(r["end_s"]), "simulated_end_s": end,
                     "failures": int(g["restarts"]), "meets_deadline": bool(
                         pd.isna(r["deadline_s"]) or end <= float(r["deadline_s"])),
                     "predicted_gpu_kwh": float(r["gpu_kwh"]),
                     "simulated_gpu_kwh": float(g["energy_j"]) / 3.6e6})
    return pd.DataFrame(rows)
