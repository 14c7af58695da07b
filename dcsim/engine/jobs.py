"""Training jobs of a scenario: their specs (build stage), their processes (run stage), and
tables of what happened to them and of the power their servers drew (account stage)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from dcsim.catalog import Catalog
from dcsim.engine.metrics import TimeSeries, overlaps
from dcsim.engine.scheduler import JobScheduler
from dcsim.engine.training import JobPlan, JobProcess, JobRun, Shared, failure_gaps
from dcsim.hardware.placement import Server
from dcsim.profiles.store import ProfileStore
from dcsim.scenario import Network, Scenario
from dcsim.training.checkpoint import checkpoint_bytes, transfer_s, young_daly_s
from dcsim.training.step import StepModel, nic_bytes_s_per_gpu, step_model
from dcsim.workloads.spec import TrainingJob


def steps_total(job: TrainingJob) -> int:
    """Optimizer steps the job runs: `steps`, or total_tokens / global batch, rounded up."""
    if job.steps is not None:
        return job.steps
    assert job.total_tokens is not None
    return math.ceil(job.total_tokens / job.global_batch_tokens)


def fabric_capacity(net: Network, servers: list[Server]) -> tuple[list[int], np.ndarray]:
    """Leaf of each server (servers in fleet order, servers_per_leaf each) and each leaf's
    uplink capacity: its servers' NIC bandwidth / oversubscription, bytes/s."""
    leaf = [i // net.servers_per_leaf for i in range(len(servers))]
    cap = np.zeros(max(leaf, default=-1) + 1)
    for i, x in enumerate(servers):
        cap[leaf[i]] += x.spec.nics * x.spec.nic_gbps * 1e9 / 8 / net.oversubscription
    return leaf, cap


def _step_for(job: TrainingJob, cat: Catalog, store: ProfileStore, s: Scenario,
              servers: list[Server], caps: np.ndarray
              ) -> Callable[[list[int]], tuple[StepModel, float]]:
    """Step model on given servers: the job's limit, lowered to what their budgets allow."""
    gpu_max = cat.gpu(job.gpu).power_limit_max_w
    nic = nic_bytes_s_per_gpu(job, cat)
    cache: dict[float, StepModel] = {}

    def step_for(held: list[int]) -> tuple[StepModel, float]:
        """The step model on servers `held` at the lowest limit among the job's and theirs."""
        cap = min([job.power_cap_w or gpu_max] + [float(caps[i]) for i in held])
        if cap not in cache:
            limited = job.model_copy(update={"power_cap_w": None if cap >= gpu_max else cap})
            cache[cap] = step_model(limited, cat, store, s.fleet.network.link_latency_us * 1e-6)
        return cache[cap], nic

    return step_for


@dataclass(frozen=True)
class Timing:
    """A job's checkpoint and failure figures, and its run time without failures."""

    checkpoint_write_s: float
    checkpoint_interval_s: float
    job_mtbf_s: float
    estimated_runtime_s: float


def job_timing(job: TrainingJob, cat: Catalog, s: Scenario, step_s: float, n_servers: int
               ) -> Timing:
    """Checkpoint write time on an idle file system, the interval (Young/Daly or given),
    the job's MTBF (GPU MTBF / GPUs) and the failure-free run time: steps x step time
    plus one write per interval of work, s."""
    size = checkpoint_bytes(cat.model(job.model), job.checkpoint.bytes_per_param)
    st = s.fleet.storage
    write = transfer_s(size, n_servers, st.write_bandwidth_gbyte_s, st.per_client_gbyte_s)
    f = job.failures
    mtbf_job_s = f.gpu_mtbf_hours * 3600 / job.gpus if f.gpu_mtbf_hours else math.inf
    ci = job.checkpoint.interval_s
    interval = young_daly_s(write, mtbf_job_s) if ci == "young_daly" else float(ci)
    work = steps_total(job) * step_s
    estimate = work + (0.0 if math.isinf(interval) else work / interval * write)
    return Timing(write, interval, mtbf_job_s, estimate)


@dataclass(frozen=True)
class JobSpec:
    """One training job as the run stage needs it: the scenario's job, its step model on
    given servers, its timing, and the seeds of its failure times and failing servers."""

    index: int
    job: TrainingJob
    step_for: Callable[[list[int]], tuple[StepModel, float]]  # servers -> step, NIC B/s/GPU
    timing: Timing
    checkpoint_bytes: float
    idle_w: float  # per GPU
    gap_seed: np.random.SeedSequence
    server_seed: np.random.SeedSequence


def job_specs(s: Scenario, jobs: list[TrainingJob], cat: Catalog, store: ProfileStore,
              servers: list[Server], caps: np.ndarray,
              seeds: list[list[np.random.SeedSequence]]) -> list[JobSpec]:
    """Per job: step model, checkpoint and failure timing, seeds (seeds[j]: gaps, servers)."""
    out = []
    for j, job in enumerate(jobs):
        step_for = _step_for(job, cat, store, s, servers, caps)
        alone, _ = step_for([])
        per_server = max(x.spec.gpus_per_server for x in servers if x.gpu.id == job.gpu)
        tm = job_timing(job, cat, s, alone.step_s, math.ceil(job.gpus / per_server))
        size = checkpoint_bytes(cat.model(job.model), job.checkpoint.bytes_per_param)
        out.append(JobSpec(j, job, step_for, tm, size, cat.gpu(job.gpu).idle_power_w,
                           seeds[j][0], seeds[j][1]))
    return out


def start_job(sh: Shared, spec: JobSpec) -> JobProcess:
    """The SimPy process of one job (its random streams start afresh from its seeds)."""
    job, tm, f = spec.job, spec.timing, spec.job.failures
    gaps = failure_gaps(job.gpus, f.gpu_mtbf_hours, f.weibull_shape, f.distribution,
                        f.times_s, np.random.default_rng(spec.gap_seed))
    plan = JobPlan(spec.index, spec.index, job.gpu, job.priority, tm.estimated_runtime_s,
                   spec.step_for, tm.checkpoint_interval_s, spec.checkpoint_bytes, f.restart_s,
                   f.repair_s, spec.idle_w, gaps, np.random.default_rng(spec.server_seed),
                   frozenset(job.racks) if job.racks else None)
    return JobProcess(sh, JobRun(job.name, job.gpus, steps_total(job), job.start_s), plan)


def jobs_table(runs: list[tuple[JobProcess, JobSpec]], end_s: float) -> pd.DataFrame:
    """One row per job: timing, goodput, failures, checkpoints, energy, step breakdown
    (call after every process's `finish`)."""
    rows = []
    for proc, spec in runs:
        extra = asdict(spec.timing)
        run = proc.run
        if proc.step is None and proc.base is None:  # still queued at the end
            rows.append({"job": run.name, "gpus": run.gpus, "finished": False,
                         "submit_s": run.submit_s, "queue_wait_s": end_s - run.submit_s,
                         "steps_total": run.steps_total, "steps_done": 0, "energy_j": 0.0,
                         **extra})
            continue
        step = proc.step or proc.base  # the step as last shared by the fabric
        assert step is not None
        finished = not math.isnan(run.end_s)
        wall = (run.end_s if finished else end_s) - run.start_s
        progress = run.steps_done + run.steps_uncommitted
        useful = progress * step.step_s
        rows.append({
            "job": run.name, "gpus": run.gpus, "finished": finished,
            "submit_s": run.submit_s, "start_s": run.start_s, "queue_wait_s": run.start_s
            - run.submit_s, "end_s": run.end_s, "runtime_s": wall,
            "steps_total": run.steps_total, "steps_done": run.steps_done,
            "steps_uncommitted": run.steps_uncommitted, "steps_lost": run.steps_lost,
            "tokens_done": progress * step.tokens,
            "goodput": useful / wall if wall > 0 else math.nan,
            "restarts": run.restarts, "lost_gpu_hours": run.lost_s * run.gpus / 3600,
            "replacement_wait_s": run.replacement_wait_s, "servers": run.servers,
            "leaves": run.leaves,
            "checkpoints": run.checkpoints, "checkpoint_overhead_s": run.checkpoint_s,
            "energy_j": run.energy_j, "step_s": step.step_s, "compute_s": step.compute_s,
            "bubble_s": step.bubble_s, "exposed_dp_s": step.exposed_dp_s,
            "tokens_per_s": step.tokens_per_s, "busy_power_w": step.busy_power_w,
            "power_cap_w": step.power_cap_w, "profile_provenance": step.provenance, **extra,
        })
    return pd.DataFrame(rows)


def failures_table(runs: list[tuple[JobProcess, JobSpec]]) -> pd.DataFrame:
    """One row per failure: job, time, steps lost, GPU-hours lost (work, restart, restore)."""
    rows = [{"job": proc.run.name, "time_s": t, "steps_lost": steps, "lost_gpu_hours": gpu_h}
            for proc, _ in runs for t, steps, gpu_h in proc.run.failures]
    return pd.DataFrame(rows, columns=["job", "time_s", "steps_lost", "lost_gpu_hours"])


def checkpoints_table(runs: list[tuple[JobProcess, JobSpec]]) -> pd.DataFrame:
    """One row per completed checkpoint write: job, start and end time."""
    rows = [{"job": proc.run.name, "start_s": t0, "end_s": t1}
            for proc, _ in runs for t0, t1 in proc.run.checkpoint_times]
    return pd.DataFrame(rows, columns=["job", "start_s", "end_s"])


def _overlap(t0: float, t1: float, w: float, n: int) -> tuple[int, np.ndarray]:
    """First bucket and seconds of [t0, t1) in each bucket from it on (width w, n buckets)."""
    parts = overlaps(t0, t1, w, n)
    return parts[0][0], np.array([dt for _, dt in parts])


@dataclass(frozen=True)
class PoolRecord:
    """What the job scheduler did with the training pool, for power accounting."""

    pool: list[int]
    spares: frozenset[int]  # hot spares at the end
    allocations: pd.DataFrame  # job, server, gpus, t0_s, t1_s
    outages: list[tuple[int, float, float]]  # server under repair, from, to


def pool_record(sched: JobScheduler, end_s: float) -> PoolRecord:
    """The scheduler's pool, spares, allocations and repairs up to end_s."""
    spares = frozenset().union(*sched.spares.values()) if sched.spares else frozenset()
    return PoolRecord(list(sched.pool), spares, sched.allocations(end_s),
                      sched.outage_intervals(end_s))


def server_training_power(rec: PoolRecord, series: TimeSeries,
                          servers: list[Server], dt: np.ndarray,
                          unused_off: bool = False
                          ) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray]:
    """Per pool server and bucket: mean GPU power (W), share of time training, share in service.

    A job's GPUs draw alike, so its energy in a bucket splits over the servers it held
    by GPU-seconds; GPUs a job leaves unused on its servers draw idle power, and so do
    free servers unless `unused_off` switches them off (hot spares stay on); a server
    under repair draws nothing.
    """
    n = dt.size
    energy, gpu_s = series.array("energy_j"), series.array("gpus_x_s")
    active_s = series.array("active_s")
    with np.errstate(divide="ignore", invalid="ignore"):
        per_gpu = np.where(gpu_s > 0, energy / gpu_s, 0.0)
        busy_share = np.where(active_s > 0, series.array("busy_s") / active_s, 0.0)
    e = np.zeros((len(servers), n))
    busy, held, off = np.zeros_like(e), np.zeros_like(e), np.zeros_like(e)
    for job, si, g, t0, t1 in rec.allocations.itertuples(index=False):
        b, o = _overlap(t0, t1, series.bucket_s, n)
        idle = servers[si].gpu.idle_power_w * (servers[si].spec.gpus_per_server - g)
        sl = slice(b, b + o.size)
        e[si, sl] += o * (g * per_gpu[job, sl] + idle)
        busy[si, sl] += o * busy_share[job, sl]
        held[si, sl] += o
    for si, t0, t1 in rec.outages:
        b, o = _overlap(t0, t1, series.bucket_s, n)
        off[si, b:b + o.size] += o
    out = {}
    spares = rec.spares
    for si in rec.pool:
        gps = servers[si].spec.gpus_per_server
        rest = np.maximum(dt - held[si] - off[si], 0.0)
        if unused_off and si not in spares:
            off[si] += rest
            rest = np.zeros_like(rest)
        out[si] = (e[si] + rest * gps * servers[si].gpu.idle_power_w) / dt / gps
    return out, busy / dt, 1 - off / dt
