"""Replay of a GPU cluster trace through a scheduler (FIFO, priority, EASY backfill).

Pods run on one node (their GPUs together); a pod with one GPU and gpu_milli below
1000 shares a GPU with others. Placement is best fit: the node (or GPU) that leaves
the least free capacity. EASY backfill reserves the earliest start of the blocked
head pod (run times from the trace serve as the estimates) and lets later pods
start now if they end before that reservation or use another node.

Metrics, integrated exactly over time: allocated GPU share, queue length, and
fragmentation = free GPU capacity stranded on partly used GPUs / all free capacity.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import simpy

from dcsim.engine.gang import Policy, queue_order, schedule_pass
from dcsim.engine.metrics import LevelIntegral
from dcsim.scenario import Scenario
from dcsim.workloads.cluster_trace import load_cluster_trace, resolve
from dcsim.workloads.spec import ClusterReplaySpec

FULL = 1000  # milli-GPU
BACKFILL_WINDOW = 256  # queued pods a backfill pass looks at, as schedulers bound it
QOS_PRIORITY = {"Guaranteed": 3, "LS": 2, "Burstable": 1, "BE": 0}


@dataclass
class _Node:
    free: list[int]  # milli-GPU free on each GPU
    cpu: float
    mem: float


class ClusterReplay:
    """Replays one cluster trace's pods through the scheduling core (see the module
    docstring)."""

    def __init__(self, env: simpy.Environment, nodes: pd.DataFrame, pods: pd.DataFrame,
                 policy: Policy, duration_s: float, bucket_s: float) -> None:
        self.env, self.policy = env, policy
        self.nodes = [_Node([FULL] * int(g), float(c), float(m)) for g, c, m in
                      zip(nodes["gpu"], nodes["cpu_milli"], nodes["memory_mib"], strict=True)]
        self.total = FULL * int(nodes["gpu"].sum())
        t0 = float(pods["creation_time"].min()) if len(pods) else 0.0
        self.submit = (pods["creation_time"] - t0).to_numpy(float)
        self.gpus = pods["num_gpu"].to_numpy(int)
        self.milli = np.where(self.gpus == 1, pods["gpu_milli"].to_numpy(int), FULL)
        self.cpu, self.mem = pods["cpu_milli"].to_numpy(float), pods["memory_mib"].to_numpy(float)
        self.run = pods["run_s"].to_numpy(float)
        qos = pods["qos"] if "qos" in pods else pd.Series(["BE"] * len(pods))
        self.prio = np.array([QOS_PRIORITY.get(q, 0) for q in qos])
        self.start = np.full(len(pods), np.nan)
        self.node = np.full(len(pods), -1)
        self.gpu_slot: dict[int, list[int]] = {}
        self.ends: list[list[tuple[float, int]]] = [[] for _ in self.nodes]
        # per-node summaries kept current, so best fit is a vectorised scan
        self.n_full = np.array([len(nd.free) for nd in self.nodes])  # wholly free GPUs
        self.max_free = np.array([FULL if nd.free else 0 for nd in self.nodes])
        self.sum_free = np.array([FULL * len(nd.free) for nd in self.nodes])
        self.cpu_free = np.array([nd.cpu for nd in self.nodes])
        self.mem_free = np.array([nd.mem for nd in self.nodes])
        self.queue: list[int] = []
        self.used = 0
        self.stranded = 0  # free milli-GPU on partly used GPUs
        self.bucket_s, self.duration_s = bucket_s, duration_s
        self.levels = LevelIntegral(("gpu_allocation", "queue_length", "fragmentation"),
                                    duration_s, bucket_s)
        env.process(self._arrivals())

    # -- time-weighted metrics ------------------------------------------------
    def _observe(self) -> None:
        free = self.total - self.used
        self.levels.advance(self.env.now, {
            "gpu_allocation": self.used / self.total, "queue_length": len(self.queue),
            "fragmentation": self.stranded / free if free else 0.0})

    # -- processes --------------------------------------------------------------
    def _arrivals(self) -> Generator[simpy.Event, None, None]:
        for p in np.argsort(self.submit, kind="stable"):
            if self.submit[p] > self.env.now:
                yield self.env.timeout(self.submit[p] - self.env.now)
            self._observe()
            self.queue.append(int(p))
            self._schedule()

    def _running(self, p: int) -> Generator[simpy.Event, None, None]:
        yield self.env.timeout(self.run[p])
        self._observe()
        self._release(p)
        self._schedule()

    # -- scheduling -------------------------------------------------------------
    def _schedule(self) -> None:
        order = queue_order(self.queue, self.policy, lambda p: (-self.prio[p], self.submit[p]))
        schedule_pass(order[:BACKFILL_WINDOW], self.policy, self._place, self._start,
                      self._reservation, self._backfill)

    def _place(self, p: int) -> int | None:
        node = self._fit(p)
        return node if node >= 0 else None

    def _backfill(self, p: int, held: tuple[float, int]) -> int | None:
        """A node for pod p that does not hold up the reserved pod: any node if p ends
        before the reservation, else one other than the reserved node."""
        shadow, reserved = held
        node = self._fit(p)
        if node >= 0 and self.env.now + self.run[p] > shadow and node == reserved:
            node = self._fit(p, exclude=reserved)
        return node if node >= 0 else None

    def _fits_node(self, p: int, nd: _Node) -> bool:
        if nd.cpu < self.cpu[p] or nd.mem < self.mem[p]:
            return False
        g = self.gpus[p]
        if g == 0:
            return True
        if self.milli[p] < FULL:
            return any(f >= self.milli[p] for f in nd.free)
        return sum(1 for f in nd.free if f == FULL) >= g

    def _fit(self, p: int, exclude: int = -1) -> int:
        """Best-fit node for pod p (other than `exclude`): least free GPU left; or -1."""
        ok = (self.cpu_free >= self.cpu[p]) & (self.mem_free >= self.mem[p])
        if self.gpus[p] and self.milli[p] < FULL:
            ok &= self.max_free >= self.milli[p]
        elif self.gpus[p]:
            ok &= self.n_full >= self.gpus[p]
        if exclude >= 0:
            ok[exclude] = False
        if not ok.any():
            return -1
        return int(np.argmin(np.where(ok, self.sum_free, np.iinfo(np.int64).max)))

    def _refresh(self, i: int) -> None:
        nd = self.nodes[i]
        self.n_full[i] = sum(1 for f in nd.free if f == FULL)
        self.max_free[i] = max(nd.free, default=0)
        self.sum_free[i] = sum(nd.free)
        self.cpu_free[i], self.mem_free[i] = nd.cpu, nd.mem

    def _start(self, p: int, i: int) -> None:
        nd = self.nodes[i]
        self.queue.remove(p)
        slots: list[int] = []
        if self.gpus[p] and self.milli[p] < FULL:  # the fullest GPU that still fits
            j = min((k for k, f in enumerate(nd.free) if f >= self.milli[p]),
                    key=lambda k: nd.free[k])
            slots = [j]
        elif self.gpus[p]:
            slots = [k for k, f in enumerate(nd.free) if f == FULL][: self.gpus[p]]
        for j in slots:
            self._set_free(nd, j, nd.free[j] - self.milli[p])
        nd.cpu -= self.cpu[p]
        nd.mem -= self.mem[p]
        self.used += self.gpus[p] * self.milli[p]
        self.gpu_slot[p] = slots
        self._refresh(i)
        self.start[p], self.node[p] = self.env.now, i
        self.ends[i].append((self.env.now + self.run[p], p))
        self.env.process(self._running(p))

    def _set_free(self, nd: _Node, j: int, value: int) -> None:
        def partial(f: int) -> int:
            """Free milli-GPU of a GPU that is partly used (0 when wholly free or full)."""
            return f if 0 < f < FULL else 0

        self.stranded += partial(value) - partial(nd.free[j])
        nd.free[j] = value

    def _release(self, p: int) -> None:
        nd = self.nodes[self.node[p]]
        for j in self.gpu_slot.pop(p):
            self._set_free(nd, j, nd.free[j] + self.milli[p])
        nd.cpu += self.cpu[p]
        nd.mem += self.mem[p]
        self.used -= self.gpus[p] * self.milli[p]
        self._refresh(int(self.node[p]))
        self.ends[self.node[p]].remove((self.start[p] + self.run[p], p))

    def _reservation(self, p: int) -> tuple[float, int] | None:
        """Earliest time and node at which pod p fits, if running pods end as the trace says
        (None if it fits nowhere even then)."""
        best, node = np.inf, -1
        for i, nd in enumerate(self.nodes):
            trial = _Node(list(nd.free), nd.cpu, nd.mem)
            for end, q in sorted(self.ends[i]):
                if end >= best:
                    break
                for j in self.gpu_slot[q]:
                    trial.free[j] += self.milli[q]
                trial.cpu += self.cpu[q]
                trial.mem += self.mem[q]
                if self._fits_node(p, trial):
                    best, node = end, i
                    break
        return (best, node) if node >= 0 else None

    # -- results ------------------------------------------------------------------
    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Per pod (submit, start, end, wait, node, GPUs) and per time bucket (allocation,
        queue, fragmentation)."""
        self._observe()
        end = self.start + self.run
        wait = self.start - self.submit
        wait = np.where(np.abs(wait) < 1e-6, 0.0, wait)  # time sums leave float dust
        pods = pd.DataFrame({"pod": np.arange(len(self.submit)), "submit_s": self.submit,
                             "start_s": self.start, "end_s": end, "wait_s": wait,
                             "node": self.node, "gpus": self.gpus,
                             "gpu_milli": self.milli, "run_s": self.run,
                             "started": ~np.isnan(self.start)})
        dt = self.levels.bucket_seconds()
        starts = np.arange(dt.size) * self.bucket_s
        series = pd.DataFrame({"t_start_s": starts, "t_end_s": starts + dt,
                               **self.levels.means()})
        return pods, series


@dataclass(frozen=True)
class ReplaySpec:
    """One cluster_replay workload: its name, the nodes kept and the pods (submission
    times scaled), and the scheduling policy."""

    name: str
    nodes: pd.DataFrame
    pods: pd.DataFrame
    policy: Policy


def load_replays(s: Scenario, base_dir: Path) -> list[ReplaySpec]:
    """The traces of every cluster_replay workload of the scenario, as it asks for them."""
    out = []
    for w in s.workloads:
        if not isinstance(w, ClusterReplaySpec):
            continue
        nodes, pods = load_cluster_trace(*resolve(w.trace, base_dir))
        keep = np.unique(np.linspace(0, len(nodes) - 1, max(round(len(nodes) * w.node_fraction),
                                                             1)).round().astype(int))
        nodes = nodes.iloc[keep].reset_index(drop=True)
        pods = pods.assign(creation_time=pods["creation_time"] * w.arrival_time_scale)
        out.append(ReplaySpec(w.name, nodes, pods, w.policy))
    return out


def start_replays(env: simpy.Environment, specs: tuple[ReplaySpec, ...], duration_s: float,
                  bucket_s: float) -> list[tuple[str, ClusterReplay]]:
    """A ClusterReplay process for every replay spec."""
    return [(r.name, ClusterReplay(env, r.nodes, r.pods, r.policy, duration_s, bucket_s))
            for r in specs]


def replay_tables(replays: list[tuple[str, ClusterReplay]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pods and metrics of every replay, tagged with the workload's name."""
    if not replays:
        return pd.DataFrame(), pd.DataFrame()
    pods, series = zip(*((p.assign(workload=n), t.assign(workload=n))
                         for n, c in replays for p, t in [c.tables()]), strict=True)
    return pd.concat(pods, ignore_index=True), pd.concat(series, ignore_index=True)
