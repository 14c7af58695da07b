"""Queue and gang placement of the scenario's training jobs on whole servers.

A job waits until servers with enough GPUs of its type are free, then holds them
until it ends. Policies: FIFO (a blocked head holds the line), priority (higher
first, then FIFO), and EASY backfill: the first blocked job gets a reservation at
the earliest time enough GPUs free up (running jobs end at their estimates) and a
later job may start now if it ends before that time or only uses GPUs the
reservation leaves over.

Placement "topology" keeps a gang in as few leaves (then racks) as possible: the
best-fit leaf that holds the whole job, otherwise the fullest leaves first.

A failed server leaves its job, is out of service for the repair time, then comes
back as a spare (if the spare pool is short) or a free server. The job continues
on a spare, else a free server, else it waits for a repair; these replacements go
ahead of the queue.

Metrics, integrated over time: GPU allocation, jobs waiting, servers down, and
fragmentation = share of free GPUs outside the leaf with the most free GPUs (0
when free capacity sits in one leaf, so a new gang need not span leaves).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy

from dcsim.engine.gang import queue_order, schedule_pass
from dcsim.engine.metrics import LevelIntegral
from dcsim.hardware.placement import Server
from dcsim.scenario import TrainingScheduler


@dataclass
class Ask:
    """A job's request for servers: GPU type and count, priority, submission time, run-time
    estimate for backfill, and the event that hands it the servers."""

    job: int
    gpu: str
    gpus: int
    priority: int
    submit_s: float
    estimate_s: float  # run time without failures, for backfill reservations
    event: simpy.Event
    racks: frozenset[str] | None = None  # where the job may start (None: anywhere)


@dataclass
class _Reservation:
    """EASY backfill's hold for the first blocked job: its GPU type, when it can start,
    and the GPUs of that type left over then (backfilled jobs may use them)."""

    gpu: str
    time_s: float
    extra_gpus: int


class JobScheduler:
    """Queue and gang placement of training jobs on whole servers, failures and repairs (see
    the module docstring)."""

    def __init__(self, env: simpy.Environment, servers: list[Server], pool: list[int],
                 leaf: list[int], spec: TrainingScheduler, duration_s: float,
                 bucket_s: float) -> None:
        self.env, self.servers, self.leaf, self.spec = env, servers, leaf, spec
        self.pool = pool
        self.free: set[int] = set(pool)
        self.spares: dict[str, set[int]] = {}
        self.down: set[int] = set()
        self.queue: list[Ask] = []
        self.replacements: list[tuple[int, str, int, simpy.Event]] = []  # job, gpu, GPUs
        self.running: dict[int, tuple[float, str, int]] = {}  # job -> (estimated end, gpu, GPUs)
        self.outages: list[tuple[int, float, float]] = []  # server, t0, t1 (repaired)
        self.held: dict[int, dict[int, int]] = {}  # job -> {server: GPUs it uses there}
        self.allocs: list[list[float]] = []  # [job, server, GPUs used, t0, t1]
        self.open: dict[tuple[int, int], int] = {}  # (job, server) -> index into allocs
        self.down_since: dict[int, float] = {}  # servers under repair now
        self.total_gpus = sum(servers[i].spec.gpus_per_server for i in pool)
        self.bucket_s, self.duration_s = bucket_s, duration_s
        self.levels = LevelIntegral(("gpu_allocation", "queue_length", "servers_down",
                                     "fragmentation"), duration_s, bucket_s)

    def hold_spares(self, gpus: set[str]) -> None:
        """Set aside spec.spare_servers servers of each GPU type (the last in fleet order)."""
        for g in sorted(gpus):
            mine = sorted(i for i in self.free if self.servers[i].gpu.id == g)
            keep = mine[len(mine) - min(self.spec.spare_servers, len(mine)):]
            self.spares[g] = set(keep)
            self.free -= self.spares[g]

    # -- requests from jobs ---------------------------------------------------------
    def request(self, ask: Ask) -> simpy.Event:
        """Queue a job's ask; its event fires with the servers when it starts."""
        self._observe()
        self.queue.append(ask)
        self._schedule()
        return ask.event

    def release(self, job: int) -> None:
        """A job ended: free its servers and schedule the queue again."""
        self._observe()
        for i in list(self.held.pop(job, {})):
            self._close(job, i)
            self.free.add(i)
        self.running.pop(job, None)
        self._schedule()

    def fail(self, job: int, server: int, repair_s: float) -> simpy.Event:
        """Take `server` from the job for repair; the event gives the job its replacement."""
        self._observe()
        gpus = self.held[job].pop(server)
        self._close(job, server)
        self.down.add(server)
        self.down_since[server] = self.env.now
        self.env.process(self._repair(server, repair_s))
        ev = self.env.event()
        self.replacements.append((job, self.servers[server].gpu.id, gpus, ev))
        self._serve_replacements()
        return ev

    def _repair(self, server: int, repair_s: float) -> Generator[simpy.Event, None, None]:
        yield self.env.timeout(repair_s)
        self._observe()
        self.down.discard(server)
        self.outages.append((server, self.down_since.pop(server), self.env.now))
        g = self.servers[server].gpu.id
        spares = self.spares.setdefault(g, set())
        (spares if len(spares) < self.spec.spare_servers else self.free).add(server)
        self._schedule()

    # -- placement ------------------------------------------------------------------
    def _gpus(self, i: int) -> int:
        return self.servers[i].spec.gpus_per_server

    def _pick(self, gpu: str, need: int, racks: frozenset[str] | None = None
              ) -> list[int] | None:
        cand = sorted(i for i in self.free if self.servers[i].gpu.id == gpu
                      and (racks is None or self.servers[i].rack in racks))
        if sum(self._gpus(i) for i in cand) < need:
            return None
        if self.spec.placement == "first_fit":
            return self._take(cand, need)
        by_leaf: dict[int, list[int]] = {}
        for i in cand:
            by_leaf.setdefault(self.leaf[i], []).append(i)
        out: list[int] = []
        for group in self._groups(by_leaf, need):
            by_rack: dict[str, list[int]] = {}
            for i in group:
                by_rack.setdefault(self.servers[i].rack, []).append(i)
            left = need - sum(self._gpus(i) for i in out)
            for rack in self._groups(by_rack, left):
                out += self._take(rack, need - sum(self._gpus(i) for i in out))
        return out

    def _groups(self, groups: dict, need: int) -> list[list[int]]:  # type: ignore[type-arg]
        """Best-fit group that holds `need` GPUs alone; otherwise the largest groups first."""
        size = {k: sum(self._gpus(i) for i in v) for k, v in groups.items()}
        fit = [k for k in groups if size[k] >= need]
        if fit:
            return [groups[min(fit, key=lambda k: (size[k], str(k)))]]
        order = sorted(groups, key=lambda k: (-size[k], str(k)))
        out, got = [], 0
        for k in order:
            if got >= need:
                break
            out.append(groups[k])
            got += size[k]
        return out

    def _take(self, servers: list[int], need: int) -> list[int]:
        out, got = [], 0
        for i in servers:
            if got >= need:
                break
            out.append(i)
            got += self._gpus(i)
        return out

    # -- the queue ------------------------------------------------------------------
    def _schedule(self) -> None:
        self._serve_replacements()
        order = queue_order(self.queue, self.spec.policy,
                            lambda a: (-a.priority, a.submit_s, a.job))
        schedule_pass(order, self.spec.policy, self._fit, self._start, self._reservation,
                      self._backfill)

    def _fit(self, ask: Ask) -> list[int] | None:
        return self._pick(ask.gpu, ask.gpus, ask.racks)

    def _backfill(self, ask: Ask, held: _Reservation) -> list[int] | None:
        """Servers for `ask` if it ends before the reservation, uses another GPU type, or
        fits in the GPUs the reservation leaves over (which it then takes)."""
        picked = self._fit(ask)
        if picked is None:
            return None
        if ask.gpu != held.gpu or self.env.now + ask.estimate_s <= held.time_s:
            return picked
        gpus = sum(self._gpus(i) for i in picked)
        if gpus > held.extra_gpus:
            return None
        held.extra_gpus -= gpus
        return picked

    def _reservation(self, ask: Ask) -> _Reservation:
        """Earliest time `ask` fits if running jobs end at their estimates; GPUs left then."""
        have = sum(self._gpus(i) for i in self.free if self.servers[i].gpu.id == ask.gpu)
        ends = sorted((max(end, self.env.now), n) for end, g, n in self.running.values()
                      if g == ask.gpu)
        for end, n in ends:
            have += n
            if have >= ask.gpus:
                return _Reservation(ask.gpu, end, have - ask.gpus)
        return _Reservation(ask.gpu, np.inf, 0)

    def _start(self, ask: Ask, picked: list[int]) -> None:
        self.queue.remove(ask)
        left, held = ask.gpus, {}
        for i in picked:
            held[i] = min(left, self._gpus(i))
            left -= held[i]
            self._open(ask.job, i, held[i])
        self.free -= set(picked)
        self.held[ask.job] = held
        self.running[ask.job] = (self.env.now + ask.estimate_s, ask.gpu,
                                 sum(self._gpus(i) for i in picked))
        ask.event.succeed(picked)

    def _serve_replacements(self) -> None:
        for job, gpu, gpus, ev in list(self.replacements):
            spares = self.spares.get(gpu, set())
            near = {self.leaf[i] for i in self.held.get(job, {})}
            free = sorted((self.leaf[i] not in near, i) for i in self.free
                          if self.servers[i].gpu.id == gpu)
            if spares:
                i = min(spares)
                spares.discard(i)
            elif free:
                i = free[0][1]
                self.free.discard(i)
            else:
                continue
            self.replacements.remove((job, gpu, gpus, ev))
            used = min(gpus, self._gpus(i))
            self.held[job][i] = used
            self._open(job, i, used)
            ev.succeed(i)

    # -- bookkeeping ----------------------------------------------------------------
    def _open(self, job: int, server: int, gpus: int) -> None:
        self.open[(job, server)] = len(self.allocs)
        self.allocs.append([job, server, gpus, self.env.now, np.nan])

    def _close(self, job: int, server: int) -> None:
        self.allocs[self.open.pop((job, server))][4] = self.env.now

    def _observe(self) -> None:
        if min(self.env.now, self.duration_s) <= self.levels.t:
            return
        used = sum(self._gpus(i) for held in self.held.values() for i in held)
        free_leaf: dict[int, int] = {}
        for i in self.free:
            free_leaf[self.leaf[i]] = free_leaf.get(self.leaf[i], 0) + self._gpus(i)
        free = sum(free_leaf.values())
        values = {"gpu_allocation": used / self.total_gpus if self.total_gpus else 0.0,
                  "queue_length": len(self.queue), "servers_down": len(self.down),
                  "fragmentation": 1 - max(free_leaf.values()) / free if free else 0.0}
        self.levels.advance(self.env.now, values)

    def series(self) -> pd.DataFrame:
        """Allocation, queue, servers down and fragmentation per time bucket."""
        self._observe()
        dt = self.levels.bucket_seconds()
        starts = np.arange(dt.size) * self.bucket_s
        return pd.DataFrame({"t_start_s": starts, "t_end_s": starts + dt,
                             **self.levels.means()})

    def allocations(self, end_s: float) -> pd.DataFrame:
        """One row per (job, server) holding: GPUs used and the interval, s."""
        a = np.array(self.allocs, dtype=float).reshape(-1, 5)
        return pd.DataFrame({"job": a[:, 0].astype(int), "server": a[:, 1].astype(int),
                             "gpus": a[:, 2].astype(int), "t0_s": a[:, 3],
                             "t1_s": np.where(np.isnan(a[:, 4]), end_s, a[:, 4])})

    def outage_intervals(self, end_s: float) -> list[tuple[int, float, float]]:
        """Repairs: server, start and end, s (those still going end at end_s)."""
        return self.outages + [(i, t0, end_s) for i, t0 in self.down_since.items()]
