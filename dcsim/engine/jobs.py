"""Start the training jobs of a scenario and tabulate what happened to them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import simpy

from dcsim.catalog import Catalog
from dcsim.engine.metrics import TimeSeries
from dcsim.engine.training import JobProcess, JobRun, failure_gaps
from dcsim.hardware.network import Fabric
from dcsim.hardware.placement import Server
from dcsim.profiles.store import ProfileStore
from dcsim.scenario import Scenario
from dcsim.training.checkpoint import checkpoint_bytes, transfer_s, young_daly_s
from dcsim.training.step import StepModel, nic_bytes_s_per_gpu, step_model
from dcsim.workloads.spec import TrainingJob


def _steps_total(job: TrainingJob) -> int:
    if job.steps is not None:
        return job.steps
    assert job.total_tokens is not None
    return math.ceil(job.total_tokens / job.global_batch_tokens)


def _enforced(job: TrainingJob, j: int, servers: list[Server], caps: np.ndarray) -> TrainingJob:
    """The job with the power limit its servers' budgets allow."""
    limit = min((caps[i] for i, x in enumerate(servers) if x.job == j), default=math.inf)
    gpu_max = next(x.gpu.power_limit_max_w for x in servers if x.job == j)
    cap = min(job.power_cap_w or gpu_max, limit)
    return job.model_copy(update={"power_cap_w": None if cap >= gpu_max else float(cap)})


def build_fabric(env: simpy.Environment, s: Scenario, servers: list[Server],
                 series: TimeSeries) -> tuple[Fabric, list[int]]:
    """Leaf-spine uplinks of the fleet (servers in order, servers_per_leaf each)."""
    net = s.fleet.network
    leaf = [i // net.servers_per_leaf for i in range(len(servers))]
    cap = np.zeros(max(leaf, default=-1) + 1)
    for i, x in enumerate(servers):
        cap[leaf[i]] += x.spec.nics * x.spec.nic_gbps * 1e9 / 8 / net.oversubscription
    return Fabric(cap, lambda: env.now, series.bucket_s, series.n), leaf


def start_jobs(env: simpy.Environment, s: Scenario, jobs: list[TrainingJob], cat: Catalog,
               store: ProfileStore, servers: list[Server], caps: np.ndarray, series: TimeSeries,
               first_row: int, seeds: list[list[np.random.SeedSequence]], seed_offset: int,
               fabric: Fabric, leaf: list[int]
               ) -> list[tuple[JobProcess, StepModel, dict[str, float]]]:
    out = []
    for j, job in enumerate(jobs):
        job = _enforced(job, j, servers, caps)
        step = step_model(job, cat, store, s.fleet.network)
        n_servers = sum(1 for x in servers if x.job == j)
        size = checkpoint_bytes(cat.model(job.model), job.checkpoint.bytes_per_param)
        write = transfer_s(size, n_servers, s.fleet.storage, write=True)
        read = transfer_s(size, n_servers, s.fleet.storage, write=False)
        f = job.failures
        mtbf_job_s = f.gpu_mtbf_hours * 3600 / job.gpus if f.gpu_mtbf_hours else math.inf
        ci = job.checkpoint.interval_s
        interval = (young_daly_s(write, mtbf_job_s) if ci == "young_daly" else float(ci))
        run = JobRun(job.name, job.gpus, _steps_total(job), job.start_s)
        rng = np.random.default_rng(seeds[seed_offset + j][0])
        gaps = failure_gaps(job.gpus, f.gpu_mtbf_hours, f.weibull_shape, f.distribution,
                            f.times_s, rng)
        leaves: dict[int, int] = {}
        for i, x in enumerate(servers):
            if x.job == j:
                leaves[leaf[i]] = leaves.get(leaf[i], 0) + x.job_gpus
        proc = JobProcess(env, run, step, interval, write, read, f.restart_s,
                          cat.gpu(job.gpu).idle_power_w, gaps, series, first_row + j,
                          fabric, j, leaves, nic_bytes_s_per_gpu(job, cat))
        out.append((proc, step, {"checkpoint_write_s": write, "checkpoint_interval_s": interval,
                                "job_mtbf_s": mtbf_job_s, "power_cap_w": job.power_cap_w}))
    return out


def jobs_table(runs: list[tuple[JobProcess, StepModel, dict[str, float]]], end_s: float
               ) -> pd.DataFrame:
    """One row per job: timing, goodput, failures, checkpoints, energy, step breakdown."""
    rows = []
    for proc, _, extra in runs:
        proc.finish(end_s)
        run, step = proc.run, proc.step  # the step as last shared by the fabric
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
            "checkpoints": run.checkpoints, "checkpoint_overhead_s": run.checkpoint_s,
            "energy_j": run.energy_j, "step_s": step.step_s, "compute_s": step.compute_s,
            "bubble_s": step.bubble_s, "exposed_dp_s": step.exposed_dp_s,
            "tokens_per_s": step.tokens_per_s, "busy_power_w": step.busy_power_w,
            "profile_provenance": step.provenance, **extra,
        })
    return pd.DataFrame(rows)


def failures_table(runs: list[tuple[JobProcess, StepModel, dict[str, float]]]) -> pd.DataFrame:
    """One row per failure: job, time, steps lost, GPU-hours lost (work, restart, restore)."""
    rows = [{"job": proc.run.name, "time_s": t, "steps_lost": steps, "lost_gpu_hours": gpu_h}
            for proc, _, _ in runs for t, steps, gpu_h in proc.run.failures]
    return pd.DataFrame(rows, columns=["job", "time_s", "steps_lost", "lost_gpu_hours"])
