"""Build and run the SimPy model of a scenario; return tidy tables."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import simpy

from dcsim.catalog import shapes
from dcsim.engine.costs import IterationCosts
from dcsim.engine.metrics import STATUS, RequestLog, TimeSeries
from dcsim.engine.replica import Replica, Seq
from dcsim.engine.router import Router
from dcsim.errors import DcsimError, Problem
from dcsim.profiles.store import ProfileStore
from dcsim.references import scenario_catalog
from dcsim.scenario import Scenario
from dcsim.workloads.requests import service_requests
from dcsim.workloads.spec import InferenceService

PROGRESS_TICKS = 200


@dataclass
class SimResult:
    requests: pd.DataFrame
    timeseries: pd.DataFrame
    replicas: pd.DataFrame  # one row per replica: config and energy totals
    provenance: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)


def kv_capacity_tokens(svc: InferenceService, gpu_memory_gb: float, model) -> int:
    """KV-cache tokens of one replica: (tp x memory x utilisation - weights) / KV bytes per token."""
    d = svc.deployment
    free = d.tp * gpu_memory_gb * 1e9 * d.gpu_memory_utilization - shapes.weight_bytes(model)
    return int(free // shapes.kv_bytes_per_token(model))


def _check_supported(s: Scenario) -> list[InferenceService]:
    services = []
    for i, w in enumerate(s.workloads):
        if not isinstance(w, InferenceService):
            raise DcsimError(Problem(f"workloads[{i}].kind", w.kind, "an inference service: "
                                     "training jobs are validated but not simulated yet"))
        if w.deployment.power_cap_w is not None:
            raise DcsimError(Problem(f"workloads[{i}].deployment.power_cap_w",
                                     w.deployment.power_cap_w, "no power cap: the power-cap "
                                     "model is not part of the simulator yet"))
        if w.deployment.max_batched_tokens < w.deployment.max_num_seqs:
            raise DcsimError(Problem(f"workloads[{i}].deployment.max_batched_tokens",
                                     w.deployment.max_batched_tokens,
                                     f">= max_num_seqs ({w.deployment.max_num_seqs})"))
        services.append(w)
    if not services:
        raise DcsimError(Problem("workloads", [], "at least one inference service to simulate"))
    return services


def simulate(s: Scenario, base_dir: Path | None = None, store: ProfileStore | None = None,
             coalesce: bool = True, progress: Callable[[float], None] | None = None) -> SimResult:
    """Run the scenario's inference services for simulation.duration_s."""
    services = _check_supported(s)
    base = base_dir or Path(".")
    cat = scenario_catalog(s)
    store = store or ProfileStore.from_files(
        cat, [p if Path(p).is_absolute() else base / p for p in s.profiles])
    sim = s.simulation
    seeds = np.random.SeedSequence(sim.seed).spawn(len(s.workloads))
    tables = []
    for i, svc in enumerate(services):
        req_seed, _ = seeds[i].spawn(2)
        tables.append(service_requests(svc, sim.duration_s, req_seed, base).assign(service=i))
    reqs = pd.concat(tables, ignore_index=True).sort_values(["arrival_s", "service"],
                                                             kind="stable", ignore_index=True)
    env = simpy.Environment()
    n_rep = sum(svc.deployment.replicas for svc in services)
    log = RequestLog(len(reqs))
    series = TimeSeries(n_rep, sim.duration_s, sim.time_bucket_s)
    routers, all_replicas, rows = [], [], []
    for i, svc in enumerate(services):
        sub = reqs[reqs["service"] == i]
        r, reps = _build_service(env, i, svc, cat, store, sub, log, series, len(all_replicas),
                                 coalesce, np.random.default_rng(seeds[i].spawn(2)[1]))
        routers.append(r)
        all_replicas += reps
        rows += [{"replica": rep.index, "service": svc.name, "gpu": svc.deployment.gpu,
                  "model": svc.model, "tp": svc.deployment.tp, "kv_capacity_tokens": rep.capacity}
                 for rep in reps]
    env.process(_arrivals(env, reqs, routers))
    if progress is not None:
        env.process(_ticks(env, sim.duration_s, progress))
    env.run(until=sim.duration_s)
    for rep in all_replicas:
        rep.finish(env.now)
    names = [svc.name for svc in services]
    return _collect(reqs, names, log, series, all_replicas, rows, sim.warmup_s)


def _build_service(env, i, svc, cat, store, sub, log, series, first, coalesce, rng):
    d = svc.deployment
    gpu, model = cat.gpu(d.gpu), cat.model(svc.model)
    cap = kv_capacity_tokens(svc, gpu.memory_gb, model)
    longest = int((sub["prompt_tokens"] + sub["output_tokens"]).max()) if len(sub) else 1
    max_ctx = max(min(cap, longest + 1), 2)
    costs = IterationCosts(store, gpu.id, model.id, d.tp, d.max_num_seqs,
                           max(min(max_ctx, max(d.max_batched_tokens, longest)), 2), max_ctx)
    shared: deque[Seq] | None = deque() if svc.routing == "central_queue" else None
    reps = [Replica(env, first + j, costs, d.max_num_seqs, d.max_batched_tokens,
                    d.chunked_prefill, cap, log, series, coalesce, shared)
            for j in range(d.replicas)]
    return Router(svc.routing, reps, rng, log, shared), reps


def _arrivals(env: simpy.Environment, reqs: pd.DataFrame, routers: list[Router]):
    times = reqs["arrival_s"].tolist()
    prompts, outputs = reqs["prompt_tokens"].tolist(), reqs["output_tokens"].tolist()
    svcs = reqs["service"].tolist()
    for rid, t in enumerate(times):
        if t > env.now:
            yield env.timeout(t - env.now)
        routers[svcs[rid]].route(Seq(rid, prompts[rid], outputs[rid]))


def _ticks(env: simpy.Environment, duration: float, progress: Callable[[float], None]):
    step = duration / PROGRESS_TICKS
    while True:
        progress(env.now)
        yield env.timeout(step)


def _collect(reqs, names, log, series, replicas, rows, warmup) -> SimResult:
    first, finish = log.first_token_s, log.finish_s
    out = reqs["output_tokens"].to_numpy()
    requests = pd.DataFrame({
        "service": pd.Categorical.from_codes(reqs["service"].to_numpy(), categories=names),
        "replica": log.replica, "arrival_s": reqs["arrival_s"].to_numpy(),
        "first_token_s": first, "finish_s": finish,
        "prompt_tokens": reqs["prompt_tokens"].to_numpy(), "output_tokens": out,
        "ttft_s": first - reqs["arrival_s"].to_numpy(),
        "tpot_s": np.where(out > 1, (finish - first) / np.maximum(out - 1, 1), np.nan),
        "e2e_s": finish - reqs["arrival_s"].to_numpy(),
        "preemptions": log.preemptions, "energy_j": log.energy_j,
        "status": pd.Categorical.from_codes(log.status, categories=list(STATUS)),
        "in_warmup": reqs["arrival_s"].to_numpy() < warmup,
    })
    ts = _timeseries(series, replicas, rows)
    reps = pd.DataFrame(rows).assign(
        energy_j=[r.device_energy_j for r in replicas],
        idle_energy_j=[r.idle_energy_j for r in replicas],
        in_system_x_s=[r.in_system_x_s for r in replicas])
    prov: dict[str, dict[str, dict[str, int]]] = {}
    for r, row in zip(replicas, rows, strict=True):
        p = prov.setdefault(row["service"], {"decode_steps": {}, "prefill_iterations": {}})
        for k, v in r.steps.items():
            p["decode_steps"][k] = p["decode_steps"].get(k, 0) + v
        for k, v in r.prefills.items():
            p["prefill_iterations"][k] = p["prefill_iterations"].get(k, 0) + v
    return SimResult(requests, ts, reps, prov)


def _timeseries(series: TimeSeries, replicas, rows) -> pd.DataFrame:
    w = series.bucket_s
    n_rep, n = series.energy_j.shape
    t0 = np.tile(np.arange(n) * w, n_rep)
    return pd.DataFrame({
        "replica": np.repeat([r.index for r in replicas], n),
        "service": np.repeat([row["service"] for row in rows], n),
        "t_start_s": t0, "t_end_s": t0 + w,
        "energy_j": series.energy_j.ravel(), "power_w": series.energy_j.ravel() / w,
        "busy_fraction": series.busy_s.ravel() / w,
        "batch_size": series.batch_x_s.ravel() / w,
        "kv_tokens": series.kv_x_s.ravel() / w,
        "kv_use": series.kv_x_s.ravel() / w / np.repeat([r.capacity for r in replicas], n),
        "queue_length": series.queue_x_s.ravel() / w,
    })
