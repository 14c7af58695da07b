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
                   the PSUs; servers without replicas at the default limit) <= budget
  reconfig         replicas started per service from t-1 to t <= max_replica_change

Objective: sum over t of period length x facility power (IT through the facility
model's affine overhead) [x price or carbon intensity]; IT = every GPU idle plus,
per replica, its power line above idle.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyomo.environ as pyo

from dcsim.hardware.facility import Overhead, facility_power_w


@dataclass
class Fleet:
    """Racks as (rack, row, gpu, servers, GPUs per server, idle and default-limit wall W/GPU)."""

    racks: pd.DataFrame  # rack, row, gpu, servers, gpus_per_server, idle_w_per_gpu, max_w_per_gpu
    rack_budget_w: dict[str, float]
    row_budget_w: dict[str, float]
    facility_budget_w: float | None


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


@dataclass
class Solved:
    status: str
    objective: float
    bound: float
    gap: float
    build_s: float
    solve_s: float
    n_vars: int
    n_cons: int
    model: pyo.ConcreteModel | None = field(default=None, repr=False)


def build(x: Inputs) -> pyo.ConcreteModel:
    m = pyo.ConcreteModel()
    t_ = range(x.demand.shape[1])
    tab = x.table.reset_index(drop=True)
    m.C = pyo.Set(initialize=list(tab.index))
    m.T = pyo.Set(initialize=list(t_))
    m.N = pyo.Var(m.C, m.T, domain=pyo.NonNegativeIntegers)
    m.y = pyo.Var(m.C, m.T, domain=pyo.NonNegativeReals)
    levels = _levels(tab)
    racks = x.fleet.racks
    m.G = pyo.Set(initialize=[(g, k, r) for r, g in zip(racks["rack"], racks["gpu"], strict=True)
                              for k in levels.get(g, [])], dimen=3)
    m.S = pyo.Var(m.G, m.T, domain=pyo.NonNegativeIntegers)
    _demand(m, x, tab)
    m.capacity = pyo.Constraint(m.C, m.T, rule=lambda m, c, t: m.y[c, t] <= float(
        tab.at[c, "planned_rps"]) * m.N[c, t])
    by_svc = tab.groupby("service_index").groups
    m.min_replicas = pyo.Constraint(
        list(by_svc), m.T, rule=lambda m, s, t: sum(m.N[c, t] for c in by_svc[s])
        >= x.min_replicas)
    _gpus(m, x, tab, levels)
    _power(m, x, levels)
    if x.max_change is not None:
        _reconfig(m, x, by_svc)
    m.it_w = pyo.Expression(m.T, rule=lambda m, t: _it_w(m, x, tab, t))
    m.cost = pyo.Expression(m.T, rule=lambda m, t: facility_power_w(m.it_w[t], x.overhead, t)
                            * x.period_s / 3.6e6 * float(x.weight[t]))
    penalty = _elastic_penalty(m, x) if x.elastic else 0.0
    m.objective = pyo.Objective(expr=sum(m.cost[t] for t in m.T) + penalty)
    return m


def _levels(tab: pd.DataFrame) -> dict[str, list[float]]:
    """Power-limit levels per GPU type (the default limit as its own level, -1)."""
    caps = tab["power_cap_w"].fillna(-1.0)
    return {g: sorted(set(caps[tab["gpu"] == g])) for g in tab["gpu"].unique()}


def _demand(m: pyo.ConcreteModel, x: Inputs, tab: pd.DataFrame) -> None:
    by_svc = tab.groupby("service_index").groups
    if x.elastic:
        m.unmet = pyo.Var(range(len(x.services)), m.T, domain=pyo.NonNegativeReals)

    def rule(m: pyo.ConcreteModel, s: int, t: int) -> object:
        served = sum(m.y[c, t] for c in by_svc.get(s, []))
        short = m.unmet[s, t] if x.elastic else 0.0
        return served + short == float(x.demand[s, t])

    m.demand = pyo.Constraint(range(len(x.services)), m.T, rule=rule)


def _gpus(m: pyo.ConcreteModel, x: Inputs, tab: pd.DataFrame,
          levels: dict[str, list[float]]) -> None:
    caps = tab["power_cap_w"].fillna(-1.0)
    per = dict(zip(x.fleet.racks["gpu"], x.fleet.racks["gpus_per_server"], strict=False))
    keys = [(g, k) for g, ks in levels.items() for k in ks]
    users = {key: [c for c in tab.index if (tab.at[c, "gpu"], caps[c]) == key] for key in keys}
    if x.elastic:  # extra servers of each type, in a rack of their own without a budget
        m.extra = pyo.Var(list(levels), m.T, domain=pyo.NonNegativeIntegers)
    m.gpus_at = pyo.Constraint(keys, m.T, rule=lambda m, g, k, t: sum(
        int(tab.at[c, "tp"]) * m.N[c, t] for c in users[(g, k)]) <= per.get(g, 0) * (
        sum(m.S[g, k, r, t] for (g2, k2, r) in m.G if (g2, k2) == (g, k))
        + (m.extra[g, t] if x.elastic and k == levels[g][0] else 0)))
    # no more servers at a level than its replicas fill: a server without replicas keeps
    # the default limit in the simulator, so it may not lower a budget's worst case
    m.gpus_tight = pyo.Constraint(keys, m.T, rule=lambda m, g, k, t: per.get(g, 0) * sum(
        m.S[g, k, r, t] for (g2, k2, r) in m.G if (g2, k2) == (g, k)) <= sum(
        int(tab.at[c, "tp"]) * m.N[c, t] for c in users[(g, k)]) + per.get(g, 0) - 1)
    have = x.fleet.racks.groupby(["rack", "gpu"])["servers"].sum()
    m.rack_servers = pyo.Constraint(list(have.index), m.T, rule=lambda m, r, g, t: sum(
        m.S[g, k, r, t] for k in levels.get(g, [])) <= int(have[(r, g)]))


def _rack_worst_w(m: pyo.ConcreteModel, x: Inputs, levels: dict[str, list[float]],
                  peak: dict[tuple[str, float], float], rack: str, t: int) -> object:
    total = 0.0
    for row in x.fleet.racks[x.fleet.racks["rack"] == rack].itertuples():
        used = sum(m.S[row.gpu, k, rack, t] for k in levels.get(row.gpu, []))
        total = total + row.gpus_per_server * (
            sum(peak[(row.gpu, k)] * m.S[row.gpu, k, rack, t] for k in levels.get(row.gpu, []))
            + row.max_w_per_gpu * (row.servers - used))
    return total


def _power(m: pyo.ConcreteModel, x: Inputs, levels: dict[str, list[float]]) -> None:
    tab = x.table
    peak = {(g, k): float(tab.loc[(tab["gpu"] == g) & (tab["power_cap_w"].fillna(-1.0) == k),
                                  "peak_w_per_gpu"].iloc[0]) for g, ks in levels.items()
            for k in ks}
    fl = x.fleet
    racks = list(dict.fromkeys(fl.racks["rack"]))
    if x.elastic:
        m.more_w = pyo.Var(racks + list(fl.row_budget_w) + ["facility"], m.T,
                           domain=pyo.NonNegativeReals)

    def more(name: str, t: int) -> object:
        return m.more_w[name, t] if x.elastic else 0.0

    budgeted = [r for r in racks if r in fl.rack_budget_w]
    m.rack_power = pyo.Constraint(budgeted, m.T, rule=lambda m, r, t: _rack_worst_w(
        m, x, levels, peak, r, t) <= fl.rack_budget_w[r] + more(r, t))
    rows = fl.racks.groupby("row")["rack"].unique()
    m.row_power = pyo.Constraint(list(fl.row_budget_w), m.T, rule=lambda m, w, t: sum(
        _rack_worst_w(m, x, levels, peak, r, t) for r in rows.get(w, []))
        <= fl.row_budget_w[w] + more(w, t))
    if fl.facility_budget_w is not None:
        m.facility_power = pyo.Constraint(m.T, rule=lambda m, t: sum(
            _rack_worst_w(m, x, levels, peak, r, t) for r in racks)
            <= fl.facility_budget_w + more("facility", t))


def _reconfig(m: pyo.ConcreteModel, x: Inputs, by_svc: dict) -> None:  # type: ignore[type-arg]
    later = [t for t in m.T if t > 0]
    m.started = pyo.Var(m.C, later, domain=pyo.NonNegativeReals)
    m.started_def = pyo.Constraint(m.C, later, rule=lambda m, c, t: m.started[c, t]
                                   >= m.N[c, t] - m.N[c, t - 1])
    m.reconfig = pyo.Constraint(list(by_svc), later, rule=lambda m, s, t: sum(
        m.started[c, t] for c in by_svc[s]) <= x.max_change)


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


def _it_w(m: pyo.ConcreteModel, x: Inputs, tab: pd.DataFrame, t: int) -> object:
    r = x.fleet.racks
    above = sum(replica_it_w(tab.loc[c], m.N[c, t], m.y[c, t]) for c in m.C)
    extra = 0.0
    if x.elastic:
        per = dict(zip(r["gpu"], r["gpus_per_server"] * r["idle_w_per_gpu"], strict=False))
        extra = sum(per.get(g, 0.0) * m.extra[g, t] for g in _levels(tab))
    return fleet_idle_w(r) + above + extra


def _elastic_penalty(m: pyo.ConcreteModel, x: Inputs) -> object:
    """Prefer extra budget (per kW) to extra servers to unmet demand (per req/s)."""
    scale = max(float(x.demand.max()), 1e-9)
    return (1e6 * sum(v for v in m.unmet.values()) / scale
            + 1e2 * sum(v for v in m.extra.values())
            + 1e-1 * sum(v for v in m.more_w.values()) / 1e3)


def solve(m: pyo.ConcreteModel, time_limit_s: float, mip_gap: float, build_s: float
          ) -> Solved:
    """Solve with HiGHS; load the incumbent if there is one."""
    opt = pyo.SolverFactory("appsi_highs")
    opt.config.time_limit = time_limit_s
    opt.config.mip_gap = mip_gap
    t0 = time.perf_counter()
    res = opt.solve(m, load_solutions=False)
    solve_s = time.perf_counter() - t0
    term = str(res.solver.termination_condition)
    n_vars = sum(v.index_set().__len__() for v in m.component_objects(pyo.Var))
    n_cons = sum(len(c) for c in m.component_objects(pyo.Constraint))
    found = res.best_feasible_objective is not None if hasattr(
        res, "best_feasible_objective") else term == "optimal"
    if term in ("optimal", "maxTimeLimit", "maxIterations") or found:
        try:
            m.solutions.load_from(res)
        except (RuntimeError, ValueError):
            return Solved("infeasible" if term == "infeasible" else term, np.nan, np.nan,
                          np.nan, build_s, solve_s, n_vars, n_cons, m)
        obj = float(pyo.value(m.objective))
        bound = float(res.problem.lower_bound)
        gap = abs(obj - bound) / max(abs(obj), 1e-12)
        return Solved("optimal" if term == "optimal" else "time limit", obj, bound, gap,
                      build_s, solve_s, n_vars, n_cons, m)
    return Solved(term, np.nan, np.nan, np.nan, build_s, solve_s, n_vars, n_cons, m)
