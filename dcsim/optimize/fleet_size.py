"""From replicas to hardware: the servers and racks a sized plan needs, and the scenario
of that fleet.

Each GPU type's servers and racks follow the scenario's own rack design for it (the
first rack of fleet.racks holding that GPU: its server type, servers per rack, row
and budget); a GPU type no rack holds gets the catalog's largest server of it, in
racks of the first rack's budget holding as many as its nameplate power allows.
Per period, replicas are packed first-fit decreasing into servers (TP inside one
server); training jobs take whole servers, plus the scheduler's hot spares; the
fleet is each type's peak over the periods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dcsim.catalog import Catalog
from dcsim.errors import DcsimError, Problem
from dcsim.optimize.jobs import shares
from dcsim.optimize.sizing import servers_needed
from dcsim.scenario import Rack, Scenario, ServerGroup


@dataclass(frozen=True)
class Template:
    """How one GPU type is racked: server type, GPUs per server, servers per rack."""

    gpu: str
    server: str
    gpus_per_server: int
    servers_per_rack: int
    rack: str
    row: str
    budget_kw: float
    nameplate_w: float  # one server's maximum power


def templates(s: Scenario, cat: Catalog, gpus: set[str]) -> dict[str, Template]:
    """The rack design of each GPU type (see the module docstring)."""
    out: dict[str, Template] = {}
    for rack in s.fleet.racks:
        for grp in rack.servers:
            spec = cat.server(grp.type)
            if spec.gpu not in out:
                out[spec.gpu] = Template(spec.gpu, grp.type, spec.gpus_per_server, grp.count,
                                         rack.name, rack.row, rack.power_budget_kw,
                                         spec.max_power_w)
    if not s.fleet.racks:
        raise DcsimError(Problem("fleet.racks", [], "at least one rack: the design the "
                                 "sized fleet repeats (server type, servers per rack, budget)"))
    budget = s.fleet.racks[0].power_budget_kw
    for g in sorted(gpus - set(out)):
        sid, spec = max(((k, v) for k, v in cat.servers.items() if v.gpu == g),
                        key=lambda kv: kv[1].gpus_per_server)
        per = max(1, math.floor(budget * 1e3 / spec.max_power_w))
        out[g] = Template(g, sid, spec.gpus_per_server, per, f"{g.lower()}-rack", "row-1",
                          budget, spec.max_power_w)
    return out


def hardware(dep: pd.DataFrame, job_servers: dict[tuple[str, int], int], n_periods: int,
             tpl: dict[str, Template]) -> pd.DataFrame:
    """Per GPU type: peak GPUs in use, servers and racks (the peak over periods)."""
    rows = []
    types = (set(dep["gpu"]) if len(dep) else set()) | {g for g, _ in job_servers}
    for g in sorted(types):
        t = tpl[g]
        per_period = []
        for p in range(n_periods):
            mine = dep[(dep["gpu"] == g) & (dep["period"] == p)] if len(dep) else dep
            tps = [int(r["tp"]) for _, r in mine.iterrows() for _ in range(int(r["replicas"]))]
            gpus = sum(tps)
            jobs = job_servers.get((g, p), 0)
            per_period.append((gpus + jobs * t.gpus_per_server,
                               servers_needed(tps, t.gpus_per_server) + jobs))
        gpus = max(v[0] for v in per_period)
        servers = max(v[1] for v in per_period)
        rows.append({"gpu": g, "gpus": int(gpus), "server": t.server,
                     "gpus_per_server": t.gpus_per_server, "servers": int(servers),
                     "servers_per_rack": t.servers_per_rack,
                     "racks": math.ceil(servers / t.servers_per_rack),
                     "rack_design": t.rack, "rack_budget_kw": t.budget_kw,
                     "nameplate_kw": servers * t.nameplate_w / 1e3})
    return pd.DataFrame(rows, columns=["gpu", "gpus", "server", "gpus_per_server", "servers",
                                       "servers_per_rack", "racks", "rack_design",
                                       "rack_budget_kw", "nameplate_kw"])


def sized_scenario(s: Scenario, fleet: pd.DataFrame, tpl: dict[str, Template]) -> Scenario:
    """The scenario with fleet.racks replaced by the sized racks (a last, partly filled rack
    per type), no row budgets and no facility budget: what is needed, not what the site
    allows (the run-out table compares the two)."""
    racks = []
    for _, r in fleet.iterrows():
        t = tpl[str(r["gpu"])]
        full, rest = divmod(int(r["servers"]), t.servers_per_rack)
        name = f"sized-{t.server}"
        if full:
            racks.append(Rack(name=name, row=t.row, count=full, power_budget_kw=t.budget_kw,
                              servers=[ServerGroup(type=t.server, count=t.servers_per_rack)]))
        if rest:
            racks.append(Rack(name=f"{name}-last", row=t.row, power_budget_kw=t.budget_kw,
                              servers=[ServerGroup(type=t.server, count=rest)]))
    fleet_ = s.fleet.model_copy(update={"racks": racks, "rows": []})
    fac = s.facility.model_copy(update={"power_budget_kw": None})
    return Scenario.model_validate(s.model_copy(update={
        "fleet": fleet_, "facility": fac}).model_dump())


def job_servers(jobs: pd.DataFrame, n: int, period_s: float, gpus_per_server: dict[str, int],
                spares: int) -> dict[tuple[str, int], int]:
    """Servers training jobs hold per (GPU type, period): each running job's GPUs in whole
    servers, plus the scheduler's spares of each type in periods a job of it runs."""
    out: dict[tuple[str, int], int] = {}
    if jobs is None or not len(jobs):
        return out
    inside, _ = shares(jobs, n, period_s)
    for o, (_, r) in enumerate(jobs.iterrows()):
        g = str(r["gpu"])
        for t in np.flatnonzero(inside[o] > 0):
            out[(g, int(t))] = out.get((g, int(t)), 0) + math.ceil(
                int(r["gpus"]) / gpus_per_server[g])
    for (g, t) in list(out):
        out[(g, t)] += spares
    return out
