"""Stage 1 of a run: translate a scenario into a RunModel of plain tables and records.

Placement of replicas on servers, GPU power limits after every budget, the training
pool, per-replica iteration-cost tables, the request stream, training-job specs and
cluster traces: everything the SimPy stage needs, decided before any event runs.
The schema-to-model translation lives here; the run stage reads only the RunModel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dcsim.catalog import Catalog, GpuSpec, ModelSpec, shapes
from dcsim.engine.build_scaling import ScalingModel, scaling_model
from dcsim.engine.cluster import ReplaySpec, load_replays
from dcsim.engine.context import Context
from dcsim.engine.costs import IterationCosts
from dcsim.engine.fleet import domains, place, training_pool
from dcsim.engine.jobs import JobSpec, fabric_capacity, job_specs
from dcsim.engine.kv_ports import KvPorts, kv_ports
from dcsim.errors import DcsimError, Problem
from dcsim.hardware.capping_spec import CappingController
from dcsim.hardware.placement import Domain, Server, budget_caps
from dcsim.profiles.store import ProfileStore
from dcsim.profiles.work import BF16, Layout, layout_of, weight_bytes_per_gpu
from dcsim.scenario import Scenario
from dcsim.workloads.requests import COLUMNS, service_requests
from dcsim.workloads.spec import Deployment, InferenceService, TrainingJob


@dataclass(frozen=True)
class ReplicaSpec:
    """One serving replica: its service, where it runs, its limit and its cost tables."""

    index: int
    service: int  # index into RunModel.services
    costs: IterationCosts  # shared by the replicas of a service under one limit
    kv_capacity: int  # tokens
    power_cap_w: float | None  # after budgets; None: the GPU's default limit
    capped_costs: IterationCosts | None = None  # under the power-capping controller's cap
    capped_cap_w: float | None = None  # its limit (None: the GPU's default)
    costs_for: Callable[[float | None], IterationCosts] | None = None  # tables at a limit
    host_blocks: int = 0  # KV blocks host memory holds (0: no host tier)
    block_transfer_s: float = 0.0  # seconds to move one block over the replica's PCIe
    pool: str = ""  # disaggregated serving: "prefill" or "decode" ("": both, colocated)


@dataclass(frozen=True)
class Placement:
    """Servers with their replicas, the training pool, and GPU limits after budgets."""

    servers: list[Server]
    pool: list[int]  # servers training jobs may use
    server_caps: np.ndarray  # per server, W per GPU
    domains: list[Domain]
    replica_caps: list[float | None]  # per replica at the start, None: the default limit
    where: list[Server]  # per replica
    where_index: list[int]  # per replica, its server's index
    off: np.ndarray  # servers switched off for the whole run
    capped_caps: np.ndarray | None = None  # per server, W per GPU, under the controller's cap


@dataclass(frozen=True)
class RunModel:
    """Everything the SimPy stage runs, as plain tables and frozen records."""

    scenario: Scenario
    context: Context
    services: tuple[InferenceService, ...]
    jobs: tuple[TrainingJob, ...]
    # workloads.requests.COLUMNS, service (index) and next_turn (the row of the session's
    # next turn when it arrives a think time after this one's answer; -1: none)
    requests: pd.DataFrame
    placement: Placement
    replicas: tuple[ReplicaSpec, ...]
    replica_rows: pd.DataFrame  # the replicas table's configuration columns
    routing_seeds: tuple[np.random.SeedSequence, ...]  # per service
    job_specs: tuple[JobSpec, ...]
    leaf: list[int]  # per server, the leaf switch it hangs off
    uplink_byte_s: np.ndarray  # per leaf
    replays: tuple[ReplaySpec, ...]
    storage_byte_s: tuple[float, float, float]  # file system: write, read, per client
    scalings: tuple[ScalingModel | None, ...] = ()  # per service (None: fixed replicas)
    kv_ports: KvPorts | None = None  # disaggregated pools' transfer ports (None: none)


def deployment_layout(d: Deployment, gpu: GpuSpec, path: str = "deployment") -> Layout:
    """Numerics and expert parallelism of a deployment on its GPU (work.layout_of)."""
    return layout_of(gpu, d.weights_dtype, d.kv_cache_dtype, d.ep, path)


def kv_capacity_tokens(svc: InferenceService, gpu: GpuSpec, model: ModelSpec) -> int:
    """KV-cache tokens of one replica: GPUs x (memory x utilisation - weights per GPU) / KV
    bytes per token (layers x cache elements per layer x bytes of the cache's type).

    Windowed layers are counted at full length (as an engine without a hybrid allocator
    reserves them), and the ep attention groups' caches as one pool."""
    d = svc.deployment
    lay = deployment_layout(d, gpu)
    per_gpu = gpu.memory_gb * 1e9 * d.gpu_memory_utilization - weight_bytes_per_gpu(
        model, d.tp, lay)
    return int(d.gpus_per_replica * per_gpu // shapes.kv_bytes_per_token(model, lay.kv_bytes))


def host_tier(svc: InferenceService, gpu: GpuSpec, model: ModelSpec) -> tuple[int, float]:
    """Host KV blocks of one replica (host_kv_gb / bytes per block) and the seconds one
    block takes over its PCIe links (bytes per block / (GPUs x the GPU's pcie_gbyte_s))."""
    d = svc.deployment
    if d.host_kv_gb <= 0:
        return 0, 0.0
    if gpu.pcie_gbyte_s is None:
        raise DcsimError(Problem(f"catalog.gpus.{gpu.id}.pcie_gbyte_s", None,
                                 "the GPU's host-link bandwidth, GB/s: host_kv_gb needs it"))
    block_bytes = shapes.kv_bytes_per_token(model, deployment_layout(d, gpu).kv_bytes) * (
        d.kv_block_tokens)
    return int(d.host_kv_gb * 1e9 // block_bytes), block_bytes / (
        d.gpus_per_replica * gpu.pcie_gbyte_s * 1e9)


def build(s: Scenario, ctx: Context) -> RunModel:
    """The RunModel of scenario `s`: placement, budgets, replicas, requests, jobs, traces."""
    services, jobs = split_workloads(s)
    sim = s.simulation
    # one seed stream per workload: requests (or failures), then routing (or servers)
    seeds = [seq.spawn(2) for seq in np.random.SeedSequence(sim.seed).spawn(len(s.workloads))]
    reqs = _requests(services, sim.duration_s, [seeds[i][0] for i in range(len(services))],
                     ctx)
    pl = placement(s, services, jobs, ctx.catalog)
    reps, rows, scalings = _replicas(services, reqs, pl, ctx)
    leaf, uplinks = fabric_capacity(s.fleet.network, pl.servers)
    fs = s.fleet.storage
    specs = job_specs(s, jobs, ctx.catalog, ctx.store, pl.servers, pl.server_caps,
                      seeds[len(services):])
    ports = kv_ports(services, [(r.service, r.pool) for r in reps], pl.where, pl.where_index,
                     leaf, uplinks.size, ctx.catalog)
    return RunModel(s, ctx, tuple(services), tuple(jobs), reqs, pl, tuple(reps), rows,
                    tuple(seeds[i][1] for i in range(len(services))), tuple(specs), leaf,
                    uplinks, tuple(load_replays(s, ctx.base_dir)), (
                        fs.write_bandwidth_gbyte_s * 1e9, fs.read_bandwidth_gbyte_s * 1e9,
                        fs.per_client_gbyte_s * 1e9), tuple(scalings), ports)


def split_workloads(s: Scenario) -> tuple[list[InferenceService], list[TrainingJob]]:
    """The scenario's inference services and training jobs, in file order."""
    services = [w for w in s.workloads if isinstance(w, InferenceService)]
    jobs = [w for w in s.workloads if isinstance(w, TrainingJob)]
    if not s.workloads:
        raise DcsimError(Problem("workloads", [], "at least one workload to simulate"))
    return services, jobs


def _requests(services: list[InferenceService], duration_s: float,
              seeds: list[np.random.SeedSequence], ctx: Context) -> pd.DataFrame:
    """Every service's requests in one table, by arrival time (ties by service); later
    turns of sessions, whose times the run decides, come last."""
    tables = [service_requests(svc, duration_s, seeds[i], ctx.base_dir).assign(service=i)
              for i, svc in enumerate(services)]
    empty = pd.DataFrame({c: [] for c in (*COLUMNS, "service")}).astype(
        {c: "int64" for c in (*COLUMNS, "service")
         if c not in ("arrival_s", "think_s", "max_queue_s")})
    reqs = pd.concat(tables, ignore_index=True) if tables else empty
    if not reqs["arrival_s"].is_monotonic_increasing:  # (one service is in order already)
        reqs = reqs.sort_values(["arrival_s", "service"], kind="stable", ignore_index=True,
                                na_position="last")
    reqs["next_turn"] = next_turns(reqs)  # (in place: the table is ours)
    return reqs


def next_turns(reqs: pd.DataFrame) -> np.ndarray:
    """Per row, the row of the same session's next turn if that turn arrives after this
    one's answer (its arrival_s is NaN); else -1."""
    out = np.full(len(reqs), -1, dtype=np.int64)
    rows = np.flatnonzero(reqs["session"].to_numpy() >= 0)
    if rows.size < 2:
        return out
    svc, ses, turn = (reqs[c].to_numpy()[rows] for c in ("service", "session", "turn"))
    order = rows[np.lexsort((turn, ses, svc))]
    a, b = order[:-1], order[1:]
    same = ((reqs["service"].to_numpy()[a] == reqs["service"].to_numpy()[b])
            & (reqs["session"].to_numpy()[a] == reqs["session"].to_numpy()[b])
            & np.isnan(reqs["arrival_s"].to_numpy()[b]))
    out[a[same]] = b[same]
    return out


def _replicas(services: list[InferenceService], reqs: pd.DataFrame, pl: Placement,
              ctx: Context) -> tuple[list[ReplicaSpec], pd.DataFrame, list[ScalingModel | None]]:
    """Per replica: cost tables under its limit, KV capacity, and its table row; per
    service, its scaling (None: fixed)."""
    out: list[ReplicaSpec] = []
    rows: list[dict[str, object]] = []
    scalings: list[ScalingModel | None] = []
    for i, svc in enumerate(services):
        mine = reqs[reqs["service"] == i]
        longest = int((mine["prompt_tokens"] + mine["output_tokens"]).max()) if len(mine) else 1
        for pool, view in svc.views():
            costs_for = _pool_replicas(view, i, pool, longest, pl, ctx, out, rows)
        if svc.disaggregated:  # colocated services' rows in a run with pools: ""
            for row in rows:
                row.setdefault("pool", "")
        scalings.append(None if svc.scaling is None else scaling_model(
            svc, i, range(len(out) - svc.deployment.replicas, len(out)), pl, costs_for,
            ctx.catalog.model(svc.model)))
    return out, pd.DataFrame(rows), scalings


def _pool_replicas(svc: InferenceService, i: int, pool: str, longest: int, pl: Placement,
                   ctx: Context, out: list[ReplicaSpec], rows: list[dict[str, object]]
                   ) -> _ServiceCosts:
    """Append the replicas of one pool (`svc` with that pool as its deployment) of
    service i to `out` and their table rows to `rows`; the pool's cost tables."""
    d = svc.deployment
    assert isinstance(d, Deployment)
    gpu, model = ctx.catalog.gpu(d.gpu), ctx.catalog.model(svc.model)
    lay = deployment_layout(d, gpu, f"{svc.name}.deployment{'.' + pool if pool else ''}")
    kv = kv_capacity_tokens(svc, gpu, model)
    host_blocks, block_s = host_tier(svc, gpu, model)
    costs_for = _ServiceCosts(ctx.store, gpu.id, model.id, d, lay, kv, longest)
    for _ in range(d.replicas):
        r = len(out)
        cap = pl.replica_caps[r]
        low_cap = None if pl.capped_caps is None else limit_after_budgets(
            cap, pl.where[r], float(pl.capped_caps[pl.where_index[r]]))
        low = None if pl.capped_caps is None else costs_for(low_cap)
        out.append(ReplicaSpec(r, i, costs_for(cap), kv, cap, low, low_cap, costs_for,
                               host_blocks, block_s, pool))
        rows.append(_replica_row(r, svc, gpu.id, model.id, pl, kv,
                                 host_blocks * d.kv_block_tokens, costs_for.slow[cap],
                                 costs_for(cap)))
        if pool:  # disaggregated serving: which pool the replica is in
            rows[-1]["pool"] = pool
        if pl.capped_caps is not None:  # the limit the controller caps it to, W
            rows[-1]["capped_limit_w"] = low_cap or gpu.power_limit_max_w
    return costs_for


class _ServiceCosts:
    """A service's cost tables per GPU limit (replicas under one limit share them) and the
    slowdown of each limit."""

    def __init__(self, store: ProfileStore, gpu: str, model: str, d: Deployment, lay: Layout,
                 kv: int, longest: int) -> None:
        self.store, self.gpu, self.model, self.d, self.lay = store, gpu, model, d, lay
        self.max_ctx = max(min(kv, longest + 1), 2)
        self.max_prompt = max(min(self.max_ctx, max(d.max_batched_tokens, longest)), 2)
        self.tables: dict[float | None, IterationCosts] = {}
        self.slow: dict[float | None, tuple[float, float]] = {}

    def __call__(self, cap: float | None) -> IterationCosts:
        if cap not in self.tables:
            d = self.d
            self.tables[cap] = IterationCosts(self.store, self.gpu, self.model, d.tp,
                                              d.max_num_seqs, self.max_prompt, self.max_ctx,
                                              cap, self.lay)
            self.slow[cap] = cap_slowdown(self.store, self.gpu, self.model, d.tp,
                                          min(16, d.max_num_seqs), cap, self.lay)
        return self.tables[cap]


def _replica_row(r: int, svc: InferenceService, gpu: str, model: str, pl: Placement, kv: int,
                 host_tokens: int, slow: tuple[float, float], costs: IterationCosts
                 ) -> dict[str, object]:
    d, x = svc.deployment, pl.where[r]
    return {"replica": r, "service": svc.name, "gpu": gpu, "model": model,
            "tp": d.tp, "ep": d.ep, "gpus": d.gpus_per_replica,
            "weights_dtype": d.weights_dtype,
            "requested_cap_w": d.power_cap_w, "power_cap_w": pl.replica_caps[r],
            "limit_w": pl.replica_caps[r] or x.gpu.power_limit_max_w,
            "default_limit_w": x.gpu.power_limit_max_w,
            "server": x.name, "rack": x.rack, "row": x.row,
            "kv_capacity_tokens": kv, "host_kv_tokens": host_tokens,
            "cap_slowdown_prefill": slow[0], "cap_slowdown_decode": slow[1],
            "decode_basis": costs.decode_cost.basis,
            "prefill_basis": costs.prefill_cost.basis}


def cap_slowdown(store: ProfileStore, gpu: str, model: str, tp: int, batch: int,
                 cap: float | None, lay: Layout = BF16) -> tuple[float, float]:
    """Latency under the limit over latency at the default limit: prefill of one
    2048-token prompt and a decode step of `batch` sequences at 2048 tokens of context."""
    if cap is None:
        return 1.0, 1.0
    q = store.query
    pre, dec = (q(gpu, model, ph, b, 2048, tp, cap, lay).latency_ms
                / q(gpu, model, ph, b, 2048, tp, layout=lay).latency_ms
                for ph, b in (("prefill", 1), ("decode", batch)))
    return pre, dec


def placement(s: Scenario, services: list[InferenceService], jobs: list[TrainingJob],
              cat: Catalog) -> Placement:
    """Servers with replicas, the training pool, GPU limits after budgets, per-replica caps."""
    _capping_fits(s)
    servers = place(s, services, cat)
    pool = training_pool(s, jobs, cat, servers)
    # budgets hold the highest limit a replica asks for over the run; it starts at its first
    views = [v for svc in services for _, v in svc.views()]
    caps_req = [highest_cap(v) for v in views for _ in range(v.deployment.replicas)]
    caps_start = [first_cap(v) for v in views for _ in range(v.deployment.replicas)]
    where: list[Server] = [servers[0]] * len(caps_req) if caps_req else []
    where_index = [0] * len(caps_req)
    for si, x in enumerate(servers):
        for r in x.replicas:
            where[r], where_index[r] = x, si
    requested = _requested_limits(servers, caps_req, jobs, cat)
    train_gpus = {job.gpu for job in jobs}
    parked = np.array([not x.replicas and x.gpu.id not in train_gpus for x in servers])
    off = off_servers(s, servers, jobs)
    doms = domains(s, servers)
    server_caps = budget_caps(servers, doms, requested, parked, off)
    capped = None
    if isinstance(s.fleet.power_capping, CappingController):
        # serving servers run at their own limits; the worst-case ones are what the
        # controller caps them to (training and parked servers keep them throughout)
        capped = server_caps
        server_caps = np.where([bool(x.replicas) for x in servers], requested, server_caps)
    replica_caps = [limit_after_budgets(cap, where[r], float(server_caps[where_index[r]]))
                    for r, cap in enumerate(caps_start)]
    return Placement(servers, pool, server_caps, doms, replica_caps, where, where_index, off,
                     capped)


def _capping_fits(s: Scenario) -> None:
    """The controller owns the limits at run time: a schedule that sets limits too is
    refused (which would win is not defined)."""
    if not isinstance(s.fleet.power_capping, CappingController):
        return
    for i, svc in enumerate(s.workloads):
        steps = getattr(getattr(svc, "scaling", None), "steps", None) or ()
        for k, st in enumerate(steps):
            if st.power_cap_w is not None:
                raise DcsimError(Problem(
                    f"workloads[{i}].scaling.steps[{k}].power_cap_w", st.power_cap_w,
                    "no scheduled power limit under fleet.power_capping kind 'controller' "
                    "(the controller sets the limits at run time; use kind 'static' to "
                    "schedule them)"))


def limit_after_budgets(cap: float | None, x: Server, server_cap_w: float) -> float | None:
    """A replica's GPU limit: the one asked for within its server's budget limit (None:
    the GPU's default, highest limit)."""
    limit = min(cap or x.gpu.power_limit_max_w, server_cap_w)
    return None if limit >= x.gpu.power_limit_max_w else float(limit)


def highest_cap(svc: InferenceService) -> float | None:
    """The highest limit the service's replicas ask for over the run (None: the GPU's)."""
    d = svc.deployment
    steps = getattr(svc.scaling, "steps", None)
    if not steps:
        return d.power_cap_w
    caps = [st.power_cap_w or d.power_cap_w for st in steps]
    return None if any(c is None for c in caps) else max(c for c in caps if c is not None)


def first_cap(svc: InferenceService) -> float | None:
    """The limit the service's replicas start under."""
    steps = getattr(svc.scaling, "steps", None)
    return (steps[0].power_cap_w if steps else None) or svc.deployment.power_cap_w


def _requested_limits(servers: list[Server], caps_req: list[float | None],
                      jobs: list[TrainingJob], cat: Catalog) -> np.ndarray:
    """Per server, the GPU limit its work asks for: the highest of its replicas', or for
    a training server the highest of the jobs of its GPU type (any of them may run there)."""
    job_limit: dict[str, float] = {}
    for job in jobs:
        lim = job.power_cap_w or cat.gpu(job.gpu).power_limit_max_w
        job_limit[job.gpu] = max(job_limit.get(job.gpu, 0.0), lim)
    requested = np.empty(len(servers))
    for si, x in enumerate(servers):
        own = [caps_req[r] or x.gpu.power_limit_max_w for r in x.replicas]
        if not x.replicas:
            own.append(job_limit.get(x.gpu.id, x.gpu.power_limit_max_w))
        requested[si] = max(own, default=x.gpu.power_limit_max_w)
    return requested


def off_servers(s: Scenario, servers: list[Server], jobs: list[TrainingJob]) -> np.ndarray:
    """Servers switched off for the whole run: no replica, no job of their GPU type could
    use them, and the fleet switches unused servers off."""
    if s.fleet.unused_servers != "switched_off":
        return np.zeros(len(servers), bool)
    train_gpus = {job.gpu for job in jobs}
    return np.array([not x.replicas and x.gpu.id not in train_gpus for x in servers])
