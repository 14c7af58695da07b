"""Solve the plan's MILP with HiGHS and read the solution back as plain numbers.

Stages: solve (a relaxation-guided first solution, then HiGHS with a time limit and
gap) -> check termination -> values per period. Without anything linking the periods
(no reconfiguration limit, no training jobs) each period is its own MILP.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import pyomo.environ as pyo
from pyomo.contrib.appsi.base import TerminationCondition
from pyomo.contrib.appsi.solvers import Highs

from dcsim.hardware.facility import Overhead
from dcsim.optimize.constraints import BUDGETS
from dcsim.optimize.model import Inputs, build


@dataclass
class Solved:
    """How a solve ended: status, objective and bound, gap, build and solve times, model
    size."""

    status: str
    objective: float
    bound: float
    gap: float
    build_s: float
    solve_s: float
    n_vars: int
    n_cons: int
    model: pyo.ConcreteModel | None = field(default=None, repr=False)



def solve(m: pyo.ConcreteModel, time_limit_s: float, mip_gap: float, build_s: float
          ) -> Solved:
    """Solve with HiGHS (Pyomo's APPSI interface); load the incumbent if there is one."""
    t0 = time.perf_counter()
    opt = Highs()
    opt.config.load_solution = False
    # the first solution may take a quarter of the limit per stage, the search the rest
    opt.config.warmstart = _incumbent(m, opt, time_limit_s / 4, mip_gap / 5)
    opt.config.time_limit = max(time_limit_s - (time.perf_counter() - t0), 1.0)
    opt.config.mip_gap = mip_gap
    res = opt.solve(m)
    solve_s = time.perf_counter() - t0
    n_vars = sum(len(v) for v in m.component_objects(pyo.Var))
    n_cons = sum(len(c) for c in m.component_objects(pyo.Constraint))
    term = res.termination_condition
    if res.best_feasible_objective is None:
        status = {TerminationCondition.infeasible: "infeasible",
                  TerminationCondition.unbounded: "unbounded",
                  TerminationCondition.infeasibleOrUnbounded: "infeasible"}.get(term, str(term))
        return Solved(status, np.nan, np.nan, np.nan, build_s, solve_s, n_vars, n_cons, m)
    res.solution_loader.load_vars()
    obj, bound = float(res.best_feasible_objective), float(res.best_objective_bound)
    gap = abs(obj - bound) / max(abs(obj), 1e-12)
    status = "optimal" if term == TerminationCondition.optimal else "time limit"
    return Solved(status, obj, bound, gap, build_s, solve_s, n_vars, n_cons, m)


def _incumbent(m: pyo.ConcreteModel, opt: Highs, time_limit_s: float, gap: float) -> bool:
    """Load a good first solution into m, so HiGHS can stop at the root; False if none.

    Solves the LP relaxation, then the MILP restricted to the configurations the LP
    uses (their replica counts round up, servers and limits stay free): a
    relaxation-induced neighbourhood. Without it HiGHS spends most of its time in
    root cuts before its own heuristics find a solution within the gap. The model is
    loaded into HiGHS once; later solves pass only the changed variable domains and
    bounds (constraint checks are switched off: Pyomo would rescan every one).
    """
    ints = [(v, v.domain) for v in m.component_data_objects(pyo.Var) if v.is_integer()]
    for v, dom in ints:
        v.domain = pyo.UnitInterval if dom is pyo.Binary else pyo.NonNegativeReals
    opt.config.time_limit = time_limit_s
    res = opt.solve(m)
    relaxed = res.termination_condition == TerminationCondition.optimal
    picks = list(m.N.values()) + (list(m.z.values()) if hasattr(m, "z") else [])
    if relaxed:
        res.solution_loader.load_vars(picks)
    for v, dom in ints:
        v.domain = dom
    u = opt.update_config
    u.check_for_new_or_removed_constraints = u.update_constraints = False
    u.check_for_new_or_removed_vars = u.check_for_new_or_removed_params = False
    u.check_for_new_objective = u.update_objective = u.update_named_expressions = False
    if not relaxed:
        return False
    unused = [(v, v.ub) for v in picks if (v.value or 0.0) < 1e-6]
    for v, _ in unused:
        v.setub(0)
    opt.config.mip_gap = gap
    res = opt.solve(m)
    found = res.best_feasible_objective is not None
    if found:
        res.solution_loader.load_vars()
    for v, ub in unused:
        v.setub(ub)
    return found


@dataclass
class Values:
    """The solution as plain numbers, keyed by global period."""

    N: dict[tuple[int, int], int] = field(default_factory=dict)
    y: dict[tuple[int, int], float] = field(default_factory=dict)
    S: dict[tuple[str, float, str, int], int] = field(default_factory=dict)
    z: dict[int, int] = field(default_factory=dict)  # training: the option each job runs
    J: dict[tuple[int, str], int] = field(default_factory=dict)  # its servers per rack

    def add(self, m: pyo.ConcreteModel, offset: int) -> None:
        """Read a solved model's values, its periods shifted by `offset`."""
        for (c, t), v in m.N.items():
            self.N[(c, t + offset)] = round(pyo.value(v))
            self.y[(c, t + offset)] = max(float(pyo.value(m.y[c, t])), 0.0)
        for (g, k, r, t), v in m.S.items():
            self.S[(g, k, r, t + offset)] = round(pyo.value(v))
        if hasattr(m, "z"):
            self.z = {o: round(pyo.value(v)) for o, v in m.z.items()}
            self.J = {k: round(pyo.value(v)) for k, v in m.J.items()}


def period_inputs(x: Inputs, t: int) -> Inputs:
    """The inputs of period t alone."""
    o = x.overhead
    grid = {k: None if v is None else v[[t]] for k, v in
            (("carbon_kg_per_kwh", x.carbon_kg_per_kwh), ("usd_per_kwh", x.usd_per_kwh))}
    return replace(x, demand=x.demand[:, [t]], weight=x.weight[[t]], overhead=Overhead(
        o.cool_a[[t]], o.cool_b[[t]], o.loss_a[[t]], o.loss_b[[t]]), **grid)


def solve_all(x: Inputs, time_limit_s: float, mip_gap: float,
              on_part: Callable[[int, Solved], None] | None = None
              ) -> tuple[Solved, Values, int | None]:
    """One MILP; or, when nothing links the periods (no reconfiguration limit, no training
    jobs, no cold starts), one per period, which is exact and much faster. Returns the failing period if
    one fails; `on_part` hears each solved part (period, or 0 for the one MILP)."""
    parts = [sub for _, sub in _parts(x)]
    values, done = Values(), []
    start = time.perf_counter()
    for i, sub in enumerate(parts):
        t0 = time.perf_counter()
        m = build(sub)
        left = max(time_limit_s - (time.perf_counter() - start), 1.0) / (len(parts) - i)
        solved = solve(m, left, mip_gap, time.perf_counter() - t0)
        if solved.status not in ("optimal", "time limit"):
            return solved, values, (i if len(parts) > 1 else None)
        values.add(m, i if len(parts) > 1 else 0)
        done.append(solved)
        if on_part is not None:
            on_part(i, solved)
    obj, bound = sum(d.objective for d in done), sum(d.bound for d in done)
    status = "optimal" if all(d.status == "optimal" for d in done) else "time limit"
    return Solved(status, obj, bound, abs(obj - bound) / max(abs(obj), 1e-12),
                  sum(d.build_s for d in done), sum(d.solve_s for d in done),
                  sum(d.n_vars for d in done), sum(d.n_cons for d in done)), values, None


def budget_values(x: Inputs, v: Values) -> pd.DataFrame:
    """What 1 kW more of each budget is worth, per budgeted rack, row or facility and period.

    The value is the dual of the budget constraint in the plan's restricted LP: the
    MILP with integrality relaxed and every replica count, server count and job option
    the plan leaves at zero held at zero (a budget constraint with all integers fixed
    holds no variable, so its dual would say nothing). It is the objective (kWh, USD or
    kg CO2e of that period, as the objective weighs it) saved per kW more budget while
    the plan keeps its configurations and limits; 0 where the budget does not bind.
    """
    rows: list[dict[str, object]] = []
    for offset, sub in _parts(x):
        m = build(sub)
        _restrict(m, v, offset)
        opt = Highs()
        res = opt.solve(m)
        if res.termination_condition != TerminationCondition.optimal:
            continue
        res.solution_loader.load_vars()
        duals = res.solution_loader.get_duals()
        for family in BUDGETS:
            for idx, con in getattr(m, family).items():
                name, t = ("facility", idx) if family == "facility_power" else idx
                upper = float(pyo.value(con.upper))
                rows.append({"domain": family.removesuffix("_power"), "name": name,
                             "period": int(t) + offset, "budget_kw": upper / 1e3,
                             "binding": upper - float(pyo.value(con.body)) <= 1e-6 * max(
                                 abs(upper), 1.0),
                             "value_per_kw": max(-float(duals.get(con, 0.0)) * 1e3, 0.0)})
    return pd.DataFrame(rows, columns=["domain", "name", "period", "budget_kw", "binding",
                                       "value_per_kw"])


def _parts(x: Inputs) -> list[tuple[int, Inputs]]:
    """The MILPs solve_all solves: the whole horizon, or one per period."""
    n = x.demand.shape[1]
    if x.max_change is not None or x.jobs is not None or x.cold_starts or n == 1:
        return [(0, x)]
    return [(t, period_inputs(x, t)) for t in range(n)]


def _restrict(m: pyo.ConcreteModel, v: Values, offset: int) -> None:
    """Relax integrality; hold at zero what the plan leaves at zero."""
    for var in m.component_data_objects(pyo.Var):
        if var.is_integer():
            var.domain = pyo.UnitInterval if var.domain is pyo.Binary else pyo.NonNegativeReals
    for (c, t), var in m.N.items():
        if v.N.get((c, t + offset), 0) == 0:
            var.setub(0)
    for (g, k, r, t), var in m.S.items():
        if v.S.get((g, k, r, t + offset), 0) == 0:
            var.setub(0)
    for o, var in m.z.items():
        if v.z.get(o, 0) == 0:
            var.setub(0)
    for key, var in m.J.items():
        if v.J.get(key, 0) == 0:
            var.setub(0)
