"""Training jobs in the plan: a power limit and racks per job, under its deadline.

For each job and each candidate power limit, the step model (dcsim.training.step, the
simulator's own) gives the step time and GPU power; the simulator's checkpoint
arithmetic (dcsim.engine.jobs.job_timing) the failure-free run time; a first-order
allowance the expected time lost to failures: each failure costs on average half a
checkpoint interval of work, the restart, the checkpoint read, and the repair when
the fleet keeps no spare servers, so the expected run time W solves
W = T0 + (W / MTBF) x loss, W = T0 / (1 - loss / MTBF). Limits whose expected end
misses the deadline are not offered to the MILP.

In the MILP a job picks one limit (binary z) and that many whole servers per rack (J);
its servers are taken from the racks' inventory and budgets (at the limit, worst case)
in the periods it runs, its power above idle enters the periods' IT power, and its
energy after the horizon counts in the objective as if the horizon's days repeated.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyomo.environ as pyo

from dcsim.catalog import Catalog
from dcsim.engine.jobs import job_timing
from dcsim.errors import DcsimError, Problem
from dcsim.hardware.facility import facility_power_w
from dcsim.optimize.table import wall_per_gpu_w
from dcsim.profiles.store import ProfileStore
from dcsim.scenario import Scenario
from dcsim.training.checkpoint import checkpoint_bytes, transfer_s
from dcsim.training.step import step_model
from dcsim.workloads.spec import TrainingJob

if TYPE_CHECKING:
    from dcsim.optimize.model import Inputs


def expected_runtime_s(failure_free_s: float, mtbf_s: float, loss_s: float) -> float:
    """Expected run time with failures, first order: T0 / (1 - loss / MTBF), s (inf when a
    failure costs more than the time between failures)."""
    if math.isinf(mtbf_s):
        return failure_free_s
    return failure_free_s / (1 - loss_s / mtbf_s) if loss_s < mtbf_s else math.inf


def job_options(s: Scenario, jobs: list[TrainingJob], cat: Catalog, store: ProfileStore,
                fractions: list[float], starts: list[float] | None = None) -> pd.DataFrame:
    """One row per (job, power limit, start) whose expected end meets the job's deadline.

    A job starts when it is submitted or, given `starts` (period boundaries: the plan may
    delay jobs), at any of them after its submission.
    """
    rows = []
    for job in jobs:
        mine = []
        for f in sorted(set(fractions), reverse=True):
            base = _option(s, job, cat, store, f)
            later = [t for t in starts or [] if t > job.start_s]
            mine += [base | {"start_s": t, "end_s": t + base["runtime_s"]}
                     for t in [job.start_s, *later]]
        ok = [r for r in mine if job.deadline_s is None or r["end_s"] <= job.deadline_s]
        i = s.workloads.index(job)
        if not ok:
            best = min(r["end_s"] for r in mine)
            raise DcsimError(Problem(f"workloads[{i}].deadline_s", job.deadline_s,
                                     f"at least {best:,.0f} s: the job's expected end at its "
                                     "fastest candidate power limit, failures included"))
        rows += [r | {"job": job.name, "job_index": i} for r in ok]
    return pd.DataFrame(rows)


def _option(s: Scenario, job: TrainingJob, cat: Catalog, store: ProfileStore, fraction: float
            ) -> dict[str, object]:
    g = cat.gpu(job.gpu)
    cap = None if fraction >= 1 else round(max(fraction * g.power_limit_max_w,
                                               g.power_limit_min_w), 1)
    step = step_model(job.model_copy(update={"power_cap_w": cap}), cat, store,
                      s.fleet.network.link_latency_us * 1e-6)
    per = max(x.gpus_per_server for x in cat.servers.values() if x.gpu == job.gpu)
    n_servers = math.ceil(job.gpus / per)
    tm = job_timing(job, cat, s, step.step_s, n_servers)
    f = job.failures
    st = s.fleet.storage
    read = transfer_s(checkpoint_bytes(cat.model(job.model), job.checkpoint.bytes_per_param),
                      n_servers, st.read_bandwidth_gbyte_s, st.per_client_gbyte_s)
    interval = min(tm.checkpoint_interval_s, tm.estimated_runtime_s)
    wait = f.repair_s if s.fleet.training_scheduler.spare_servers == 0 else 0.0
    loss = interval / 2 + f.restart_s + read + wait
    if f.times_s is not None:  # replayed failures: their number is known
        runtime = tm.estimated_runtime_s + len(f.times_s) * loss
    else:
        runtime = expected_runtime_s(tm.estimated_runtime_s, tm.job_mtbf_s, loss)
    gpu_w = step.energy_j / step.step_s / job.gpus
    wall = job.gpus * wall_per_gpu_w(cat, job.gpu, gpu_w)
    idle_per_gpu = wall_per_gpu_w(cat, job.gpu, g.idle_power_w)
    idle = job.gpus * idle_per_gpu
    return {"gpu": job.gpu, "gpus": job.gpus, "servers": n_servers, "gpus_per_server": per,
            "power_cap_w": cap, "step_s": step.step_s, "failure_free_s": tm.estimated_runtime_s,
            "runtime_s": runtime, "start_s": job.start_s, "end_s": job.start_s + runtime,
            "deadline_s": job.deadline_s, "wall_w": wall, "above_idle_w": wall - idle,
            "server_idle_w": n_servers * per * idle_per_gpu,
            "peak_w_per_gpu": wall_per_gpu_w(cat, job.gpu, cap or g.power_limit_max_w),
            "energy_kwh": wall * runtime / 3.6e6, "gpu_kwh": gpu_w * job.gpus * runtime / 3.6e6,
            "racks": job.racks,
            "provenance": f"step {step.provenance}; failures derived (first order)"}


def shares(jobs: pd.DataFrame, n: int, period_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Per option and period: share of the period the job runs in the horizon, and seconds
    it runs in that hour of later days (the horizon repeated)."""
    inside, after = np.zeros((len(jobs), n)), np.zeros((len(jobs), n))
    horizon = n * period_s
    for o, (a, run) in enumerate(zip(jobs["start_s"], jobs["runtime_s"], strict=True)):
        b = a + run
        cycles = range(1, math.ceil(b / horizon) + 1) if math.isfinite(b) else range(0)
        for t in range(n):
            lo = t * period_s
            inside[o, t] = max(min(b, lo + period_s) - max(a, lo), 0.0) / period_s
            after[o, t] = sum(max(min(b, c * horizon + lo + period_s) - max(a, c * horizon + lo),
                                  0.0) for c in cycles)
    return inside, after


def variables(m: pyo.ConcreteModel, x: Inputs, racks_of: dict[str, list[str]]) -> None:
    """z[o] (the job runs option o: a power limit and start) and J[o, r] (its servers in
    rack r), with per-option data the other families read; empty sets without jobs."""
    j = x.jobs if x.jobs is not None else pd.DataFrame(columns=[
        "job_index", "gpu", "racks", "servers", "gpus_per_server", "peak_w_per_gpu",
        "start_s", "runtime_s"])
    inside, after = shares(j, x.demand.shape[1], x.period_s)
    m.jobs_inside, m.jobs_after = inside, after
    m.job_racks = [_racks(j, o, racks_of) for o in range(len(j))]
    m.job_gpu = [str(g) for g in j["gpu"]]
    m.job_n_servers = [int(n) for n in j["servers"]]
    m.job_peak = [float(p) for p in j["peak_w_per_gpu"]]
    m.job_gps = [int(g) for g in j["gpus_per_server"]]
    m.O = pyo.Set(initialize=range(len(j)))
    m.OR = pyo.Set(initialize=[(o, r) for o in range(len(j)) for r in m.job_racks[o]], dimen=2)
    # per rack, the options there: rack constraints read only their own
    m.jobs_at = {}
    for o, r in m.OR:
        m.jobs_at.setdefault(r, []).append(o)
    m.z = pyo.Var(m.O, domain=pyo.Binary)
    m.J = pyo.Var(m.OR, domain=pyo.NonNegativeIntegers)


def options_by_job(jobs: pd.DataFrame | None) -> dict[int, list[int]]:
    """Per job, the indices of its options (none without jobs)."""
    if jobs is None:
        return {}
    return {int(k): list(v) for k, v in jobs.groupby("job_index").groups.items()}


def _racks(jobs: pd.DataFrame, o: int, racks_of: dict[str, list[str]]) -> list[str]:
    have = racks_of.get(str(jobs["gpu"].iat[o]), [])
    want = jobs["racks"].iat[o]
    return have if want is None else [r for r in have if r in set(want)]


def servers_in(m: pyo.ConcreteModel, rack: str, gpu: str, t: int) -> object:
    """Servers of GPU type `gpu` in `rack` that jobs hold in period t."""
    return pyo.quicksum(m.J[o, rack] for o in m.jobs_at.get(rack, ())
                        if m.jobs_inside[o, t] > 0 and m.job_gpu[o] == gpu)


def rack_w(m: pyo.ConcreteModel, rack: str, t: int, min_w: dict[str, float]) -> object:
    """Worst-case wall power jobs add to `rack` in period t above its parked servers, W."""
    return pyo.quicksum(m.job_gps[o] * (m.job_peak[o] - min_w[m.job_gpu[o]]) * m.J[o, rack]
                        for o in m.jobs_at.get(rack, ()) if m.jobs_inside[o, t] > 0)


def draw_w(jobs: pd.DataFrame, servers_off: bool) -> np.ndarray:
    """Per option, the IT power a running job adds, W: above its idle GPUs; with unused
    servers switched off, its servers' whole idle power too (they are on only for it)."""
    above = jobs["above_idle_w"].to_numpy()
    return above + jobs["server_idle_w"].to_numpy() if servers_off else above


def it_w(m: pyo.ConcreteModel, x: Inputs, t: int) -> object:
    """Jobs' IT power in period t (mean over the period; see draw_w), W."""
    if not len(m.O):
        return 0.0
    above = draw_w(x.jobs, x.servers_off)
    return pyo.quicksum(float(above[o] * m.jobs_inside[o, t]) * m.z[o] for o in m.O
                        if m.jobs_inside[o, t] > 0)


def after_kwh(jobs: pd.DataFrame, x: Inputs, weighted: bool = True) -> np.ndarray:
    """Per option: facility energy of its power above idle after the horizon, kWh (times
    each hour's objective weight when `weighted`), the horizon's days repeated; facility
    power is affine in IT power, so its marginal slope applies."""
    n = x.demand.shape[1]
    _, after = shares(jobs, n, x.period_s)
    slope = np.array([float(facility_power_w(1.0, x.overhead, t)
                            - facility_power_w(0.0, x.overhead, t)) for t in range(n)])
    w = np.asarray(x.weight, dtype=float) if weighted else np.ones(n)
    return after @ (slope * w) * draw_w(jobs, x.servers_off) / 3.6e6


DELAY_TIEBREAK = 1e-3  # objective units per hour a job is delayed: only breaks ties


def after_cost(m: pyo.ConcreteModel, x: Inputs) -> object:
    """Objective term of the jobs' energy after the horizon (see after_kwh), plus a
    negligible cost per hour of delay so that a job starts when submitted unless a later
    start pays (cleaner or cheaper hours, cooler weather)."""
    if not len(m.O) or x.jobs is None:
        return 0.0
    per = after_kwh(x.jobs, x)
    delay_h = (x.jobs["start_s"] - x.jobs.groupby("job_index")["start_s"].transform("min")
               ).to_numpy() / 3600
    return pyo.quicksum((float(per[o]) + DELAY_TIEBREAK * float(delay_h[o])) * m.z[o]
                        for o in m.O if per[o] > 0 or delay_h[o] > 0)


def chosen(x: Inputs, z: dict[int, int], J: dict[tuple[int, str], int]) -> pd.DataFrame:
    """The plan for each job: its limit, expected run, energy and servers per rack."""
    if x.jobs is None:
        return pd.DataFrame()
    rows = []
    for o, on in z.items():
        if on:
            racks = {r: n for (o2, r), n in J.items() if o2 == o and n > 0}
            rows.append(x.jobs.iloc[o].drop(labels="racks").to_dict() | {
                "rack_servers": racks, "racks": sorted(racks)})
    return pd.DataFrame(rows)
