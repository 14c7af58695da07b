"""Where replicas run: servers of the fleet, racks, rows; and the GPU caps budgets impose.

Replicas are placed in scenario order on the first server of their GPU type with
`tp` free GPUs (tensor parallelism stays inside a server). Without racks in the
scenario, servers of the first catalog type with that GPU are added to an
unbudgeted rack "auto".

Budgets are enforced the way sites provision them: when a domain's worst case
(every GPU at its limit, hosts at full load, through the PSUs) exceeds its budget,
servers with nothing to run go to their lowest limit, and if that is not enough
all its busy GPUs get one lower power limit that fits; rows and the facility are
checked after racks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dcsim.catalog import Catalog, GpuSpec, ServerSpec
from dcsim.errors import DcsimError, Problem
from dcsim.hardware.server import server_power_w
from dcsim.scenario import Scenario
from dcsim.workloads.spec import InferenceService, TrainingJob


@dataclass
class Server:
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
    kind: str  # rack | row | facility
    name: str
    budget_w: float | None
    servers: tuple[int, ...]


def fleet_servers(s: Scenario, cat: Catalog) -> list[Server]:
    out = []
    for rack in s.fleet.racks:
        for k in range(rack.count):
            rname = rack.name if rack.count == 1 else f"{rack.name}-{k + 1}"
            for grp in rack.servers:
                spec = cat.server(grp.type)
                for j in range(grp.count):
                    out.append(Server(f"{rname}/{grp.type}-{j + 1}", rname, rack.row, spec,
                                      cat.gpu(spec.gpu), spec.gpus_per_server))
    return out


def place(s: Scenario, services: list[InferenceService], cat: Catalog) -> list[Server]:
    """Servers with the replicas placed on them (global replica indices in order)."""
    servers = fleet_servers(s, cat)
    index = 0
    by_name = {x.name: x for x in servers}
    for i, svc in enumerate(services):
        d = svc.deployment
        for k in range(d.replicas):
            if d.servers is not None:
                slot = _named(by_name, d.servers[k], d.gpu, d.tp, f"workloads[{i}].deployment"
                              f".servers[{k}]")
            else:
                slot = next((x for x in servers if x.gpu.id == d.gpu and x.free >= d.tp), None)
            if slot is None and not s.fleet.racks:
                slot = _auto_server(cat, d.gpu, d.tp, len(servers), i)
                servers.append(slot)
            if slot is None:
                raise DcsimError(Problem(f"workloads[{i}].deployment", f"{d.replicas} x tp={d.tp}",
                                         f"room on {d.gpu} servers of fleet.racks for every "
                                         "replica (tp GPUs inside one server)"))
            slot.free -= d.tp
            slot.replicas.append(index)
            slot.tps.append(d.tp)
            index += 1
    return servers


def _named(by_name: dict[str, Server], name: str, gpu: str, tp: int, where: str) -> Server:
    x = by_name.get(name)
    if x is None:
        raise DcsimError(Problem(where, name, f"a server of fleet.racks, one of "
                                 f"{sorted(by_name)[:4]}..."))
    if x.gpu.id != gpu or x.free < tp:
        raise DcsimError(Problem(where, name, f"a {gpu} server with {tp} free GPUs (it has "
                                 f"{x.free} free {x.gpu.id})"))
    return x


def training_pool(s: Scenario, jobs: list[TrainingJob], cat: Catalog, servers: list[Server]
                  ) -> list[int]:
    """Indices of the servers training jobs may use: every server without a replica.

    Without racks in the scenario, servers are added so that every job can run at
    once, plus the scheduler's spare servers for each GPU type.
    """
    if not s.fleet.racks:
        spares = s.fleet.training_scheduler.spare_servers
        for j, job in enumerate(jobs):
            left = job.gpus
            while left > 0:
                x = _auto_server(cat, job.gpu, min(left, 8), len(servers), j)
                servers.append(x)
                left -= x.spec.gpus_per_server
        for gpu in dict.fromkeys(job.gpu for job in jobs):
            for _ in range(spares):
                servers.append(_auto_server(cat, gpu, 1, len(servers), 0))
    pool = [i for i, x in enumerate(servers) if not x.replicas]
    spares = s.fleet.training_scheduler.spare_servers
    for job in jobs:
        where = f"workloads[{s.workloads.index(job)}]"
        unknown = sorted(set(job.racks or []) - {servers[i].rack for i in pool})
        if unknown:
            raise DcsimError(Problem(f"{where}.racks", unknown, "racks of fleet.racks with "
                                     "servers free of inference replicas"))
        mine = sorted((servers[i].spec.gpus_per_server for i in pool
                       if servers[i].gpu.id == job.gpu), reverse=True)
        have = sum(mine[spares:])  # spares never start a job
        there = sum(servers[i].spec.gpus_per_server for i in pool if servers[i].gpu.id ==
                    job.gpu and (job.racks is None or servers[i].rack in job.racks))
        if min(have, there) < job.gpus:
            raise DcsimError(Problem(f"{where}.gpus", job.gpus, f"at most the "
                                     f"{min(have, there)} {job.gpu} GPUs of "
                                     f"{'its racks' if job.racks else 'fleet.racks'} that "
                                     "hold no inference replica and are not spares"))
    return pool


def _auto_server(cat: Catalog, gpu: str, tp: int, n: int, i: int) -> Server:
    g = cat.gpu(gpu)
    spec = next((x for x in cat.servers.values() if x.gpu == gpu and x.gpus_per_server >= tp),
                None)
    if spec is None:  # no server type known: the GPUs alone, behind power supplies
        spec = ServerSpec(id=f"gpus-only-{gpu}", gpu=gpu, gpus_per_server=tp,
                          max_power_w=tp * g.tdp_w, non_gpu_power_w=0.0, nics=0, nic_gbps=1.0,
                          source="derived: no catalog server for this GPU; GPUs only")
    return Server(f"auto/{spec.id}-{n + 1}", "auto", "auto", spec, g, spec.gpus_per_server)


def domains(s: Scenario, servers: list[Server]) -> list[Domain]:
    """Racks, rows and the facility, each with its budget (W) and its servers."""
    budgets = {r.name if r.count == 1 else f"{r.name}-{k + 1}": r.power_budget_kw * 1e3
               for r in s.fleet.racks for k in range(r.count)}
    row_budgets = {r.name: r.power_budget_kw * 1e3 for r in s.fleet.rows}
    out = []
    for kind, key, table in (("rack", "rack", budgets), ("row", "row", row_budgets)):
        for name in dict.fromkeys(getattr(x, key) for x in servers):
            members = tuple(i for i, x in enumerate(servers) if getattr(x, key) == name)
            out.append(Domain(kind, name, table.get(name), members))
    fb = s.facility.power_budget_kw
    out.append(Domain("facility", "facility", fb * 1e3 if fb else None,
                      tuple(range(len(servers)))))
    return out


def idle_w(servers: list[Server], members: tuple[int, ...]) -> float:
    """Wall power of `members` with every GPU idle (the floor a domain never goes below)."""
    total = 0.0
    for i in members:
        x = servers[i]
        wall, _, _ = server_power_w(x.spec.gpus_per_server * x.gpu.idle_power_w, x.spec, x.gpu)
        total += float(wall)
    return total


def worst_case_w(servers: list[Server], members: tuple[int, ...], caps: np.ndarray) -> float:
    """Wall power of `members` with every GPU at its limit and hosts at full load."""
    total = 0.0
    for i in members:
        x = servers[i]
        wall, _, _ = server_power_w(x.spec.gpus_per_server * caps[i], x.spec, x.gpu)
        total += float(wall)
    return total


def budget_caps(s: Scenario, servers: list[Server], limits: np.ndarray,
                parked: np.ndarray | None = None, off: np.ndarray | None = None
                ) -> tuple[np.ndarray, list[Domain]]:
    """Per-server GPU limit (W) after every budget is enforced; limits are the requested ones.

    Servers with nothing to run (parked) go to their lowest limit first: they draw
    idle power either way, and only then do the busy servers share a lower limit.
    Servers switched off (off) draw nothing and are left out.
    """
    caps = limits.astype(float).copy()
    park = np.zeros(len(servers), bool) if parked is None else parked
    dark = np.zeros(len(servers), bool) if off is None else off
    doms = domains(s, servers)
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
                f"{dom.kind} {dom.name} power budget", f"{dom.budget_w / 1e3:g} kW",
                f"at least {worst_case_w(servers, on, trial) / 1e3:.1f} kW: its servers "
                "draw that much with every GPU at its lowest power limit"))
        hi = float(caps[busy].max())
        for _ in range(50):  # bisection on one common limit for the domain's busy GPUs
            mid = (lo + hi) / 2
            trial[busy] = np.minimum(caps[busy], mid)
            lo, hi = (mid, hi) if worst_case_w(servers, on, trial) <= dom.budget_w else (
                lo, mid)
        caps[busy] = np.minimum(caps[busy], lo)
    return caps, doms
