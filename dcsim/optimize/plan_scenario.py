"""A plan (or a baseline) as one runnable scenario over its whole horizon: plan.yaml.

The configurations of a service that differ only in GPU limit (a family: GPU type,
tp, batch limit) become one service `service@GPU/tpN/bM` with Poisson arrivals at the
plan's load of each period (`steps` arrivals) and a schedule of its replicas and GPU
limit per period: a limit changes in place at the period, as operators set it, and
where a period uses several limits of one family, the highest. A period that needs
more replicas than the one before starts them a cold start's lead earlier (server
boot where servers switch off, weight load at the file system's per-client
bandwidth, engine warm-up), so that they are ready at the period's start; replicas a
period no longer needs drain from its start. Training jobs run at the plan's limits,
racks and starts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dcsim.catalog import Catalog
from dcsim.engine.build import placement, split_workloads
from dcsim.engine.build_scaling import cold_start_lead_s as replica_lead_s
from dcsim.errors import DcsimError
from dcsim.optimize.model import FAMILY
from dcsim.optimize.verify import replica_service
from dcsim.scenario import Scenario
from dcsim.workloads.scaling import ScheduledScaling, ScheduleStep
from dcsim.workloads.spec import InferenceService, StepArrivals, TrainingJob


def cold_start_lead_s(s: Scenario, svc: InferenceService, cat: Catalog) -> float:
    """Seconds from a replica's start to ready (engine.build_scaling.cold_start_lead_s)."""
    d = svc.deployment
    return replica_lead_s(s.fleet, d, cat.gpu(d.gpu), cat.model(svc.model))


def schedule_steps(replicas: list[int], period_s: float, lead_s: float,
                   limits: list[float | None] | None = None) -> list[ScheduleStep]:
    """Steps for replicas (and GPU limits) per period: increases a lead early, decreases
    and limit changes at the period (a limit changes in place, without a cold start)."""
    limits = limits or [None] * len(replicas)
    steps = [ScheduleStep(at_s=0.0, replicas=replicas[0], power_cap_w=limits[0])]
    for t in range(1, len(replicas)):
        n, prev, cap = replicas[t], replicas[t - 1], limits[t]
        if n > prev:  # started a lead early, under the limit still in force
            at = max(t * period_s - lead_s, steps[-1].at_s + 1e-3)  # in order
            steps.append(ScheduleStep(at_s=round(at, 3), replicas=n,
                                      power_cap_w=steps[-1].power_cap_w))
        if n < prev or cap != steps[-1].power_cap_w:
            at = max(t * period_s, steps[-1].at_s + 1e-3)
            steps.append(ScheduleStep(at_s=round(at, 3), replicas=n, power_cap_w=cap))
    return steps


def family_service(s: Scenario, svc: InferenceService, rows: pd.DataFrame, n: int,
                   period_s: float, cat: Catalog, use_servers: bool) -> InferenceService:
    """The configurations of one service that differ only in GPU limit, over all n
    periods: one service whose schedule sets each period's replicas and limit (the
    highest in use in the period where several are)."""
    per = rows.assign(cap=rows["power_cap_w"].astype(float).fillna(np.inf)).groupby("period")
    by_t = pd.DataFrame({"replicas": per["replicas"].sum(), "load_rps": per["load_rps"].sum(),
                         "cap": per["cap"].max()})
    replicas = [int(by_t.at[t, "replicas"]) if t in by_t.index else 0 for t in range(n)]
    rates = [float(by_t.at[t, "load_rps"]) if t in by_t.index else 0.0 for t in range(n)]
    caps: list[float | None] = []
    cap = np.inf
    for t in range(n):  # a period without replicas keeps the limit before it
        cap = float(by_t.at[t, "cap"]) if t in by_t.index else cap
        caps.append(cap if np.isfinite(cap) else None)
    widest = rows.loc[rows["replicas"].idxmax()].copy()
    widest["replicas"] = max(replicas)
    widest["power_cap_w"] = np.nan  # the schedule sets the limits
    widest["config"] = f"{widest['gpu']}/tp{int(widest['tp'])}/b{int(widest['max_num_seqs'])}"
    base = replica_service(svc, widest, use_servers)
    lead = cold_start_lead_s(s, base, cat)
    scaling = ScheduledScaling(steps=schedule_steps(replicas, period_s, lead, caps))
    return InferenceService.model_validate(base.model_copy(update={
        "arrival": StepArrivals(step_s=period_s, rates_per_s=rates),
        "scaling": scaling}).model_dump())


def plan_scenario(s: Scenario, services: list[InferenceService], dep: pd.DataFrame,
                  n: int, period_s: float, cat: Catalog, jobs: pd.DataFrame | None = None,
                  label: str = "plan") -> Scenario | str:
    """The scenario that runs a plan (or baseline) over its n periods in one run, or why
    there is none: every configuration holds its widest period's replicas on servers all
    day, which a plan that moves GPUs between configurations (or to training jobs) from
    period to period may not fit in the fleet."""
    if "role" in dep and (dep["role"] != "").any():
        return ("a plan that splits a service into prefill and decode pools runs period by "
                "period (verify_mode periods): the pools' replicas do not change within a "
                "run (a scaling of pools is not modelled)")
    train = _jobs(s, jobs)
    why = ""
    for use_servers in ("servers" in dep.columns, False):
        workloads: list[InferenceService | TrainingJob] = [
            family_service(s, services[int(k[0])], g, n, period_s, cat, use_servers)
            for k, g in dep.groupby(FAMILY, sort=True)]
        sim = s.simulation.model_copy(update={
            "duration_s": n * period_s, "warmup_s": min(s.simulation.warmup_s, period_s / 5)})
        sc = Scenario.model_validate(s.model_copy(update={
            "name": f"{s.name}-{label}", "workloads": workloads + train, "simulation": sim,
            "optimize": None}).model_dump())
        try:  # the plan's servers differ by period: the widest period's may collide
            placement(sc, *split_workloads(sc), cat)  # (training jobs' pool included)
        except DcsimError as exc:
            why = str(exc)
            continue
        return sc
    return (f"no single scenario holds the {label}: each configuration keeps its widest "
            f"period's replicas on servers for the whole run, and together they do not fit "
            f"({why})")


def _jobs(s: Scenario, chosen: pd.DataFrame | None) -> list[TrainingJob]:
    if chosen is None or chosen.empty:
        return []
    jobs = {w.name: w for w in s.workloads if isinstance(w, TrainingJob)}
    return [jobs[str(r["job"])].model_copy(update={
        "power_cap_w": None if pd.isna(r["power_cap_w"]) else float(r["power_cap_w"]),
        "racks": list(r["racks"]) or None, "start_s": float(r["start_s"])})
        for _, r in chosen.iterrows()]
