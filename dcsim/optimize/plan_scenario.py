"""A plan (or a baseline) as one runnable scenario over its whole horizon: plan.yaml.

Each (service, configuration) the plan uses becomes a service `service@configuration`
(as in the per-period check, dcsim.optimize.verify) with Poisson arrivals at the
plan's load of each period (`steps` arrivals) and a schedule of its replicas per
period. A period that needs more replicas than the one before starts them a cold
start's lead earlier (server boot where servers switch off, weight load at the
file system's per-client bandwidth, engine warm-up), so that they are ready at the
period's start; replicas a period no longer needs drain from its start. Training
jobs run at the plan's limits, racks and starts.
"""

from __future__ import annotations

import pandas as pd

from dcsim.catalog import Catalog
from dcsim.engine.build import placement, split_workloads
from dcsim.engine.build_scaling import cold_start_lead_s as replica_lead_s
from dcsim.errors import DcsimError
from dcsim.optimize.verify import replica_service
from dcsim.scenario import Scenario
from dcsim.workloads.scaling import ScheduledScaling, ScheduleStep
from dcsim.workloads.spec import InferenceService, StepArrivals, TrainingJob


def cold_start_lead_s(s: Scenario, svc: InferenceService, cat: Catalog) -> float:
    """Seconds from a replica's start to ready (engine.build_scaling.cold_start_lead_s)."""
    d = svc.deployment
    return replica_lead_s(s.fleet, d, cat.gpu(d.gpu), cat.model(svc.model))


def schedule_steps(replicas: list[int], period_s: float, lead_s: float) -> list[ScheduleStep]:
    """Steps for replicas per period: increases a lead early, decreases at the period."""
    steps = [ScheduleStep(at_s=0.0, replicas=replicas[0])]
    for t in range(1, len(replicas)):
        n, prev = replicas[t], replicas[t - 1]
        if n == prev:
            continue
        at = t * period_s - (lead_s if n > prev else 0.0)
        at = max(at, steps[-1].at_s + 1e-3)  # in order, if leads overlap
        steps.append(ScheduleStep(at_s=round(at, 3), replicas=n))
    return steps


def config_service(s: Scenario, svc: InferenceService, rows: pd.DataFrame, n: int,
                   period_s: float, cat: Catalog, use_servers: bool) -> InferenceService:
    """One (service, configuration) of a plan over all n periods."""
    by_t = rows.set_index("period")
    replicas = [int(by_t.at[t, "replicas"]) if t in by_t.index else 0 for t in range(n)]
    rates = [float(by_t.at[t, "load_rps"]) if t in by_t.index else 0.0 for t in range(n)]
    widest = rows.loc[rows["replicas"].idxmax()]
    base = replica_service(svc, widest, use_servers)
    lead = cold_start_lead_s(s, base, cat)
    scaling = ScheduledScaling(steps=schedule_steps(replicas, period_s, lead))
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
    train = _jobs(s, jobs)
    why = ""
    for use_servers in ("servers" in dep.columns, False):
        workloads: list[InferenceService | TrainingJob] = [
            config_service(s, services[int(k[0])], g, n, period_s, cat, use_servers)
            for k, g in dep.groupby(["service_index", "config"], sort=True)]
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
