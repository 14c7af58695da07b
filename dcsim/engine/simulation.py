"""Build and run the SimPy model of a scenario; return tidy tables."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import simpy

from dcsim.catalog import Catalog, GpuSpec, ModelSpec, shapes
from dcsim.engine.cluster import replay_tables, start_replays
from dcsim.engine.costs import IterationCosts
from dcsim.engine.jobs import (
    build_fabric,
    checkpoints_table,
    failures_table,
    jobs_table,
    server_training_power,
    start_jobs,
)
from dcsim.engine.metrics import JOB_LEVELS, STATUS, RequestLog, TimeSeries
from dcsim.engine.replica import Replica, Seq
from dcsim.engine.router import Router
from dcsim.engine.scheduler import JobScheduler
from dcsim.engine.training import Shared
from dcsim.errors import DcsimError, Problem
from dcsim.hardware.facility import facility_rows
from dcsim.hardware.network import Fabric, switch_power_w
from dcsim.hardware.placement import (
    Domain,
    Server,
    budget_caps,
    idle_w,
    place,
    training_pool,
    worst_case_w,
)
from dcsim.hardware.power import bucket_seconds, domain_power
from dcsim.hardware.storage import SharedStorage
from dcsim.profiles.store import ProfileStore
from dcsim.references import scenario_catalog
from dcsim.scenario import Scenario
from dcsim.workloads.requests import service_requests
from dcsim.workloads.spec import InferenceService, TrainingJob

PROGRESS_TICKS = 200


@dataclass
class SimResult:
    requests: pd.DataFrame
    timeseries: pd.DataFrame
    replicas: pd.DataFrame  # one row per replica: config, placement, cap, energy totals
    power: pd.DataFrame  # per domain (gpu, server, rack, row, facility) and time bucket
    budgets: pd.DataFrame  # per rack / row / facility: budget and enforced GPU limit
    jobs: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per training job
    failures: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per job failure
    checkpoints: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per write
    cluster_pods: pd.DataFrame = field(default_factory=pd.DataFrame)  # replayed trace pods
    cluster: pd.DataFrame = field(default_factory=pd.DataFrame)  # replay metrics over time
    links: pd.DataFrame = field(default_factory=pd.DataFrame)  # leaf uplinks over time
    provenance: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)


def kv_capacity_tokens(svc: InferenceService, gpu: GpuSpec, model: ModelSpec) -> int:
    """KV-cache tokens of one replica: (tp x memory x utilisation - weights) / KV bytes per token."""
    d = svc.deployment
    free = d.tp * gpu.memory_gb * 1e9 * d.gpu_memory_utilization - shapes.weight_bytes(model)
    return int(free // shapes.kv_bytes_per_token(model))


def _split(s: Scenario) -> tuple[list[InferenceService], list[TrainingJob]]:
    services = [w for w in s.workloads if isinstance(w, InferenceService)]
    jobs = [w for w in s.workloads if isinstance(w, TrainingJob)]
    if not s.workloads:
        raise DcsimError(Problem("workloads", [], "at least one workload to simulate"))
    return services, jobs


@dataclass
class _Fleet:
    """What the services of one run share while they are built."""

    env: simpy.Environment
    catalog: Catalog
    store: ProfileStore
    log: RequestLog
    series: TimeSeries
    coalesce: bool
    caps: list[float | None] = field(default_factory=list)  # per replica, after budgets
    where: list[Server] = field(default_factory=list)  # per replica
    replicas: list[Replica] = field(default_factory=list)
    rows: list[dict[str, object]] = field(default_factory=list)

    def add_service(self, svc: InferenceService, reqs: pd.DataFrame,
                    rng: np.random.Generator) -> Router:
        d = svc.deployment
        gpu, model = self.catalog.gpu(d.gpu), self.catalog.model(svc.model)
        kv = kv_capacity_tokens(svc, gpu, model)
        longest = int((reqs["prompt_tokens"] + reqs["output_tokens"]).max()) if len(reqs) else 1
        max_ctx = max(min(kv, longest + 1), 2)
        max_prompt = max(min(max_ctx, max(d.max_batched_tokens, longest)), 2)
        shared: deque[Seq] | None = deque() if svc.routing == "central_queue" else None
        costs: dict[float | None, IterationCosts] = {}
        reps = []
        for j in range(d.replicas):
            index = len(self.replicas) + j
            cap = self.caps[index]
            if cap not in costs:  # replicas under one limit share their tables
                costs[cap] = IterationCosts(self.store, gpu.id, model.id, d.tp, d.max_num_seqs,
                                            max_prompt, max_ctx, cap)
            reps.append(Replica(self.env, index, costs[cap], d.max_num_seqs,
                                d.max_batched_tokens, d.chunked_prefill, kv, self.log,
                                self.series, self.coalesce, shared))
        slow = {cap: self._slowdown(gpu.id, model.id, d.tp, min(16, d.max_num_seqs), cap)
                for cap in costs}
        self.rows += [{"replica": r.index, "service": svc.name, "gpu": gpu.id, "model": model.id,
                       "tp": d.tp, "requested_cap_w": d.power_cap_w,
                       "power_cap_w": self.caps[r.index], "server": self.where[r.index].name,
                       "rack": self.where[r.index].rack, "row": self.where[r.index].row,
                       "kv_capacity_tokens": kv,
                       "cap_slowdown_prefill": slow[self.caps[r.index]][0],
                       "cap_slowdown_decode": slow[self.caps[r.index]][1]} for r in reps]
        self.replicas += reps
        return Router(svc.routing, reps, rng, self.log, shared)

    def _slowdown(self, gpu: str, model: str, tp: int, batch: int, cap: float | None
                  ) -> tuple[float, float]:
        """Latency under the replica's limit over latency at the default limit: prefill of one
        2048-token prompt and a decode step of `batch` sequences at 2048 tokens of context."""
        if cap is None:
            return 1.0, 1.0
        q = self.store.query
        return tuple(q(gpu, model, ph, b, 2048, tp, cap).latency_ms
                     / q(gpu, model, ph, b, 2048, tp).latency_ms
                     for ph, b in (("prefill", 1), ("decode", batch)))  # type: ignore[return-value]


def simulate(s: Scenario, base_dir: Path | None = None, store: ProfileStore | None = None,
             coalesce: bool = True, progress: Callable[[float], None] | None = None) -> SimResult:
    """Run the scenario's inference services for simulation.duration_s."""
    services, jobs = _split(s)
    base = base_dir or Path(".")
    cat = scenario_catalog(s)
    store = store or ProfileStore.from_files(
        cat, [p if Path(p).is_absolute() else base / p for p in s.profiles])
    sim = s.simulation
    # one seed stream per workload: requests, then routing
    seeds = [seq.spawn(2) for seq in np.random.SeedSequence(sim.seed).spawn(len(s.workloads))]
    tables = [service_requests(svc, sim.duration_s, seeds[i][0], base).assign(service=i)
              for i, svc in enumerate(services)]
    reqs = (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        {"arrival_s": [], "prompt_tokens": [], "output_tokens": [], "service": []},
    ).astype({"prompt_tokens": "int64", "output_tokens": "int64", "service": "int64"})
    ).sort_values(["arrival_s", "service"], kind="stable", ignore_index=True)
    env = simpy.Environment()
    n_rep = sum(svc.deployment.replicas for svc in services)
    servers, pool, server_caps, doms, replica_caps, where = _placement(s, services, jobs, cat)
    fleet = _Fleet(env, cat, store, RequestLog(len(reqs)),
                   TimeSeries(n_rep, sim.duration_s, sim.time_bucket_s), coalesce,
                   replica_caps, where)
    routers = [fleet.add_service(svc, reqs[reqs["service"] == i],
                                 np.random.default_rng(seeds[i][1]))
               for i, svc in enumerate(services)]
    job_series = TimeSeries(len(jobs), sim.duration_s, sim.time_bucket_s, JOB_LEVELS)
    fabric, leaf = build_fabric(env, s, servers, sim.duration_s, sim.time_bucket_s)
    sched = JobScheduler(env, servers, pool, leaf, s.fleet.training_scheduler, sim.duration_s,
                         sim.time_bucket_s)
    storage = SharedStorage(env, s.fleet.storage, sim.time_bucket_s, fleet.series.n)
    sh = Shared(env, sched, storage, fabric, leaf, job_series)
    runs = start_jobs(sh, s, jobs, cat, store, servers, server_caps, seeds, len(services))
    replays = start_replays(env, s, base)
    _Arrivals(env, reqs, routers)
    if progress is not None:
        env.process(_ticks(env, sim.duration_s, progress))
    env.run(until=sim.duration_s)
    for rep in fleet.replicas:
        rep.finish(env.now)
    result = _collect(reqs, [svc.name for svc in services], fleet, sim.warmup_s)
    result.jobs = jobs_table(runs, sim.duration_s)
    result.failures = failures_table(runs)
    result.checkpoints = checkpoints_table(runs)
    result.links = pd.concat([fabric.links_table(), storage.links_table(
        sim.duration_s)], ignore_index=True) if jobs else pd.DataFrame()
    result.cluster_pods, result.cluster = replay_tables(replays)
    if jobs:
        result.cluster = pd.concat([result.cluster, sched.series().assign(
            workload="training jobs")], ignore_index=True)
    dt = bucket_seconds(fleet.series.n, sim.time_bucket_s, sim.duration_s)
    off = s.fleet.unused_servers == "switched_off"
    train_w, busy, on = server_training_power(sched, job_series, servers, dt,
                                              sim.duration_s, off)
    power, it_w = domain_power(servers, doms, fleet.series.array("energy_j"), dt, server_caps,
                               train_w if jobs or off else None, on)
    net_w = _network_power(s, servers, leaf, fabric, busy, dt)
    fac = power["domain"] == "facility"
    power.loc[fac, "power_w"] = power.loc[fac, "power_w"].to_numpy() + net_w
    power = pd.concat([power, pd.DataFrame({
        "domain": "network", "name": "leaf-spine", "t_start_s": np.cumsum(dt) - dt,
        "t_end_s": np.cumsum(dt), "power_w": net_w, "cap_w": np.nan, "throttled": False})],
        ignore_index=True)
    it_w = it_w + net_w
    capacity = (s.facility.power_budget_kw * 1e3 if s.facility.power_budget_kw
                else sum(x.spec.max_power_w for x in servers))
    result.power = facility_rows(power, it_w, dt, s.facility, base, capacity)
    result.budgets = _budget_table(doms, servers, server_caps, off_servers(s, servers, jobs))
    return result


def _network_power(s: Scenario, servers: list[Server], leaf: list[int], fabric: Fabric,
                   busy: np.ndarray, dt: np.ndarray) -> np.ndarray:
    """Switch-port power per bucket; a server's ports are busy while its job trains."""
    util = fabric.mean_load() / np.maximum(fabric.capacity[:, None], 1e-9)
    net = s.fleet.network
    return switch_power_w([x.spec.nics for x in servers], leaf, busy, util,
                          net.oversubscription, net.switch_port_idle_w, net.switch_port_power_w)


def _placement(s: Scenario, services: list[InferenceService], jobs: list[TrainingJob],
               cat: Catalog
               ) -> tuple[list[Server], list[int], np.ndarray, list[Domain], list[float | None],
                          list[Server]]:
    """Servers with replicas, the training pool, GPU limits after budgets, per-replica caps."""
    servers = place(s, services, cat)
    pool = training_pool(s, jobs, cat, servers)
    # a training server may host any job of its GPU type: budget it for the highest limit
    job_limit = {}
    for job in jobs:
        lim = job.power_cap_w or cat.gpu(job.gpu).power_limit_max_w
        job_limit[job.gpu] = max(job_limit.get(job.gpu, 0.0), lim)
    caps_req = [svc.deployment.power_cap_w for svc in services
                for _ in range(svc.deployment.replicas)]
    where: list[Server] = [servers[0]] * len(caps_req) if caps_req else []
    where_index = [0] * len(caps_req)
    requested = np.empty(len(servers))
    for si, x in enumerate(servers):
        for r in x.replicas:
            where[r], where_index[r] = x, si
        own = [caps_req[r] or x.gpu.power_limit_max_w for r in x.replicas]
        if not x.replicas:
            own.append(job_limit.get(x.gpu.id, x.gpu.power_limit_max_w))
        requested[si] = max(own, default=x.gpu.power_limit_max_w)
    train_gpus = {job.gpu for job in jobs}
    parked = np.array([not x.replicas and x.gpu.id not in train_gpus for x in servers])
    server_caps, doms = budget_caps(s, servers, requested, parked,
                                    off_servers(s, servers, jobs))
    replica_caps: list[float | None] = []
    for r, cap in enumerate(caps_req):
        x = where[r]
        limit = min(cap or x.gpu.power_limit_max_w, server_caps[where_index[r]])
        replica_caps.append(None if limit >= x.gpu.power_limit_max_w else float(limit))
    return servers, pool, server_caps, doms, replica_caps, where


def off_servers(s: Scenario, servers: list[Server], jobs: list[TrainingJob]) -> np.ndarray:
    """Servers switched off for the whole run: no replica, no job of their GPU type could
    use them, and the fleet switches unused servers off."""
    if s.fleet.unused_servers != "switched_off":
        return np.zeros(len(servers), bool)
    train_gpus = {job.gpu for job in jobs}
    return np.array([not x.replicas and x.gpu.id not in train_gpus for x in servers])


def _budget_table(doms: list[Domain], servers: list[Server], caps: np.ndarray,
                  off: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame([{
        "domain": d.kind, "name": d.name, "servers": len(d.servers),
        "budget_w": np.nan if d.budget_w is None else d.budget_w,
        "worst_case_w": worst_case_w(servers, tuple(i for i in d.servers if not off[i]), caps),
        "idle_w": idle_w(servers, d.servers),
        "gpus": sum(servers[i].spec.gpus_per_server for i in d.servers),
        "gpu_limit_w": float(caps[list(d.servers)].min()) if d.servers else np.nan,
        "throttled": any(caps[i] < servers[i].gpu.power_limit_max_w for i in d.servers),
    } for d in doms])


class _Arrivals:
    """Routes each request at its arrival time: one timeout per distinct arrival time,
    with a callback (cheaper than resuming a generator process per request)."""

    def __init__(self, env: simpy.Environment, reqs: pd.DataFrame, routers: list[Router]
                 ) -> None:
        self.env, self.routers, self.i = env, routers, 0
        self.times = reqs["arrival_s"].tolist()
        self.prompts, self.outputs = reqs["prompt_tokens"].tolist(), reqs["output_tokens"].tolist()
        self.svcs = reqs["service"].tolist()
        env.timeout(0).callbacks.append(self._fire)  # after the setup events of time 0

    def _fire(self, _ev: simpy.Event) -> None:
        env, times, i, n = self.env, self.times, self.i, len(self.times)
        while i < n and times[i] <= env.now:
            self.routers[self.svcs[i]].route(Seq(i, self.prompts[i], self.outputs[i]))
            i += 1
        self.i = i
        if i < n:
            env.timeout(times[i] - env.now).callbacks.append(self._fire)


def _ticks(env: simpy.Environment, duration: float, progress: Callable[[float], None]
           ) -> Generator[simpy.Event, None, None]:
    step = duration / PROGRESS_TICKS
    while True:
        progress(env.now)
        yield env.timeout(step)


def _collect(reqs: pd.DataFrame, names: list[str], fleet: _Fleet, warmup: float) -> SimResult:
    log, replicas = fleet.log, fleet.replicas
    first, finish = log.first_token_s, log.finish_s
    arrival = reqs["arrival_s"].to_numpy()
    out = reqs["output_tokens"].to_numpy()
    requests = pd.DataFrame({
        "service": pd.Categorical.from_codes(reqs["service"].to_numpy(), categories=names),
        "replica": log.replica, "arrival_s": arrival,
        "first_token_s": first, "finish_s": finish,
        "prompt_tokens": reqs["prompt_tokens"].to_numpy(), "output_tokens": out,
        "ttft_s": first - arrival,
        "tpot_s": np.where(out > 1, (finish - first) / np.maximum(out - 1, 1), np.nan),
        "e2e_s": finish - arrival,
        "preemptions": log.preemptions, "energy_j": log.energy_j,
        "status": pd.Categorical.from_codes(log.status, categories=list(STATUS)),
        "in_warmup": arrival < warmup,
    })
    reps = pd.DataFrame(fleet.rows).assign(
        energy_j=[r.device_energy_j for r in replicas],
        idle_energy_j=[r.idle_energy_j for r in replicas],
        in_system_x_s=[r.in_system_x_s for r in replicas])
    prov: dict[str, dict[str, dict[str, int]]] = {}
    for r, row in zip(replicas, fleet.rows, strict=True):
        p = prov.setdefault(str(row["service"]), {"decode_steps": {}, "prefill_iterations": {}})
        for k, v in r.steps.items():
            p["decode_steps"][k] = p["decode_steps"].get(k, 0) + v
        for k, v in r.prefills.items():
            p["prefill_iterations"][k] = p["prefill_iterations"].get(k, 0) + v
    return SimResult(requests, _timeseries(fleet), reps, pd.DataFrame(), pd.DataFrame(),
                     provenance=prov)


def _timeseries(fleet: _Fleet) -> pd.DataFrame:
    series, replicas, rows = fleet.series, fleet.replicas, fleet.rows
    w = series.bucket_s
    energy = series.array("energy_j")
    n_rep, n = energy.shape
    t0 = np.tile(np.arange(n) * w, n_rep)
    return pd.DataFrame({
        "replica": np.repeat([r.index for r in replicas], n),
        "service": np.repeat([row["service"] for row in rows], n),
        "t_start_s": t0, "t_end_s": t0 + w,
        "energy_j": energy.ravel(), "power_w": energy.ravel() / w,
        "busy_fraction": series.array("busy_s").ravel() / w,
        "batch_size": series.array("batch_x_s").ravel() / w,
        "kv_tokens": series.array("kv_x_s").ravel() / w,
        "kv_use": series.array("kv_x_s").ravel() / w
        / np.repeat([r.capacity for r in replicas], n),
        "queue_length": series.array("queue_x_s").ravel() / w,
    })
