"""The plan as a MILP: build -> solve (HiGHS) -> check termination -> extract DataFrames.

Decisions per period t: replicas N[s,c,t] of each (service, configuration), the load
y[s,c,t] they carry (req/s), and servers S[g,k,r,t] of GPU type g in rack r run at
power-limit level k (a server's GPUs share one limit, as the simulator sets them).

  demand[s,t]      sum_c y = demand (- unmet, only when explaining infeasibility)
  capacity[s,c,t]  y <= planned rate per replica x N
  min_replicas     sum_c N >= min_replicas
  gpus_at[g,k,t]   sum of tp x N over configurations on (g, k) <= GPUs of S[g,k,.,t]
  rack_servers     sum_k S[g,k,r,t] <= servers of g in rack r
  rack/row/facility_power  worst case (GPUs at their limit, hosts at full load, through
                   the PSUs; servers without replicas parked at the lowest limit, as
                   the simulator enforces budgets) <= budget
  reconfig         replicas started per service from t-1 to t <= max_replica_change

Objective: sum over t of period length x facility power (IT through the facility
model's affine overhead) [x price or carbon intensity]; IT = every GPU idle plus,
per replica, its power line above idle.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyomo.environ as pyo

from dcsim.hardware.facility import Overhead, facility_power_w
from dcsim.optimize import jobs


@dataclass
class Fleet:
    """Racks as (rack, row, gpu, servers, GPUs per server, wall W/GPU idle and at limits)."""

    racks: pd.DataFrame  # rack, row, gpu, servers, gpus_per_server, idle/max/min_w_per_gpu
    rack_budget_w: dict[str, float]
    row_budget_w: dict[str, float]
    facility_budget_w: float | None
    network_w: float = 0.0  # the leaf-spine fabric's ports at idle (inference moves little)


@dataclass
class Inputs:
    table: pd.DataFrame  # capacity table rows with planned_rps > 0
    demand: np.ndarray  # services x periods, req/s
    services: list[str]
    fleet: Fleet
    period_s: float
    overhead: Overhead  # per period
    weight: np.ndarray  # per period: 1 (energy), USD/kWh (cost) or kg/kWh (carbon)
    min_replicas: int
    max_change: int | None
    elastic: bool = False  # explain infeasibility: unmet demand, extra servers and budget
    jobs: pd.DataFrame | None = None  # training: one row per (job, power limit) option
    spares: int = 0  # servers per GPU type the job scheduler keeps free as hot spares
    servers_off: bool = False  # unused servers are switched off (fleet.unused_servers)


@dataclass
class _Data:
    """The table and fleet as plain lists and dicts: Pyomo rules read them fast."""

    tp: list[int]
    rate: list[float]
    above: list[float]  # W above idle GPUs per replica
    slope: list[float]  # W per req/s
    by_svc: dict[int, list[int]]
    levels: dict[str, list[float]]
    users: dict[tuple[str, float], list[int]]
    per: dict[str, int]  # GPUs per server
    at_level: dict[tuple[str, float], list[str]]  # racks with that GPU type
    rack_rows: dict[str, list[tuple[str, int, int, float]]]  # gpu, GPUs/server, servers, min W
    peak: dict[tuple[str, float], float]
    have: dict[tuple[str, str], int]


def _data(x: Inputs) -> _Data:
    tab = x.table.reset_index(drop=True)
    caps = tab["power_cap_w"].fillna(-1.0).tolist()
    gpu = tab["gpu"].tolist()
    levels = _levels(tab)
    users: dict[tuple[str, float], list[int]] = {(g, k): [] for g, ks in levels.items()
                                                 for k in ks}
    for c, key in enumerate(zip(gpu, caps, strict=True)):
        users[key].append(c)
    rows = x.fleet.racks.groupby(["rack", "gpu"], sort=False).agg(
        servers=("servers", "sum"), gps=("gpus_per_server", "first"),
        min_w=("min_w_per_gpu", "first")).reset_index()
    rack_rows: dict[str, list[tuple[str, int, int, float]]] = {}
    for r in rows.itertuples(index=False):
        rack_rows.setdefault(r.rack, []).append((r.gpu, int(r.gps), int(r.servers),
                                                 float(r.min_w)))
    peak_w = tab["peak_w_per_gpu"].tolist()
    return _Data(
        tp=tab["tp"].astype(int).tolist(), rate=tab["planned_rps"].astype(float).tolist(),
        above=[float(replica_it_w(r, 1, 0.0)) for r in tab.to_dict("records")],
        slope=tab["power_b_w_per_rps"].astype(float).tolist(),
        by_svc={int(k): list(v) for k, v in tab.groupby("service_index").groups.items()},
        levels=levels, users=users,
        per={g: gps for rs in rack_rows.values() for g, gps, _, _ in rs},
        at_level={(g, k): [r for r, rs in rack_rows.items() if any(g == q[0] for q in rs)]
                  for g, ks in levels.items() for k in ks},
        rack_rows=rack_rows,
        peak={key: float(peak_w[cs[0]]) for key, cs in users.items()},
        have={(r, g): n for r, rs in rack_rows.items() for g, _, n, _ in rs})


def build(x: Inputs) -> pyo.ConcreteModel:
    m = pyo.ConcreteModel()
    d = _data(x)
    m.C = pyo.Set(initialize=range(len(d.tp)))
    m.T = pyo.Set(initialize=range(x.demand.shape[1]))
    m.N = pyo.Var(m.C, m.T, domain=pyo.NonNegativeIntegers)
    m.y = pyo.Var(m.C, m.T, domain=pyo.NonNegativeReals)
    m.G = pyo.Set(initialize=[(g, k, r) for (g, k), rs in d.at_level.items() for r in rs],
                  dimen=3)
    m.S = pyo.Var(m.G, m.T, domain=pyo.NonNegativeIntegers)
    _demand(m, x, d)
    m.capacity = pyo.Constraint(m.C, m.T, rule=lambda m, c, t: m.y[c, t]
                                <= d.rate[c] * m.N[c, t])
    m.min_replicas = pyo.Constraint(
        list(d.by_svc), m.T, rule=lambda m, s, t: pyo.quicksum(m.N[c, t] for c in d.by_svc[s])
        >= x.min_replicas)
    if x.jobs is not None:
        racks_of: dict[str, list[str]] = {}
        for r, rs in d.rack_rows.items():
            for g, _, _, _ in rs:
                racks_of.setdefault(g, []).append(r)
        jobs.add(m, x, racks_of)
    _gpus(m, x, d)
    _power(m, x, d)
    if x.max_change is not None:
        _reconfig(m, x, d)
    idle = (0.0 if x.servers_off else fleet_idle_w(x.fleet.racks)) + x.fleet.network_w
    m.it_w = pyo.Expression(m.T, rule=lambda m, t: idle + _on_idle_w(m, x, d, t) + pyo.quicksum(
        d.above[c] * m.N[c, t] + d.slope[c] * m.y[c, t] for c in m.C) + jobs.it_w(m, x, t) + (
        _extra_idle_w(m, x, d, t) if x.elastic else 0.0))
    m.cost = pyo.Expression(m.T, rule=lambda m, t: facility_power_w(m.it_w[t], x.overhead, t)
                            * x.period_s / 3.6e6 * float(x.weight[t]))
    penalty = _elastic_penalty(m, x) if x.elastic else 0.0
    m.objective = pyo.Objective(expr=pyo.quicksum(m.cost[t] for t in m.T)
                                + jobs.after_cost(m, x) + penalty)
    return m


def period_it_w(dep: pd.DataFrame, x: Inputs, t: int) -> float:
    """Predicted IT power in period t of a plan or baseline (deployment rows), W: every
    GPU idle (or, with unused servers switched off, those of the servers in use) plus
    each replica's power above idle."""
    mine = dep[dep["period"] == t] if len(dep) else dep
    idle = servers_on_idle_w(mine, x) if x.servers_off else fleet_idle_w(x.fleet.racks)
    return idle + x.fleet.network_w + sum(
        float(replica_it_w(r, r["replicas"], r["load_rps"])) for _, r in mine.iterrows())


def servers_on_idle_w(dep: pd.DataFrame, x: Inputs) -> float:
    """Idle wall power of the servers one period's replicas occupy, W: the servers the plan
    names, or (baselines) as few as hold each GPU type's replicas."""
    if not len(dep):
        return 0.0
    r = x.fleet.racks.groupby("gpu").agg(gps=("gpus_per_server", "first"),
                                          idle=("idle_w_per_gpu", "first"))
    if "servers" in dep:
        names = dep.explode("servers").drop_duplicates("servers")
        count = names.groupby("gpu").size()
    else:
        gpus = (dep["tp"] * dep["replicas"]).groupby(dep["gpu"]).sum()
        count = np.ceil(gpus / r["gps"].reindex(gpus.index))
    return float((count * r["gps"].reindex(count.index) * r["idle"].reindex(count.index)).sum())


def _levels(tab: pd.DataFrame) -> dict[str, list[float]]:
    """Power-limit levels per GPU type (the default limit as its own level, -1)."""
    caps = tab["power_cap_w"].fillna(-1.0)
    return {g: sorted(set(caps[tab["gpu"] == g])) for g in tab["gpu"].unique()}


def _demand(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    if x.elastic:
        m.unmet = pyo.Var(range(len(x.services)), m.T, domain=pyo.NonNegativeReals)

    def rule(m: pyo.ConcreteModel, s: int, t: int) -> object:
        served = pyo.quicksum(m.y[c, t] for c in d.by_svc.get(s, []))
        short = m.unmet[s, t] if x.elastic else 0.0
        return served + short == float(x.demand[s, t])

    m.demand = pyo.Constraint(range(len(x.services)), m.T, rule=rule)


def _level_gpus(m: pyo.ConcreteModel, d: _Data, g: str, k: float, t: int) -> object:
    return d.per[g] * pyo.quicksum(m.S[g, k, r, t] for r in d.at_level[(g, k)])


def _gpus(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    keys = list(d.users)
    if x.elastic:  # extra servers of each type, in a rack of their own without a budget
        m.extra = pyo.Var(list(d.levels), m.T, domain=pyo.NonNegativeIntegers)

    def need(m: pyo.ConcreteModel, g: str, k: float, t: int) -> object:
        return pyo.quicksum(d.tp[c] * m.N[c, t] for c in d.users[(g, k)])

    m.gpus_at = pyo.Constraint(keys, m.T, rule=lambda m, g, k, t: need(m, g, k, t)
                               <= _level_gpus(m, d, g, k, t) + (
        d.per[g] * m.extra[g, t] if x.elastic and k == d.levels[g][0] else 0))
    m.rack_servers = pyo.Constraint(list(d.have), m.T, rule=lambda m, r, g, t: _bounded(
        pyo.quicksum(m.S[g, k, r, t] for k in d.levels.get(g, []))
        + jobs.servers_in(m, x, r, g, t), d.have[(r, g)]))
    if x.jobs is not None and x.spares:  # the scheduler's hot spares stay free
        total = {g: sum(n for (_, g2), n in d.have.items() if g2 == g) for g in d.per}
        gts = [(g, t) for g in sorted(set(x.jobs["gpu"])) for t in m.T]
        m.spares = pyo.Constraint(gts, rule=lambda m, g, t: _bounded(pyo.quicksum(
            m.S[g, k, r, t] for k in d.levels.get(g, []) for r in d.at_level[(g, k)])
            + pyo.quicksum(jobs.servers_in(m, x, r, g, t) for r in d.rack_rows),
            total.get(g, 0) - x.spares))
    # identical racks (same servers, budget and row) are interchangeable: fill them in
    # order, so the solver does not search their permutations; not with jobs, whose
    # racks hold over all periods while the order would be imposed per period
    pairs = [] if x.jobs is not None else [
        (a, b, g) for a, b in _twins(x, d) for g, _, _, _ in d.rack_rows[a] if g in d.levels]
    m.rack_order = pyo.Constraint(range(len(pairs)), m.T, rule=lambda m, i, t: pyo.quicksum(
        m.S[pairs[i][2], k, pairs[i][0], t] for k in d.levels[pairs[i][2]]) >= pyo.quicksum(
        m.S[pairs[i][2], k, pairs[i][1], t] for k in d.levels[pairs[i][2]]))


def _bounded(expr: object, bound: float) -> object:
    """expr <= bound, skipped where no variable enters (a type without candidates)."""
    return pyo.Constraint.Skip if isinstance(expr, int | float) else expr <= bound


def _twins(x: Inputs, d: _Data) -> list[tuple[str, str]]:
    """Consecutive pairs of racks that differ only in name."""
    row_of = dict(zip(x.fleet.racks["rack"], x.fleet.racks["row"], strict=False))
    groups: dict[tuple[object, ...], list[str]] = {}
    for r, rows in d.rack_rows.items():
        row = row_of.get(r)
        key = (tuple(rows), x.fleet.rack_budget_w.get(r),
               row if row in x.fleet.row_budget_w else None)
        groups.setdefault(key, []).append(r)
    return [(a, b) for g in groups.values() for a, b in itertools.pairwise(g)]


def _rack_worst_w(m: pyo.ConcreteModel, x: Inputs, d: _Data, rack: str, t: int) -> object:
    parked = {g: 0.0 if x.servers_off else w for g, _, _, w in d.rack_rows[rack]}
    total = jobs.rack_w(m, x, rack, t, parked)
    for g, gps, servers, _ in d.rack_rows[rack]:
        min_w = parked[g]  # a server without work draws this per GPU (nothing when off)
        ks = d.levels.get(g, [])
        total += gps * (pyo.quicksum((d.peak[(g, k)] - min_w) * m.S[g, k, rack, t] for k in ks)
                        + min_w * servers)
    return total


def _power(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    fl = x.fleet
    racks = list(d.rack_rows)
    if x.elastic:
        m.more_w = pyo.Var(racks + list(fl.row_budget_w) + ["facility"], m.T,
                           domain=pyo.NonNegativeReals)

    def more(name: str, t: int) -> object:
        return m.more_w[name, t] if x.elastic else 0.0

    m.rack_w = pyo.Expression(racks, m.T, rule=lambda m, r, t: _rack_worst_w(m, x, d, r, t))
    budgeted = [r for r in racks if r in fl.rack_budget_w]
    m.rack_power = pyo.Constraint(budgeted, m.T, rule=lambda m, r, t: m.rack_w[r, t]
                                  <= fl.rack_budget_w[r] + more(r, t))
    rows = fl.racks.groupby("row")["rack"].unique()
    m.row_power = pyo.Constraint(list(fl.row_budget_w), m.T, rule=lambda m, w, t: pyo.quicksum(
        m.rack_w[r, t] for r in rows.get(w, [])) <= fl.row_budget_w[w] + more(w, t))
    if fl.facility_budget_w is not None:
        m.facility_power = pyo.Constraint(m.T, rule=lambda m, t: pyo.quicksum(
            m.rack_w[r, t] for r in racks) <= fl.facility_budget_w + more("facility", t))


def _reconfig(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    later = [t for t in m.T if t > 0]
    m.started = pyo.Var(m.C, later, domain=pyo.NonNegativeReals)
    m.started_def = pyo.Constraint(m.C, later, rule=lambda m, c, t: m.started[c, t]
                                   >= m.N[c, t] - m.N[c, t - 1])
    m.reconfig = pyo.Constraint(list(d.by_svc), later, rule=lambda m, s, t: pyo.quicksum(
        m.started[c, t] for c in d.by_svc[s]) <= x.max_change)


def _on_idle_w(m: pyo.ConcreteModel, x: Inputs, d: _Data, t: int) -> object:
    """With unused servers switched off: idle power of the servers replicas use, W."""
    if not x.servers_off:
        return 0.0
    r = x.fleet.racks
    per = dict(zip(r["gpu"], r["gpus_per_server"] * r["idle_w_per_gpu"], strict=False))
    return pyo.quicksum(per[g] * m.S[g, k, rack, t] for g, k, rack in m.G)


def _extra_idle_w(m: pyo.ConcreteModel, x: Inputs, d: _Data, t: int) -> object:
    r = x.fleet.racks
    per = dict(zip(r["gpu"], r["gpus_per_server"] * r["idle_w_per_gpu"], strict=False))
    return pyo.quicksum(per.get(g, 0.0) * m.extra[g, t] for g in d.levels)


def fleet_idle_w(racks: pd.DataFrame) -> float:
    """Wall power of the fleet with every GPU idle, W."""
    return float((racks["servers"] * racks["gpus_per_server"] * racks["idle_w_per_gpu"]).sum())


def replica_it_w(row: pd.Series | dict, replicas: object, load_rps: object) -> object:
    """IT power replicas add above idle GPUs, W: (a - tp x idle per GPU) x N + b x load.

    The one definition the MILP (on Pyomo variables), the plan's predicted energy and
    the baselines (on numbers) share.
    """
    above_idle = float(row["power_a_w"]) - int(row["tp"]) * float(row["idle_w_per_gpu"])
    return above_idle * replicas + float(row["power_b_w_per_rps"]) * load_rps


def _elastic_penalty(m: pyo.ConcreteModel, x: Inputs) -> object:
    """Prefer extra budget (per kW) to extra servers to unmet demand (per req/s)."""
    scale = max(float(x.demand.max()), 1e-9)
    return (1e6 * sum(v for v in m.unmet.values()) / scale
            + 1e2 * sum(v for v in m.extra.values())
            + 1e-1 * sum(v for v in m.more_w.values()) / 1e3)
