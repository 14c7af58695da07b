"""Scale-out network: max-min fair sharing of leaf-spine uplinks between jobs.

Servers hang off leaves in fleet order (`servers_per_leaf` each). A leaf's uplink
carries servers_per_leaf x NIC bandwidth / oversubscription. A training job whose
servers span more than one leaf sends its data-parallel all-reduce over the uplink
of every leaf it uses, wanting line rate for each of its GPUs there; jobs inside
one leaf never touch an uplink. Uplinks are shared max-min fairly (progressive
filling) and re-shared whenever a job starts or ends.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from dcsim.engine.metrics import LevelIntegral


def max_min_rates(flow_links: list[list[int]], capacity: np.ndarray,
                  demand: np.ndarray | None = None) -> np.ndarray:
    """Max-min fair rates of flows over links (progressive filling).

    All unfrozen flows grow together; a link that fills freezes its flows, and so
    does a flow that reaches its demand. A flow on no link gets its demand.
    """
    n = len(flow_links)
    want = np.full(n, np.inf) if demand is None else np.asarray(demand, dtype=float)
    rate = np.zeros(n)
    left = np.asarray(capacity, dtype=float).copy()
    active = np.array([bool(links) for links in flow_links]) & (want > 0)
    rate[[i for i in range(n) if not flow_links[i]]] = want[[i for i in range(n)
                                                            if not flow_links[i]]]
    while active.any():
        users = np.zeros(left.size)
        for i in np.flatnonzero(active):
            for link in flow_links[i]:
                users[link] += 1
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(users > 0, left / users, np.inf)
        step = min(share.min(), float((want - rate)[active].min()))
        for i in np.flatnonzero(active):
            rate[i] += step
            for link in flow_links[i]:
                left[link] -= step
        full = np.flatnonzero((users > 0) & (left <= 1e-9 * np.maximum(capacity, 1)))
        for i in np.flatnonzero(active):
            if rate[i] >= want[i] - 1e-12 or any(link in full for link in flow_links[i]):
                active[i] = False
    return rate


def water_fill(capacity: float, demand: list[float]) -> list[float]:
    """Max-min fair rates of flows sharing one link: the smallest demands are met in
    full, the rest split what is left equally (progressive filling on one link)."""
    rate = [0.0] * len(demand)
    left, n = capacity, len(demand)
    for k, i in enumerate(sorted(range(n), key=demand.__getitem__)):
        rate[i] = min(demand[i], left / (n - k))
        left -= rate[i]
    return rate


class Fabric:
    """Uplink shares of the jobs running now; per-GPU all-reduce bandwidth of each."""

    def __init__(self, uplink_byte_s: np.ndarray, clock: Callable[[], float] | None = None,
                 bucket_s: float = 60.0, duration_s: float = 60.0) -> None:
        self.capacity = uplink_byte_s
        self.clock = clock or (lambda: 0.0)
        self.bucket_s = bucket_s
        # integral of each uplink's load per bucket, bytes
        self._load_x = LevelIntegral(("load",), duration_s, bucket_s, (uplink_byte_s.size,))
        self.jobs: dict[int, tuple[dict[int, int], float]] = {}  # job -> ({leaf: GPUs}, B/s)
        self.per_gpu: dict[int, float] = {}
        self.load = np.zeros(uplink_byte_s.size)  # bytes/s allocated on each uplink

    def start(self, job: int, leaves: dict[int, int], nic_byte_s_per_gpu: float) -> None:
        """A job starts using its leaves (GPUs per leaf) at line rate per GPU: re-share the
        uplinks."""
        self.jobs[job] = (leaves, nic_byte_s_per_gpu)
        self._share()

    def end(self, job: int) -> None:
        """A job stops using the fabric: re-share the uplinks."""
        self.jobs.pop(job, None)
        self.per_gpu.pop(job, None)
        self._share()

    def observe(self) -> None:
        """Integrate the uplink load since the last change into the time buckets."""
        self._load_x.advance(self.clock(), {"load": self.load})

    def mean_load(self) -> np.ndarray:
        """Mean load of each uplink per bucket up to now, bytes/s (links x buckets)."""
        self.observe()
        return self._load_x.means()["load"]

    def links_table(self) -> pd.DataFrame:
        """Per leaf uplink and time bucket: mean load (bytes/s) and utilisation."""
        load = self.mean_load()
        dt = self._load_x.bucket_seconds()
        n = dt.size
        starts = np.arange(n) * self.bucket_s
        return pd.DataFrame({
            "link": np.repeat([f"leaf-{i}/uplink" for i in range(self.capacity.size)], n),
            "t_start_s": np.tile(starts, self.capacity.size),
            "t_end_s": np.tile(starts + dt, self.capacity.size),
            "capacity_byte_s": np.repeat(self.capacity, n),
            "load_byte_s": load.ravel(),
            "utilization": (load / self.capacity[:, None]).ravel(),
        })

    def _share(self) -> None:
        self.observe()
        flows, links, demand = [], [], []
        for j, (leaves, nic) in self.jobs.items():
            if len(leaves) < 2:
                self.per_gpu[j] = nic
                continue
            for leaf, gpus in leaves.items():
                flows.append((j, gpus))
                links.append([leaf])
                demand.append(gpus * nic)
        rates = max_min_rates(links, self.capacity, np.array(demand)) if flows else np.empty(0)
        self.load = np.zeros(self.capacity.size)
        worst: dict[int, float] = {}
        for (j, gpus), link, r in zip(flows, links, rates, strict=True):
            self.load[link[0]] += r
            worst[j] = min(worst.get(j, np.inf), r / gpus)  # the slowest leaf paces the ring
        self.per_gpu.update(worst)


def switch_power_w(nics: list[int], leaf: list[int], server_busy: np.ndarray,
                   uplink_util: np.ndarray, oversubscription: float, idle_w: float,
                   active_w: float) -> np.ndarray:
    """Power of the leaf-spine fabric per time bucket, W.

    Ports: one leaf port per server NIC; per leaf, ceil(its server ports /
    oversubscription) uplinks, each with a spine port at the other end. A port draws
    idle_w plus (active_w - idle_w) x its use: a server's ports the share of the
    bucket its server trained (rows of server_busy), an uplink its utilisation.
    """
    n = uplink_util.shape[1]
    if not nics:
        return np.zeros(n)
    ports = np.asarray(nics, dtype=float)
    extra = active_w - idle_w
    power = idle_w * ports.sum() + extra * (ports[:, None] * server_busy).sum(axis=0)
    per_leaf = np.zeros(uplink_util.shape[0])
    np.add.at(per_leaf, np.asarray(leaf), ports)
    uplinks = np.ceil(per_leaf / oversubscription)
    return power + 2 * (idle_w * uplinks.sum() + extra * (uplinks[:, None] * uplink_util).sum(
        axis=0))
