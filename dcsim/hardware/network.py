"""Scale-out network: max-min fair sharing of leaf-spine uplinks between jobs and transfers.

Servers hang off leaves in fleet order (`servers_per_leaf` each). A leaf's uplink
carries servers_per_leaf x NIC bandwidth / oversubscription. A training job whose
servers span more than one leaf sends its data-parallel all-reduce over the uplink
of every leaf it uses, wanting line rate for each of its GPUs there; jobs inside
one leaf never touch an uplink. A KV-cache transfer of disaggregated serving is a
flow of bytes over its replicas' NVLink or NIC ports and, between leaves, both
uplinks (dcsim.engine.kv_ports). Links are shared max-min fairly (progressive
filling) by jobs and transfers, and re-shared whenever one starts or ends.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from dcsim.engine.metrics import bucket_count, overlaps


def max_min_rates(flow_links: list[list[int]], capacity: Sequence[float],
                  demand: Sequence[float] | None = None) -> np.ndarray:
    """Max-min fair rates of flows over links (progressive filling).

    All unfrozen flows grow together; a link that fills freezes its flows, and so
    does a flow that reaches its demand. A flow on no link gets its demand. (Plain
    Python over the links in use: a fabric has many links and few flows at a time.)
    """
    n = len(flow_links)
    want = [math.inf] * n if demand is None else [float(x) for x in demand]
    rate = [0.0] * n
    active = []
    for i, links in enumerate(flow_links):
        if not links:
            rate[i] = want[i]
        elif want[i] > 0:
            active.append(i)
    left = {k: float(capacity[k]) for i in active for k in flow_links[i]}
    while active:
        users: dict[int, int] = {}
        for i in active:
            for k in flow_links[i]:
                users[k] = users.get(k, 0) + 1
        step = min(left[k] / u for k, u in users.items())
        step = max(min(step, min(want[i] - rate[i] for i in active)), 0.0)
        for i in active:
            rate[i] += step
            for k in flow_links[i]:
                left[k] -= step
        full = {k for k in users if left[k] <= 1e-9 * max(float(capacity[k]), 1.0)}
        active = [i for i in active if rate[i] < want[i] * (1 - 1e-12)
                  and not any(k in full for k in flow_links[i])]
    return np.array(rate)


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
    """Link shares of the training jobs and byte transfers running now: the per-GPU
    all-reduce bandwidth of each job, and each transfer's rate and bytes left.

    Links: the leaf uplinks, then any named in `links` (a KV transfer's NIC and NVLink
    ports). Jobs and transfers share them max-min fairly, re-shared whenever one starts
    or ends; `on_share` is called after each re-share (a transfer's end moves)."""

    def __init__(self, uplink_byte_s: np.ndarray, clock: Callable[[], float] | None = None,
                 bucket_s: float = 60.0, duration_s: float = 60.0,
                 links: Sequence[tuple[str, float]] = ()) -> None:
        self.uplinks = uplink_byte_s.size
        self.capacity = np.concatenate([np.asarray(uplink_byte_s, dtype=float),
                                        np.array([c for _, c in links], dtype=float)])
        self.names = [f"leaf-{i}/uplink" for i in range(self.uplinks)] + [n for n, _ in links]
        self._cap = self.capacity.tolist()
        self.clock = clock or (lambda: 0.0)
        self.bucket_s, self.duration_s = bucket_s, duration_s
        self.n = bucket_count(duration_s, bucket_s)
        # integral of each link's load per bucket, bytes (lists: scalar updates are cheap)
        self._load_x = [[0.0] * self.n for _ in self._cap]
        self._t_load = 0.0
        self.jobs: dict[int, tuple[dict[int, int], float]] = {}  # job -> ({leaf: GPUs}, B/s)
        self.per_gpu: dict[int, float] = {}
        self.load = [0.0] * len(self._cap)  # bytes/s allocated on each link
        self._loaded: list[int] = []  # the links with load
        # transfer -> [its links, demand B/s, bytes left, rate B/s]
        self.flows: dict[int, list] = {}
        self._t = 0.0  # when the transfers' bytes left were last brought up to date
        self.on_share: Callable[[], None] | None = None

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

    def send(self, key: int, links: list[int], demand_byte_s: float, nbytes: float) -> None:
        """Transfer `nbytes` over `links` (at most `demand_byte_s`): re-share (which first
        takes off what the others sent until now)."""
        self.flows[key] = [links, demand_byte_s, float(nbytes), 0.0]
        self._share()

    def next_done_s(self) -> float:
        """Seconds from now to the first transfer's end at today's rates (inf: none)."""
        self._drain()
        return min((max(f[2], 0.0) / f[3] for f in self.flows.values() if f[3] > 0),
                   default=np.inf)

    def finished(self) -> list[int]:
        """End the transfers with no bytes left (10 ns worth at their rate), re-share;
        their keys."""
        self._drain()
        done = [k for k, f in self.flows.items() if f[2] <= f[3] * 1e-8 + 1e-6]
        for k in done:
            del self.flows[k]
        if done:
            self._share()
        return done

    def observe(self) -> None:
        """Integrate the link load since the last change into the time buckets."""
        now = min(self.clock(), self.duration_s)
        if now <= self._t_load:
            return
        if self._loaded:
            x, load = self._load_x, self.load
            for b, dt in overlaps(self._t_load, now, self.bucket_s, self.n):
                for k in self._loaded:
                    x[k][b] += load[k] * dt
        self._t_load = now

    def bucket_seconds(self) -> np.ndarray:
        """Length of each bucket; the last one may be cut by the end of the run."""
        starts = np.arange(self.n) * self.bucket_s
        return np.minimum(starts + self.bucket_s, self.duration_s) - starts

    def mean_load(self) -> np.ndarray:
        """Mean load of each link per bucket up to now, bytes/s (links x buckets)."""
        self.observe()
        return np.array(self._load_x).reshape(len(self._cap), self.n) / self.bucket_seconds()

    def links_table(self) -> pd.DataFrame:
        """Per link and time bucket: mean load (bytes/s) and utilisation."""
        load = self.mean_load()
        dt = self.bucket_seconds()
        n = dt.size
        starts = np.arange(n) * self.bucket_s
        return pd.DataFrame({
            "link": np.repeat(self.names, n),
            "t_start_s": np.tile(starts, self.capacity.size),
            "t_end_s": np.tile(starts + dt, self.capacity.size),
            "capacity_byte_s": np.repeat(self.capacity, n),
            "load_byte_s": load.ravel(),
            "utilization": (load / self.capacity[:, None]).ravel(),
        })

    def _drain(self) -> None:
        """Take the bytes sent since the last update off each transfer."""
        now = self.clock()
        dt = now - self._t
        if dt > 0:
            for f in self.flows.values():
                f[2] -= f[3] * dt
        self._t = now

    def _share(self) -> None:
        self.observe()
        self._drain()
        owners: list[tuple[bool, int, int]] = []  # (a job?, job or transfer, GPUs)
        links, demand = [], []
        for j, (leaves, nic) in self.jobs.items():
            if len(leaves) < 2:
                self.per_gpu[j] = nic
                continue
            for leaf, gpus in leaves.items():
                owners.append((True, j, gpus))
                links.append([leaf])
                demand.append(gpus * nic)
        for k, f in self.flows.items():
            owners.append((False, k, 0))
            links.append(f[0])
            demand.append(f[1])
        rates = max_min_rates(links, self._cap, demand).tolist() if owners else []
        load = self.load
        for k in self._loaded:
            load[k] = 0.0
        worst: dict[int, float] = {}
        for (job, j, gpus), link, r in zip(owners, links, rates, strict=True):
            for k in link:
                load[k] += r
            if job:
                worst[j] = min(worst.get(j, np.inf), r / gpus)  # the slowest leaf paces it
            else:
                self.flows[j][3] = float(r)
        self._loaded = sorted({k for link in links for k in link})
        self.per_gpu.update(worst)
        if self.on_share is not None:
            self.on_share()


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
