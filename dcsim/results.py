"""Summaries of simulation results. Pure pandas on the result tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dcsim.power_summary import domain_peaks, energy_split
from dcsim.scenario import Scenario
from dcsim.slo import slo_attainment
from dcsim.summary import (
    ClusterSummary,
    DomainPeak,
    JobSummary,
    RunSummary,
    ServiceSummary,
    Totals,
)
from dcsim.workloads.spec import InferenceService

QUANTILES = (0.5, 0.9, 0.99)


def _latency_stats(done: pd.DataFrame) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for col in ("ttft_s", "tpot_s", "e2e_s"):
        v = done[col].dropna().to_numpy()
        for q in QUANTILES:
            out[f"{col.removesuffix('_s')}_p{round(q * 100)}_s"] = (
                float(np.quantile(v, q)) if v.size else None)
    return out


def service_summary(req: pd.DataFrame, svc: InferenceService, window_s: float, end_s: float,
                    energy_j: float, gpus: int) -> dict[str, object]:
    """Counts, latency percentiles and SLO attainment (dcsim.slo) of one service after
    warm-up."""
    r = req[~req["in_warmup"]]
    done = r[r["status"] == "finished"]
    open_ = r[r["status"] == "unfinished"]
    out_tokens = int(done["output_tokens"].sum())
    return {
        "requests_arrived": len(r), "requests_finished": len(done),
        "requests_unfinished": len(open_),
        "requests_rejected": int((r["status"] == "rejected").sum()),
        "requests_aborted": int((r["status"] == "aborted").sum()),
        "requests_timed_out": int((r["status"] == "timed_out").sum()),
        "throughput_req_s": len(done) / window_s,
        "output_tokens_per_s": out_tokens / window_s,
        **_latency_stats(done),
        "slo_attainment": slo_attainment(r, svc.slo, end_s),
        "preemptions": int(r["preemptions"].sum()),
        "gpus": gpus, "gpu_hours": gpus * end_s / 3600.0,
        "energy_kwh": energy_j / 3.6e6,
    }


def cluster_summary(pods: pd.DataFrame, series: pd.DataFrame) -> list[ClusterSummary]:
    """Per replayed cluster trace: pods started, waiting time, allocation, fragmentation."""
    out = []
    for name, p in pods.groupby("workload", sort=False):
        t = series[series["workload"] == name]
        busy = t[t["gpu_allocation"] > 0]
        out.append(ClusterSummary(
            workload=str(name), pods=len(p), pods_started=int(p["started"].sum()),
            wait_mean_s=float(p["wait_s"].mean()), wait_p90_s=float(p["wait_s"].quantile(0.9)),
            gpu_allocation_mean=float(t["gpu_allocation"].mean()),
            gpu_allocation_peak=float(t["gpu_allocation"].max()),
            fragmentation_mean_when_busy=float(busy["fragmentation"].mean())
            if len(busy) else None))
    return out


def summarize(s: Scenario, requests: pd.DataFrame, replicas: pd.DataFrame,
              provenance: dict, power: pd.DataFrame, budgets: pd.DataFrame,
              jobs: pd.DataFrame | None = None, cluster_pods: pd.DataFrame | None = None,
              cluster: pd.DataFrame | None = None) -> RunSummary:
    """The run's summary: per service, job, cluster replay and power domain, and in total."""
    sim = s.simulation
    split = energy_split(power)
    # facility carbon and cost follow GPU energy to the services and jobs that spent it
    job_j = float(jobs["energy_j"].sum()) if jobs is not None and not jobs.empty else 0.0
    gpu_j = float(replicas["energy_j"].sum()) + job_j
    services = {w.name: _service(s, w, requests, replicas, provenance, split, gpu_j)
                for w in s.workloads if isinstance(w, InferenceService)}
    total = Totals(
        requests_finished=sum(v.requests_finished for v in services.values()),
        gpus=int((power["domain"] == "gpu").sum() // max(power["t_start_s"].nunique(), 1)),
        gpus_serving=int(replicas["gpus"].sum()) if len(replicas) else 0,
        gpus_training=int(jobs["gpus"].sum()) if jobs is not None and not jobs.empty else 0,
        gpu_hours=float(replicas["gpus"].sum() if len(replicas) else 0) * sim.duration_s / 3600.0,
        **split, gpu_hours_in_use=in_use_gpu_hours(replicas))
    job_rows = []
    for j in ([] if jobs is None or jobs.empty else jobs.to_dict("records")):
        share = j["energy_j"] / gpu_j if gpu_j else 0.0
        job_rows.append(JobSummary(
            **{k: _py(j[k]) for k in JOB_KEYS},
            carbon_kg=split["carbon_kg"] * share, cost_usd=split["cost_usd"] * share,
            **_job_times(j)))
    replays = (cluster_summary(cluster_pods, cluster)
               if cluster_pods is not None and not cluster_pods.empty else [])
    return RunSummary(s.name, sim.duration_s, sim.warmup_s, sim.seed, services, job_rows,
                      replays, total, [DomainPeak(**{k: _py(v) for k, v in d.items()})
                                       for d in domain_peaks(power, budgets)])


def _job_times(j: dict) -> dict[str, float | None]:
    """Start and end of a job row, s into the run: the end it reached, else the end it
    is heading for: the steps left at the step time over the goodput seen so far
    (failures, restarts and checkpoints at the rate they came), or the failure-free
    estimate before any step counted. None where it never started."""
    start = _py(j.get("start_s"))
    if start is None or start != start:
        return {"start_s": None, "end_s": None}
    if j.get("finished"):
        return {"start_s": float(start), "end_s": float(j["end_s"])}
    done = float(j.get("steps_done", 0)) + float(j.get("steps_uncommitted", 0))
    left = float(j.get("steps_total", 0)) - done
    if done > 0 and j["goodput"] == j["goodput"] and j["goodput"] > 0:
        end = start + j["runtime_s"] + left * j["step_s"] / j["goodput"]
    else:
        end = start + float(j.get("estimated_runtime_s", float("nan")))
    return {"start_s": float(start), "end_s": None if end != end else float(end)}


JOB_KEYS = ("job", "gpus", "finished", "runtime_s", "tokens_done", "goodput", "restarts",
            "lost_gpu_hours", "checkpoints", "energy_j", "tokens_per_s", "step_s")


def _service(s: Scenario, w: InferenceService, requests: pd.DataFrame,
             replicas: pd.DataFrame, provenance: dict, split: dict[str, float],
             gpu_j: float) -> ServiceSummary:
    sim = s.simulation
    reps = replicas[replicas["service"] == w.name]
    e = float(reps["energy_j"].sum())
    req = requests[requests["service"] == w.name]
    row = service_summary(req, w, sim.duration_s - sim.warmup_s, sim.duration_s, e,
                          int(reps["gpus"].sum()))
    share = e / gpu_j if gpu_j else 0.0
    done = req[(req["status"] == "finished") & ~req["in_warmup"]]
    tokens = int(done["output_tokens"].sum())
    return ServiceSummary(
        **row, facility_kwh_allocated=split["facility_kwh"] * share,
        carbon_kg=split["carbon_kg"] * share, cost_usd=split["cost_usd"] * share,
        j_per_output_token=float(done["energy_j"].sum()) / tokens if tokens else None,
        profile_provenance=provenance.get(w.name, {}),
        profile_basis={ph: str(reps[f"{ph}_basis"].iloc[0]) for ph in ("decode", "prefill")
                       if len(reps) and f"{ph}_basis" in reps},
        gpu_hours_in_use=in_use_gpu_hours(reps),
        pools=pool_summary(req, reps, sim.duration_s) if w.disaggregated else None)


def pool_summary(req: pd.DataFrame, reps: pd.DataFrame, duration_s: float
                 ) -> dict[str, dict[str, float]]:
    """Per pool of a disaggregated service: replicas, GPUs, the share of the run its
    replicas were busy, GPU energy (kWh) and mean GPU power (W); and its KV moves
    (requests moved, GB, transfer and decode-wait percentiles) as `kv_transfer`."""
    out: dict[str, dict[str, float]] = {}
    for pool, g in reps.groupby("pool", sort=False):
        e = float(g["energy_j"].sum())
        out[str(pool)] = {
            "replicas": len(g), "gpus": int(g["gpus"].sum()),
            "busy_fraction": float(g["busy_s"].sum()) / (len(g) * duration_s),
            "energy_kwh": e / 3.6e6, "mean_power_w": e / duration_s}
    done = req[(req["status"] == "finished") & ~req["in_warmup"]]
    moved = done[done["kv_transfer_s"].notna()]

    def q(col: str, p: float) -> float:
        return float(moved[col].quantile(p)) if len(moved) else float("nan")

    out["kv_transfer"] = {
        "requests_moved": len(moved), "kv_gb": float(moved["kv_bytes"].sum()) / 1e9,
        "transfer_p50_s": q("kv_transfer_s", 0.5), "transfer_p99_s": q("kv_transfer_s", 0.99),
        "wait_p99_s": q("kv_wait_s", 0.99)}
    return out


def in_use_gpu_hours(replicas: pd.DataFrame) -> float:
    """GPU-hours of replicas loading, serving or draining (replicas.parquet's in_use_s)."""
    if not len(replicas) or "in_use_s" not in replicas:
        return 0.0
    return float((replicas["in_use_s"] * replicas["gpus"]).sum()) / 3600.0


def _py(x: object) -> object:
    """numpy scalars as Python numbers (summary records hold plain values)."""
    return x.item() if hasattr(x, "item") else x


def served_energy_j(replicas: pd.DataFrame, requests: pd.DataFrame, idle_w: float,
                    duration_s: float) -> tuple[float, float]:
    """Device energy from the first arrival to the last completion, J, and of it the
    idle part: the replicas' whole draw (their energy_j counts idle gaps) less idle_w
    (every replica's GPUs at idle, W) over the time outside that window, when no
    request is in the system. For comparing a simulated run with a measured one."""
    window = float(requests["finish_s"].max()) - float(requests["arrival_s"].min())
    outside = idle_w * (duration_s - window)
    return (float(replicas["energy_j"].sum()) - outside,
            float(replicas["idle_energy_j"].sum()) - outside)
