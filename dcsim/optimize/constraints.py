"""The plan's constraint families, one function each: f(m, x, d) adds its constraints
(named as in dcsim.optimize.model's docstring, so an infeasibility can be explained).

Every family reads the model's variables (model.variables), the inputs and the plain
data view; none tests for another family. `FAMILIES` is the order `build` applies
them in; a scenario-specific constraint is a callable of the same shape passed to
`build(x, extra=...)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pyomo.environ as pyo

from dcsim.optimize import jobs

if TYPE_CHECKING:
    from dcsim.optimize.model import Inputs, _Data

Family = Callable[[pyo.ConcreteModel, "Inputs", "_Data"], None]


def demand(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    """demand[s,t]: the load of a service's configurations adds up to its demand (less
    what is unmet, only in the elastic model that explains infeasibility)."""
    def rule(m: pyo.ConcreteModel, s: int, t: int) -> object:
        """Configurations' load plus unmet demand equals the service's demand in period t."""
        served = pyo.quicksum(m.y[c, t] for c in d.by_svc.get(s, []))
        short = m.unmet[s, t] if x.elastic else 0.0
        return served + short == float(x.demand[s, t])

    m.demand = pyo.Constraint(range(len(x.services)), m.T, rule=rule)


def capacity(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    """capacity[c,t]: a configuration carries at most its planned rate per replica."""
    m.capacity = pyo.Constraint(m.C, m.T, rule=lambda m, c, t: m.y[c, t]
                                <= d.rate[c] * m.N[c, t])


def min_replicas(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    """min_replicas[s,t]: every service keeps at least min_replicas replicas."""
    m.min_replicas = pyo.Constraint(
        list(d.by_svc), m.T, rule=lambda m, s, t: pyo.quicksum(m.N[c, t] for c in d.by_svc[s])
        >= x.min_replicas)


def job_choice(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    """job_option[j]: each training job runs at one power limit; job_servers[o]: the
    option chosen holds its servers, spread over the racks it may use."""
    by_job = jobs.options_by_job(x.jobs)
    m.job_option = pyo.Constraint(list(by_job), rule=lambda m, j: pyo.quicksum(
        m.z[o] for o in by_job[j]) == 1)
    m.job_servers = pyo.Constraint(m.O, rule=lambda m, o: pyo.quicksum(
        m.J[o, r] for r in m.job_racks[o]) == m.job_n_servers[o] * m.z[o])


def gpus_at(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    """gpus_at[g,k,t]: replicas on GPU type g at limit level k fit on the servers run at
    that level (plus extra servers of the elastic model)."""
    def need(m: pyo.ConcreteModel, g: str, k: float, t: int) -> object:
        """GPUs the replicas on (g, k) need in period t."""
        return pyo.quicksum(d.tp[c] * m.N[c, t] for c in d.users[(g, k)])

    def have(m: pyo.ConcreteModel, g: str, k: float, t: int) -> object:
        """GPUs of the servers run at (g, k) in period t (and the elastic model's extra
        ones)."""
        extra = d.per[g] * m.extra[g, t] if x.elastic and k == d.levels[g][0] else 0
        return d.per[g] * pyo.quicksum(m.S[g, k, r, t] for r in d.at_level[(g, k)]) + extra

    m.gpus_at = pyo.Constraint(list(d.users), m.T, rule=lambda m, g, k, t: need(m, g, k, t)
                               <= have(m, g, k, t))


def rack_servers(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    """rack_servers[r,g,t]: servers run for replicas or held by jobs fit the rack."""
    m.rack_servers = pyo.Constraint(list(d.have), m.T, rule=lambda m, r, g, t: _bounded(
        servers_used(m, d, r, g, t), d.have[(r, g)]))


def servers_used(m: pyo.ConcreteModel, d: _Data, rack: str, gpu: str, t: int) -> object:
    """Servers of GPU type `gpu` in `rack` run for replicas or held by jobs in period t."""
    return (pyo.quicksum(m.S[gpu, k, rack, t] for k in d.levels.get(gpu, []))
            + jobs.servers_in(m, rack, gpu, t))


def spares(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    """spares[g,t]: with training jobs, the scheduler's hot spares of their GPU types stay
    free."""
    if not len(m.O) or not x.spares:
        m.spares = pyo.Constraint([], rule=lambda m, g, t: pyo.Constraint.Skip)
        return
    total = {g: sum(n for (_, g2), n in d.have.items() if g2 == g) for g in d.per}
    gts = [(g, t) for g in sorted(set(m.job_gpu)) for t in m.T]
    m.spares = pyo.Constraint(gts, rule=lambda m, g, t: _bounded(pyo.quicksum(
        m.S[g, k, r, t] for k in d.levels.get(g, []) for r in d.at_level[(g, k)])
        + pyo.quicksum(jobs.servers_in(m, r, g, t) for r in d.rack_rows),
        total.get(g, 0) - x.spares))


def rack_order(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    """rack_order[i,t]: identical racks (same servers, budget and row) fill in order, so
    the solver does not search their permutations. Not with jobs: their racks hold over
    all periods while the order would be imposed per period."""
    pairs = [] if len(m.O) else [
        (a, b, g) for a, b in d.twins for g, _, _, _ in d.rack_rows[a] if g in d.levels]
    m.rack_order = pyo.Constraint(range(len(pairs)), m.T, rule=lambda m, i, t: pyo.quicksum(
        m.S[pairs[i][2], k, pairs[i][0], t] for k in d.levels[pairs[i][2]]) >= pyo.quicksum(
        m.S[pairs[i][2], k, pairs[i][1], t] for k in d.levels[pairs[i][2]]))


def _more(m: pyo.ConcreteModel, x: Inputs, name: str, t: int) -> object:
    return m.more_w[name, t] if x.elastic else 0.0


def rack_power(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    """rack_power[r,t]: a budgeted rack's worst case stays within its budget."""
    budgeted = [r for r in d.rack_rows if r in x.fleet.rack_budget_w]
    m.rack_power = pyo.Constraint(budgeted, m.T, rule=lambda m, r, t: m.rack_w[r, t]
                                  <= x.fleet.rack_budget_w[r] + _more(m, x, r, t))


def row_power(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    """row_power[w,t]: a budgeted row's racks together stay within its budget."""
    rows = x.fleet.racks.groupby("row")["rack"].unique()
    m.row_power = pyo.Constraint(list(x.fleet.row_budget_w), m.T, rule=lambda m, w, t:
                                 pyo.quicksum(m.rack_w[r, t] for r in rows.get(w, []))
                                 <= x.fleet.row_budget_w[w] + _more(m, x, w, t))


def facility_power(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    """facility_power[t]: every rack together stays within the facility's budget."""
    budget = x.fleet.facility_budget_w
    periods = list(m.T) if budget is not None else []
    m.facility_power = pyo.Constraint(periods, rule=lambda m, t: pyo.quicksum(
        m.rack_w[r, t] for r in d.rack_rows) <= budget + _more(m, x, "facility", t))


def reconfig(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    """reconfig[s,t]: replicas started per service from t-1 to t <= max_replica_change."""
    later = [t for t in m.T if t > 0] if x.max_change is not None else []
    m.started = pyo.Var(m.C, later, domain=pyo.NonNegativeReals)
    m.started_def = pyo.Constraint(m.C, later, rule=lambda m, c, t: m.started[c, t]
                                   >= m.N[c, t] - m.N[c, t - 1])
    m.reconfig = pyo.Constraint(list(d.by_svc), later, rule=lambda m, s, t: pyo.quicksum(
        m.started[c, t] for c in d.by_svc[s]) <= x.max_change)


def cold_starts(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    """cold_start[f,t]: replicas a family of configurations (a service's GPU type, tp and
    batch limit; its members differ only in GPU limit, which changes in place) adds for
    period t load in the last lead of period t-1 (warm); pre_warm[g,t]: those GPUs are
    free then, beside the replicas serving in period t-1, the jobs' servers and the
    spares."""
    later = [t for t in m.T if t > 0] if x.cold_starts else []
    m.F = pyo.Set(initialize=range(len(d.families)))
    m.warm = pyo.Var(m.F, later, domain=pyo.NonNegativeReals)
    m.cold_start = pyo.Constraint(m.F, later, rule=lambda m, f, t: m.warm[f, t] >= pyo.quicksum(
        m.N[c, t] - m.N[c, t - 1] for c in d.families[f]))
    total = {g: sum(n for (_, g2), n in d.have.items() if g2 == g) for g in d.per}
    held = set(m.job_gpu) if len(m.O) and x.spares else set()

    def rule(m: pyo.ConcreteModel, g: str, t: int) -> object:
        """GPUs of type g serving in t-1 and warming for t fit the servers jobs leave."""
        cs = [c for k in d.levels[g] for c in d.users[(g, k)]]
        fs = [f for f, members in enumerate(d.families) if d.gpu[members[0]] == g]
        need = (pyo.quicksum(d.tp[c] * m.N[c, t - 1] for c in cs)
                + pyo.quicksum(d.tp[d.families[f][0]] * m.warm[f, t] for f in fs))
        taken = pyo.quicksum(jobs.servers_in(m, r, g, t - 1) for r in d.rack_rows)
        extra = m.extra[g, t - 1] if x.elastic else 0
        return need <= d.per[g] * (total.get(g, 0) - (x.spares if g in held else 0)
                                   - taken + extra)

    m.pre_warm = pyo.Constraint([(g, t) for g in d.levels for t in later], rule=rule)


def pools(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    """For a service the plan may split: balance[s,t]: its decode pool carries what its
    prefill pool passes on; kv_ports[c,t]: a pool's replicas move their requests' KV
    within their NICs' bytes/s (as if every transfer crossed servers); one_pool[s,p,t]:
    at most one configuration per pool and period (a pool is one deployment), picked by
    the binaries pick[c,t]."""
    rows = [c for pre, dec in d.pools.values() for c in pre + dec]
    m.P = pyo.Set(initialize=rows)
    m.pick = pyo.Var(m.P, m.T, domain=pyo.Binary)
    most = {g: sum(n for (_, g2), n in d.have.items() if g2 == g) * d.per[g] for g in d.per}
    m.balance = pyo.Constraint(list(d.pools), m.T, rule=lambda m, s, t: pyo.quicksum(
        m.y[c, t] for c in d.pools[s][0]) == pyo.quicksum(m.y[c, t] for c in d.pools[s][1]))
    m.kv_ports = pyo.Constraint(m.P, m.T, rule=lambda m, c, t: d.kv_bytes[c] * m.y[c, t]
                                <= d.port[c] * m.N[c, t])
    m.picked = pyo.Constraint(m.P, m.T, rule=lambda m, c, t: m.N[c, t] <= max(
        most.get(d.gpu[c], 0) // d.tp[c], 1) * m.pick[c, t])
    keys = [(s, p) for s in d.pools for p in (0, 1)]
    m.one_pool = pyo.Constraint(keys, m.T, rule=lambda m, s, p, t: pyo.quicksum(
        m.pick[c, t] for c in d.pools[s][p]) <= 1)


def _bounded(expr: object, bound: float) -> object:
    """expr <= bound, skipped where no variable enters (a type without candidates)."""
    return pyo.Constraint.Skip if isinstance(expr, int | float) else expr <= bound


FAMILIES: tuple[Family, ...] = (demand, capacity, min_replicas, job_choice, gpus_at,
                                rack_servers, spares, rack_order, rack_power, row_power,
                                facility_power, reconfig, cold_starts, pools)
BUDGETS = ("rack_power", "row_power", "facility_power")  # families whose duals price budgets
