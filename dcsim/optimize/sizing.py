"""Sizing as a MILP: the least GPUs that carry every service's demand within its SLOs.

Stages: build -> solve (HiGHS) -> check termination -> extract, twice (lexicographic):
first the fewest GPUs (or the least server capital cost), then, with that held, the
least IT power among the fleets that achieve it.

Decisions: replicas N[c,t] of each usable (service, configuration) c in period t, the
load y[c,t] they carry (req/s), and GPUs G[g] of each type.

  demand[s,t]     sum over c of s of y[c,t] = demand[s,t]
  capacity[c,t]   y[c,t] <= planned rate per replica of c x N[c,t]
  min_replicas    sum over c of s of N[c,t] >= min_replicas
  gpus[g,t]       sum over c on g of tp_c N[c,t] + training GPUs of g in t <= G[g]

Stage 1 objective: sum_g weight_g G[g] (weight 1: GPUs; or capital cost per GPU).
Stage 2 objective: sum_{c,t} (power_a_w N + power_b_w_per_rps y), the replicas' wall
power line of the capacity table, with stage 1's objective held at its optimum.
Replicas can change from period to period (a fleet serves the day's peaks with the
same GPUs), so G is each type's peak over the periods.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyomo.environ as pyo

from dcsim.errors import DcsimError, Problem
from dcsim.optimize.solver import solve


@dataclass(frozen=True)
class SizingInputs:
    """What the sizing MILP reads: usable capacity-table rows (index = config id),
    demand (services x periods, req/s), GPUs training needs per (type, period), the
    weight of one GPU of each type in stage 1, and the availability floor."""

    table: pd.DataFrame
    demand: np.ndarray
    services: list[str]
    training_gpus: dict[tuple[str, int], int]
    gpu_weight: dict[str, float]
    min_replicas: int


@dataclass(frozen=True)
class Sized:
    """The MILP's answer: replicas and load per (config, period), GPUs per type."""

    replicas: dict[tuple[int, int], int]
    load: dict[tuple[int, int], float]
    gpus: dict[str, int]
    objective: float
    status: str


def build(x: SizingInputs, fewest: float | None = None) -> pyo.ConcreteModel:
    """The model; with `fewest` (stage 1's optimum) the power stage, else the GPU stage."""
    tab, n_t = x.table, x.demand.shape[1]
    types = sorted(set(tab["gpu"]) | {g for g, _ in x.training_gpus})
    m = pyo.ConcreteModel()
    m.C, m.T, m.G_types = pyo.Set(initialize=list(tab.index)), pyo.RangeSet(0, n_t - 1), \
        pyo.Set(initialize=types)
    m.N = pyo.Var(m.C, m.T, domain=pyo.NonNegativeIntegers)
    m.y = pyo.Var(m.C, m.T, domain=pyo.NonNegativeReals)
    m.G = pyo.Var(m.G_types, domain=pyo.NonNegativeIntegers)
    # plain dicts and lists: Pyomo rules read them fast (pandas .at is slow in loops)
    tp, rate = tab["tp"].astype(int).to_dict(), tab["planned_rps"].astype(float).to_dict()
    a, b = tab["power_a_w"].astype(float).to_dict(), tab["power_b_w_per_rps"].astype(
        float).to_dict()
    by_service = {s: list(tab.index[tab["service_index"] == s]) for s in range(len(x.services))}
    on_gpu = {g: list(tab.index[tab["gpu"] == g]) for g in types}
    m.demand = pyo.Constraint(range(len(x.services)), m.T, rule=lambda m, s, t: sum(
        m.y[c, t] for c in by_service[s]) == float(x.demand[s, t]))
    m.capacity = pyo.Constraint(m.C, m.T, rule=lambda m, c, t: m.y[c, t] <= rate[c] * m.N[c, t])
    m.min_replicas = pyo.Constraint(range(len(x.services)), m.T, rule=lambda m, s, t: sum(
        m.N[c, t] for c in by_service[s]) >= x.min_replicas)
    m.gpus = pyo.Constraint(m.G_types, m.T, rule=lambda m, g, t: sum(
        tp[c] * m.N[c, t] for c in on_gpu[g]) + x.training_gpus.get((g, t), 0) <= m.G[g])
    fleet = sum(x.gpu_weight.get(g, 1.0) * m.G[g] for g in types)
    power = sum(a[c] * m.N[c, t] + b[c] * m.y[c, t] for c in m.C for t in m.T)
    if fewest is None:
        m.objective = pyo.Objective(expr=fleet, sense=pyo.minimize)
    else:
        m.least_fleet = pyo.Constraint(expr=fleet <= fewest * (1 + 1e-9) + 1e-9)
        m.objective = pyo.Objective(expr=power, sense=pyo.minimize)
    return m


def size(x: SizingInputs, time_limit_s: float, least_power: bool = True) -> Sized:
    """Both stages (the first alone without `least_power`: the same fleet, configurations
    as it found them); a clear error when no fleet can carry the demand."""
    first = solve(build(x), time_limit_s, 0.0, 0.0)
    _check(first.status, x)
    second = solve(build(x, first.objective), time_limit_s, 1e-3, 0.0) if least_power \
        else first
    _check(second.status, x)
    m = second.model
    assert m is not None
    return Sized({k: round(pyo.value(v)) for k, v in m.N.items()},
                 {k: max(float(pyo.value(v)), 0.0) for k, v in m.y.items()},
                 {g: round(pyo.value(v)) for g, v in m.G.items()}, first.objective,
                 second.status)


def _check(status: str, x: SizingInputs) -> None:
    if status not in ("optimal", "time limit"):
        raise DcsimError(Problem("sizing", f"HiGHS: {status}", "a fleet that carries every "
                                 f"service's demand ({', '.join(x.services)}) within its SLO"))


DEPLOYMENT_COLUMNS = ["service", "service_index", "config", "gpu", "tp", "power_cap_w",
                      "max_num_seqs", "planned_rps", "power_a_w", "power_b_w_per_rps",
                      "idle_w_per_gpu", "period", "replicas", "load_rps"]


def deployments(x: SizingInputs, v: Sized) -> pd.DataFrame:
    """Per (service, configuration, period) with replicas: the plan's deployment rows, in
    the optimizer's shape (dcsim.optimize.verify reads them)."""
    cols = DEPLOYMENT_COLUMNS[:-3]
    rows = [x.table.loc[c, cols].to_dict() | {"period": t, "replicas": n,
                                               "load_rps": v.load[(c, t)]}
            for (c, t), n in sorted(v.replicas.items()) if n > 0]
    return pd.DataFrame(rows, columns=DEPLOYMENT_COLUMNS)


def servers_needed(tps: list[int], gpus_per_server: int) -> int:
    """Servers that hold replicas of these TP degrees, each inside one server: first-fit
    decreasing (exact when every degree divides the next, as powers of two do)."""
    free: list[int] = []
    for tp in sorted(tps, reverse=True):
        slot = next((i for i, f in enumerate(free) if f >= tp), None)
        if slot is None:
            free.append(gpus_per_server)
            slot = len(free) - 1
        free[slot] -= tp
    return len(free)
