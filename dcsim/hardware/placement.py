"""Servers and power domains as plain records, their draw, and the GPU caps budgets impose.

(Which replicas run where, read from the scenario, is the build stage's:
dcsim.engine.fleet.)

Budgets are enforced the way sites provision them: when a domain's worst case
(every GPU at its limit, hosts at full load, through the PSUs) exceeds its budget,
servers with nothing to run go to their lowest limit, and if that is not enough
all its busy GPUs get one lower power limit that fits; rows and the facility are
checked after racks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dcsim.catalog import GpuSpec, ServerSpec
from dcsim.errors import DcsimError, Problem
from dcsim.hardware.server import server_power_w


@dataclass
class Server:
    """One server of the fleet: where it is, its type and GPU, and the replicas on it."""

    name: str
    rack: str
    row: str
    spec: ServerSpec
    gpu: GpuSpec
    free: int
    replicas: list[int] = field(default_factory=list)
    tps: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Domain:
    """A rack, row or the facility: its budget (W, None: unbudgeted) and its servers."""

    kind: str  # rack | row | facility
    name: str
    budget_w: float | None
    field: str  # where the budget is set, e.g. fleet.racks[0].power_budget_kw ("": nowhere)
    servers: tuple[int, ...]


def walls_w(servers: list[Server], members: tuple[int, ...] | list[int],
            gpu_w: np.ndarray) -> np.ndarray:
    """Wall power of each member server whose GPUs draw gpu_w[i] in total, W: one
    vectorised server_power_w call per (server type, GPU) instead of one per server."""
    idx = np.asarray(members, dtype=np.int64)
    out = np.empty(idx.size)
    groups: dict[tuple[int, int], list[int]] = {}
    for k, i in enumerate(idx.tolist()):
        x = servers[i]
        groups.setdefault((id(x.spec), id(x.gpu)), []).append(k)
    for ks in groups.values():
        x = servers[int(idx[ks[0]])]
        wall, _, _ = server_power_w(np.asarray(gpu_w)[ks], x.spec, x.gpu)
        out[ks] = wall
    return out


def idle_w(servers: list[Server], members: tuple[int, ...]) -> float:
    """Wall power of `members` with every GPU idle (the floor a domain never goes below)."""
    per = np.array([servers[i].spec.gpus_per_server * servers[i].gpu.idle_power_w
                    for i in members])
    return sum(walls_w(servers, members, per).tolist()) if members else 0.0


def worst_case_w(servers: list[Server], members: tuple[int, ...], caps: np.ndarray) -> float:
    """Wall power of `members` with every GPU at its limit and hosts at full load."""
    if not members:
        return 0.0
    idx = list(members)
    gps = np.array([servers[i].spec.gpus_per_server for i in idx], dtype=float)
    # summed in member order, as a running float total (results do not depend on grouping)
    return sum(walls_w(servers, idx, gps * caps[idx]).tolist())


def budget_caps(servers: list[Server], doms: list[Domain], limits: np.ndarray,
                parked: np.ndarray | None = None, off: np.ndarray | None = None
                ) -> np.ndarray:
    """Per-server GPU limit (W) after every budget is enforced; limits are the requested ones.

    Servers with nothing to run (parked) go to their lowest limit first: they draw
    idle power either way, and only then do the busy servers share a lower limit.
    Servers switched off (off) draw nothing and are left out.
    """
    caps = limits.astype(float).copy()
    park = np.zeros(len(servers), bool) if parked is None else parked
    dark = np.zeros(len(servers), bool) if off is None else off
    for dom in doms:
        on = tuple(i for i in dom.servers if not dark[i])  # what the budget must hold
        if dom.budget_w is None or worst_case_w(servers, on, caps) <= dom.budget_w:
            continue
        for i in on:
            if park[i]:
                caps[i] = min(caps[i], servers[i].gpu.power_limit_min_w)
        if worst_case_w(servers, on, caps) <= dom.budget_w:
            continue
        busy = [i for i in on if not park[i]]
        lo = max(servers[i].gpu.power_limit_min_w for i in on)
        trial = caps.copy()
        trial[busy] = np.minimum(caps[busy], lo)
        if worst_case_w(servers, on, trial) > dom.budget_w:
            raise DcsimError(Problem(
                dom.field or f"{dom.kind} {dom.name}", f"{dom.budget_w / 1e3:g} kW",
                f"the {dom.kind} {dom.name} power budget to be at least "
                f"{worst_case_w(servers, on, trial) / 1e3:.1f} kW: its servers draw that much "
                "with every GPU at its lowest power limit"))
        hi = float(caps[busy].max())
        for _ in range(50):  # bisection on one common limit for the domain's busy GPUs
            mid = (lo + hi) / 2
            trial[busy] = np.minimum(caps[busy], mid)
            lo, hi = (mid, hi) if worst_case_w(servers, on, trial) <= dom.budget_w else (
                lo, mid)
        caps[busy] = np.minimum(caps[busy], lo)
    return caps
