"""Stage 2 of a run: the SimPy simulation of a RunModel, and nothing else.

Replicas serve the request stream through their routers, training jobs queue, compute,
checkpoint and fail, cluster traces replay; observers fill per-request slots and time
buckets. The result is a RunRecord of plain records, which the accounting stage turns
into power, energy, carbon and cost.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import simpy

from dcsim.engine.admission import Deadlines, PriorityWaiting
from dcsim.engine.build import RunModel
from dcsim.engine.capping import Capper, start_capping
from dcsim.engine.cluster import replay_tables, start_replays
from dcsim.engine.disagg import Disaggregation, KvLog, Transfers
from dcsim.engine.host_tier import HostKV
from dcsim.engine.jobs import (
    PoolRecord,
    checkpoints_table,
    failures_table,
    jobs_table,
    pool_record,
    start_job,
)
from dcsim.engine.kv_ports import KvPorts, nic_byte_s_per_gpu
from dcsim.engine.metrics import JOB_LEVELS, RequestLog, TimeSeries
from dcsim.engine.replica import Replica
from dcsim.engine.router import Router
from dcsim.engine.scaler import start_scaling
from dcsim.engine.scaling import Log, scaling_table
from dcsim.engine.scheduler import JobScheduler
from dcsim.engine.sequence import Seq, session_key
from dcsim.engine.training import Shared
from dcsim.hardware.network import Fabric
from dcsim.hardware.storage import SharedStorage
from dcsim.workloads.spec import Deployment

PROGRESS_TICKS = 200


@dataclass(frozen=True)
class RunRecord:
    """What happened in the simulation: per request, per replica, per job, per bucket."""

    log: RequestLog  # per request: replica, first token, finish, preemptions, energy, status
    series: TimeSeries  # per replica and bucket (SERVING_LEVELS)
    job_series: TimeSeries  # per training job and bucket (JOB_LEVELS)
    replica_totals: pd.DataFrame  # per replica: energy_j, idle_energy_j, in_system_x_s
    provenance: dict[str, dict[str, dict[str, int]]]  # per service: look-ups by provenance
    jobs: pd.DataFrame
    failures: pd.DataFrame
    checkpoints: pd.DataFrame
    pool: PoolRecord
    uplink_load_byte_s: np.ndarray  # per leaf uplink and bucket, mean
    links: pd.DataFrame
    cluster_pods: pd.DataFrame
    cluster: pd.DataFrame
    events: int  # SimPy events scheduled (the engine's cost: it should grow with requests)
    scaling: pd.DataFrame = field(default_factory=pd.DataFrame)  # what scalers did
    server_on: np.ndarray | None = None  # scaled services' servers: share of each bucket on
    capper: Capper | None = None  # the power-capping controller, if one ran
    kv: KvLog | None = None  # disaggregated services' KV moves per request (None: none)
    kv_port_use: np.ndarray | None = None  # per server and bucket, its NIC ports' KV use


def run(model: RunModel, coalesce: bool = True,
        progress: Callable[[float], None] | None = None,
        trace_power: bool = False) -> RunRecord:
    """Simulate the model for simulation.duration_s; `coalesce=False` runs one event per
    decode step (a check of the fast path); `progress` is called with the clock;
    `trace_power` keeps every metered draw of the power-capping controller (checks)."""
    sim = model.scenario.simulation
    env = simpy.Environment()
    log = RequestLog(len(model.requests), model.requests["arrival_s"].to_numpy())
    series = TimeSeries(len(model.replicas), sim.duration_s, sim.time_bucket_s)
    job_series = TimeSeries(len(model.jobs), sim.duration_s, sim.time_bucket_s, JOB_LEVELS)
    ports = model.kv_ports
    fabric = Fabric(model.uplink_byte_s, lambda: env.now, sim.time_bucket_s, sim.duration_s,
                    ports.links if ports is not None else ())
    kv = KvLog(len(model.requests)) if ports is not None else None
    transfers = Transfers(env, fabric) if ports is not None else None
    replicas, routers = _start_services(env, model, log, series, coalesce, transfers, kv)
    pl = model.placement
    sched = JobScheduler(env, pl.servers, pl.pool, model.leaf,
                         model.scenario.fleet.training_scheduler, sim.duration_s,
                         sim.time_bucket_s)
    storage = SharedStorage(env, *model.storage_byte_s, sim.time_bucket_s, series.n)
    sh = Shared(env, sched, storage, fabric, model.leaf, job_series)
    sched.hold_spares({job.gpu for job in model.jobs})
    runs = [(start_job(sh, spec), spec) for spec in model.job_specs]
    replays = start_replays(env, model.replays, sim.duration_s, sim.time_bucket_s)
    capper = start_capping(env, model, replicas, trace_power)
    scale_log = Log()
    switch = start_scaling(env, model, replicas, routers, storage, scale_log,
                           None if capper is None else capper.costs_now)
    arrivals = _Arrivals(env, model.requests, routers, log, sim.duration_s)
    if arrivals.next_turn is not None:  # closed-loop sessions: answers start next turns
        for rep in replicas:
            rep.on_finish = arrivals.finished
    if progress is not None:
        env.process(_ticks(env, sim.duration_s, progress))
    env.run(until=sim.duration_s)
    events = next(env._eid)  # SimPy's event counter (simpy is pinned below 5)
    for rep in replicas:
        rep.finish(env.now)
        rep.close_up_time(env.now)
    for proc, _ in runs:
        proc.finish(sim.duration_s)
    pods, cluster = replay_tables(replays)
    if model.jobs:
        cluster = pd.concat([cluster, sched.series().assign(workload="training jobs")],
                            ignore_index=True)
    links = pd.concat([fabric.links_table(), storage.links_table(sim.duration_s)],
                      ignore_index=True) if model.jobs or switch or ports else pd.DataFrame()
    on = None if switch is None else switch.on_share(len(pl.servers), sim.time_bucket_s,
                                                      series.n, sim.duration_s)
    load = fabric.mean_load()
    return RunRecord(log, series, job_series, _replica_totals(replicas),
                     _provenance(model, replicas), jobs_table(runs, sim.duration_s),
                     failures_table(runs), checkpoints_table(runs),
                     pool_record(sched, sim.duration_s), load[:fabric.uplinks], links, pods,
                     cluster, events, scaling_table(model, scale_log), on, capper, kv,
                     None if ports is None else _port_use(model, ports, load))


def _port_use(model: RunModel, ports: KvPorts, load: np.ndarray) -> np.ndarray:
    """Per server and bucket, the share of its NICs' line rate KV transfers used (sent
    plus received over twice the line rate: the ports are full duplex)."""
    servers = model.placement.servers
    use = np.zeros((len(servers), load.shape[1]))
    for r, link in ports.nic.items():
        use[ports.server[r]] += load[link]
    line = np.array([2 * nic_byte_s_per_gpu(x.spec) * x.spec.gpus_per_server for x in servers])
    return np.clip(use / np.maximum(line, 1e-9)[:, None], 0.0, 1.0)


def _start_services(env: simpy.Environment, model: RunModel, log: RequestLog,
                    series: TimeSeries, coalesce: bool, transfers: Transfers | None,
                    kv: KvLog | None) -> tuple[list[Replica], list[Router | Disaggregation]]:
    """Every replica, and per service its router over its replicas (a disaggregated
    service: a router per pool, joined by a Disaggregation that takes its arrivals)."""
    replicas: list[Replica] = []
    routers: list[Router | Disaggregation] = []
    reqs = model.requests
    limited = bool(reqs["max_queue_s"].notna().any())
    deadlines = Deadlines(env, log) if limited else None
    limits = reqs["max_queue_s"].tolist() if limited else None
    for i, svc in enumerate(model.services):
        levels = tuple(sorted({c.priority for c in svc.classes or ()}))
        pools: dict[str, Router] = {}
        for pool, view in svc.views():
            d = view.deployment
            assert isinstance(d, Deployment)
            routing = svc.routing if pool != "decode" else svc.deployment.decode_routing
            shared: deque[Seq] | PriorityWaiting | None = None
            if routing == "central_queue":
                shared = PriorityWaiting(levels) if len(levels) > 1 else deque()
            mine = [Replica(env, r.index, r.costs, d.max_num_seqs, d.max_batched_tokens,
                            d.chunked_prefill, r.kv_capacity, log, series, coalesce, shared,
                            d.scheduler == "prefill_first", d.kv_block_tokens,
                            d.prefix_caching, levels, HostKV(r.host_blocks,
                                                             r.block_transfer_s)
                            if r.host_blocks else None, d.preemption == "swap")
                    for r in model.replicas if r.service == i and r.pool == pool]
            replicas += mine
            # (a decode pool refuses nothing: a prefilled request always finds a queue)
            router = Router(routing, mine, np.random.default_rng(model.routing_seeds[i]),
                            log, shared, svc.affinity_slack_requests,
                            None if pool == "decode" else d.max_waiting_requests)
            if pool != "decode":
                router.wait_limits, router.deadlines = limits, deadlines
            pools[pool] = router
        if not svc.disaggregated:
            routers.append(pools[""])
            continue
        assert model.kv_ports is not None and transfers is not None and kv is not None
        mine = (reqs["service"] == i).to_numpy()
        outputs = np.where(mine, reqs["output_tokens"].to_numpy(), 0).tolist()
        routers.append(Disaggregation(env, pools["prefill"], pools["decode"], transfers,
                                      model.kv_ports, model.kv_ports.bytes_per_token[i],
                                      outputs, log, kv))
    return replicas, routers


def _replica_totals(replicas: list[Replica]) -> pd.DataFrame:
    return pd.DataFrame({"energy_j": [r.device_energy_j for r in replicas],
                         "idle_energy_j": [r.idle_energy_j for r in replicas],
                         "in_system_x_s": [r.in_system_x_s for r in replicas],
                         "kv_transfer_s": [r.transfer_s for r in replicas],
                         "busy_s": [sum(r.series.busy_s[r.index]) for r in replicas],
                         "in_use_s": [r.up_s for r in replicas],
                         "cold_start_energy_j": [r.loading_j for r in replicas]})


def _provenance(model: RunModel, replicas: list[Replica]) -> dict[str, dict[str, dict[str, int]]]:
    """Per service: decode steps and prefill iterations by provenance of their cost."""
    prov: dict[str, dict[str, dict[str, int]]] = {}
    for r, spec in zip(replicas, model.replicas, strict=True):
        name = model.services[spec.service].name
        p = prov.setdefault(name, {"decode_steps": {}, "prefill_iterations": {}})
        for k, v in r.steps.items():
            p["decode_steps"][k] = p["decode_steps"].get(k, 0) + v
        for k, v in r.prefills.items():
            p["prefill_iterations"][k] = p["prefill_iterations"].get(k, 0) + v
    return prov


class _Arrivals:
    """Routes each request at its arrival time: one timeout per distinct arrival time,
    with a callback (cheaper than resuming a generator process per request). A
    session's later turn arrives its think time after the previous turn's answer
    (`finished`, a replica's hook), if that is before the end of the run."""

    def __init__(self, env: simpy.Environment, reqs: pd.DataFrame, routers: list[Router],
                 log: RequestLog, duration_s: float) -> None:
        self.env, self.routers, self.log, self.end, self.i = env, routers, log, duration_s, 0
        known = int(reqs["arrival_s"].notna().sum())  # later turns come last, unknown
        self.times = reqs["arrival_s"].iloc[:known].tolist()
        self.prompts, self.outputs = reqs["prompt_tokens"].tolist(), reqs["output_tokens"].tolist()
        self.svcs = reqs["service"].tolist()
        # prefixes, sessions and priorities, if any request has one (else Seq's defaults,
        # on the hot path)
        shared = bool((reqs["prefix_group"] >= 0).any() | (reqs["session"] >= 0).any()
                      | (reqs["priority"] != 0).any())
        self.groups = reqs["prefix_group"].tolist() if shared else None
        rich = reqs if shared else reqs.iloc[:0]
        self.priorities = rich["priority"].tolist()
        self.prefixes = rich["prefix_tokens"].tolist()
        self.sessions = [session_key(x) if x >= 0 else -1 for x in rich["session"].tolist()]
        later = bool((reqs["next_turn"] >= 0).any())
        self.next_turn = reqs["next_turn"].tolist() if later else None
        self.think = reqs["think_s"].tolist() if later else []
        env.timeout(0).callbacks.append(self._fire)  # after the setup events of time 0

    def _seq(self, i: int) -> Seq:
        if self.groups is None:
            return Seq(i, self.prompts[i], self.outputs[i])
        return Seq(i, self.prompts[i], self.outputs[i], self.groups[i], self.prefixes[i],
                   self.sessions[i], self.priorities[i])

    def _fire(self, _ev: simpy.Event) -> None:
        env, times, i, n = self.env, self.times, self.i, len(self.times)
        groups, prompts, outputs = self.groups, self.prompts, self.outputs
        while i < n and times[i] <= env.now:
            seq = Seq(i, prompts[i], outputs[i]) if groups is None else self._seq(i)
            self.routers[self.svcs[i]].route(seq)
            i += 1
        self.i = i
        if i < n:
            env.timeout(times[i] - env.now).callbacks.append(self._fire)

    def finished(self, rid: int, now: float) -> None:
        """Request `rid` finished at `now`: its session's next turn, if any, is due a think
        time later."""
        assert self.next_turn is not None
        nxt = self.next_turn[rid]
        if nxt >= 0 and now + self.think[nxt] < self.end:
            self.log.arrival_s[nxt] = now + self.think[nxt]
            self.env.timeout(self.think[nxt], nxt).callbacks.append(self._turn)

    def _turn(self, ev: simpy.Event) -> None:
        i = ev.value
        self.routers[self.svcs[i]].route(self._seq(i))


def _ticks(env: simpy.Environment, duration: float, progress: Callable[[float], None]
           ) -> Generator[simpy.Event, None, None]:
    step = duration / PROGRESS_TICKS
    while True:
        progress(env.now)
        yield env.timeout(step)
