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
              caps: np.ndarray, train_w: dict[int, np.ndarray] | None = None,
              in_service: np.ndarray | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per GPU and bucket (power_w, cap_w, throttled), and each server's total GPU
    power per bucket (servers x buckets), W.

    replica_energy_j rows are replicas. Servers training jobs may use (train_w) report
    each GPU at the server's mean GPU power per bucket, since jobs come and go. GPUs
    without work draw idle power while their server is on (in_service: share of each
    bucket, servers x buckets).
    """
    frames: list[tuple[str, np.ndarray, float, float]] = []
    gpu_w = np.zeros((len(servers), dt.size))
    for si, x in enumerate(servers):
        mine: list[np.ndarray] = []
        if train_w is not None and si in train_w:
            mine += [train_w[si]] * x.spec.gpus_per_server
        for r, tp in zip(x.replicas, x.tps, strict=True):
            mine += [replica_energy_j[r] / dt / tp] * tp
        spare = np.full(dt.size, x.gpu.idle_power_w)
        if in_service is not None and si not in (train_w or {}):
            spare = spare * in_service[si]  # (a training server's share is in train_w)
        mine += [spare] * (x.spec.gpus_per_server - len(mine))
        frames += [(f"{x.name}/gpu{k}", w, caps[si], x.gpu.power_limit_max_w)
                   for k, w in enumerate(mine)]
        # summed GPU by GPU in slot order, as the per-GPU rows add up
        total = np.zeros(dt.size)
        for w in mine:
            total = total + w
        gpu_w[si] = total
    return _rows("gpu", frames, dt), gpu_w


def _rows(domain: str | list[str], frames: list[tuple[str, np.ndarray, float, float]],
          dt: np.ndarray) -> pd.DataFrame:
    """Tidy rows for named series (name, power per bucket, cap, the cap it is throttled
    below); `domain` one kind for all or one per frame."""
    n = dt.size
    starts = np.concatenate([[0.0], np.cumsum(dt)[:-1]])
    kinds = np.repeat(domain, n) if isinstance(domain, list) else domain
    return pd.DataFrame({
        "domain": kinds,
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
    gpus, gpu_w = gpu_power(servers, replica_energy_j, dt, caps, train_w, in_service)
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
    below = caps < np.array([x.gpu.power_limit_max_w for x in servers])
    dom = _rows([d.kind for d in doms], [
        (d.name, wall[list(d.servers)].sum(axis=0), np.nan if d.budget_w is None
         else d.budget_w, np.inf) for d in doms], dt)
    dom["throttled"] = np.repeat([bool(below[list(d.servers)].any()) for d in doms], dt.size)
    return pd.concat([gpus, srv, dom], ignore_index=True), wall.sum(axis=0)
