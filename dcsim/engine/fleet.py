"""Build stage: the fleet of a scenario as servers and power domains, with the replicas
placed on them and the pool training jobs may use.

Replicas are placed in scenario order on the first server of their GPU type with
`tp` free GPUs (tensor parallelism stays inside a server). Without racks in the
scenario, servers of the first catalog type with that GPU are added to an
unbudgeted rack "auto". Errors name the scenario field at fault.
"""

from __future__ import annotations

from dcsim.catalog import Catalog, ServerSpec
from dcsim.errors import DcsimError, Problem
from dcsim.hardware.placement import Domain, Server
from dcsim.scenario import Scenario
from dcsim.workloads.spec import Deployment, InferenceService, TrainingJob


def fleet_servers(s: Scenario, cat: Catalog) -> list[Server]:
    """Every server of fleet.racks, in file order (a rack with count > 1 as rack-1, ...)."""
    out = []
    for rack in s.fleet.racks:
        for rname in rack.names():
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
        for pool, view in svc.views():
            index = _place_pool(s, view.deployment, f"workloads[{i}].deployment"
                                f"{'.' + pool if pool else ''}", servers, by_name, cat, index)
    return servers


def _place_pool(s: Scenario, d: Deployment, where: str, servers: list[Server],
                by_name: dict[str, Server], cat: Catalog, index: int) -> int:
    """Place one pool's replicas from global replica index `index`; the next index."""
    n = d.gpus_per_replica
    for k in range(d.replicas):
        if d.servers is not None:
            slot = _named(by_name, d.servers[k], d.gpu, n, f"{where}.servers[{k}]")
        else:
            slot = next((x for x in servers if x.gpu.id == d.gpu and x.free >= n), None)
        if slot is None and not s.fleet.racks:
            slot = _auto_server(cat, d.gpu, n, len(servers), 0)
            servers.append(slot)
        if slot is None:
            raise DcsimError(Problem(where, f"{d.replicas} x tp={d.tp} x ep={d.ep}",
                                     f"room on {d.gpu} servers of fleet.racks for every "
                                     "replica (tp x ep GPUs inside one server)"))
        slot.free -= n
        slot.replicas.append(index)
        slot.tps.append(n)
        index += 1
    return index


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
    """Racks, rows and the facility, each with its budget (W), its servers and the
    scenario field that sets the budget (for errors)."""
    budgets = {n: (r.power_budget_kw * 1e3, f"fleet.racks[{i}].power_budget_kw")
               for i, r in enumerate(s.fleet.racks) for n in r.names()}
    row_budgets = {r.name: (r.power_budget_kw * 1e3, f"fleet.rows[{i}].power_budget_kw")
                   for i, r in enumerate(s.fleet.rows)}
    out = []
    for kind, table in (("rack", budgets), ("row", row_budgets)):
        members: dict[str, list[int]] = {}  # in order of first appearance
        for i, x in enumerate(servers):
            members.setdefault(x.rack if kind == "rack" else x.row, []).append(i)
        out += [Domain(kind, name, *table.get(name, (None, "")), tuple(m))
                for name, m in members.items()]
    fb = s.facility.power_budget_kw
    out.append(Domain("facility", "facility", fb * 1e3 if fb else None,
                      "facility.power_budget_kw", tuple(range(len(servers)))))
    return out


