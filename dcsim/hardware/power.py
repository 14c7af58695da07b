"""Power per domain and time bucket, from the replicas' GPU energy (tidy table).

Domains: every GPU, server (wall power: GPUs + host through the PSUs), rack, row,
the network (switch ports, added by the simulation) and the facility (IT: servers
and network). GPUs without a replica draw their idle power. Facility
overhead (cooling, losses) comes from dcsim.hardware.facility; carbon and cost
from the grid series.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dcsim.hardware.placement import Domain, Server
from dcsim.hardware.server import server_power_w


def bucket_seconds(n: int, bucket_s: float, duration_s: float) -> np.ndarray:
    """Length of each bucket; the last one may be cut by the end of the run."""
    starts = np.arange(n) * bucket_s
    return np.minimum(starts + bucket_s, duration_s) - starts


def gpu_power(servers: list[Server], replica_energy_j: np.ndarray, dt: np.ndarray,
              caps: np.ndarray, train_w: dict[int, np.ndarray] | None = None) -> pd.DataFrame:
    """One row per GPU and bucket: power_w, cap_w, throttled.

    replica_energy_j rows are replicas. Servers training jobs may use (train_w) report
    each GPU at the server's mean GPU power per bucket, since jobs come and go.
    """
    frames = []
    for si, x in enumerate(servers):
        slot = 0
        if train_w is not None and si in train_w:
            for _ in range(x.spec.gpus_per_server):
                frames.append((f"{x.name}/gpu{slot}", train_w[si], caps[si],
                               x.gpu.power_limit_max_w))
                slot += 1
        for r, tp in zip(x.replicas, x.tps, strict=True):
            per_gpu = replica_energy_j[r] / dt / tp
            for _ in range(tp):
                frames.append((f"{x.name}/gpu{slot}", per_gpu, caps[si], x.gpu.power_limit_max_w))
                slot += 1
        while slot < x.spec.gpus_per_server:
            frames.append((f"{x.name}/gpu{slot}", np.full(dt.size, x.gpu.idle_power_w),
                           caps[si], x.gpu.power_limit_max_w))
            slot += 1
    return _rows("gpu", frames, dt)


def _rows(domain: str, frames: list[tuple[str, np.ndarray, float, float]], dt: np.ndarray
          ) -> pd.DataFrame:
    n = dt.size
    starts = np.concatenate([[0.0], np.cumsum(dt)[:-1]])
    return pd.DataFrame({
        "domain": domain,
        "name": np.repeat([f[0] for f in frames], n),
        "t_start_s": np.tile(starts, len(frames)),
        "t_end_s": np.tile(starts + dt, len(frames)),
        "power_w": np.concatenate([f[1] for f in frames]) if frames else np.empty(0),
        "cap_w": np.repeat([f[2] for f in frames], n),
        "throttled": np.repeat([f[2] < f[3] for f in frames], n),
    })


def domain_power(servers: list[Server], doms: list[Domain], replica_energy_j: np.ndarray,
                 dt: np.ndarray, caps: np.ndarray,
                 train_w: dict[int, np.ndarray] | None = None,
                 in_service: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """GPU, server, rack, row and facility rows, and the facility IT power per bucket.

    in_service (servers x buckets): share of each bucket a server was powered (a
    server out for repair draws nothing).
    """
    gpus = gpu_power(servers, replica_energy_j, dt, caps, train_w)
    per_server = gpus.groupby("name", sort=False)["power_w"]
    gpu_w = np.zeros((len(servers), dt.size))
    for si, x in enumerate(servers):
        names = [f"{x.name}/gpu{k}" for k in range(x.spec.gpus_per_server)]
        gpu_w[si] = np.sum([per_server.get_group(nm).to_numpy() for nm in names], axis=0)
    wall = np.zeros_like(gpu_w)
    loss = np.zeros_like(gpu_w)
    for si, x in enumerate(servers):
        on = np.ones(dt.size) if in_service is None else in_service[si]
        # the server's draw while powered, times the share of the bucket it was
        g_on = np.divide(gpu_w[si], on, out=np.zeros(dt.size), where=on > 0)
        w, _, lo = server_power_w(g_on, x.spec, x.gpu)
        wall[si], loss[si] = w * on, lo * on
    srv = _rows("server", [(x.name, wall[i], caps[i] * x.spec.gpus_per_server,
                            x.gpu.power_limit_max_w * x.spec.gpus_per_server)
                           for i, x in enumerate(servers)], dt)
    srv["losses_w"] = loss.ravel()
    frames = [gpus, srv]
    it = wall.sum(axis=0)
    for dom in doms:
        total = wall[list(dom.servers)].sum(axis=0)
        budget = np.nan if dom.budget_w is None else dom.budget_w
        throttled = any(caps[i] < servers[i].gpu.power_limit_max_w for i in dom.servers)
        frames.append(_rows(dom.kind, [(dom.name, total, budget, np.inf)], dt).assign(
            throttled=throttled))
    return pd.concat(frames, ignore_index=True), it
