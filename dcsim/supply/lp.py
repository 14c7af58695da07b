"""Optimal dispatch of a site's supply over the run as an LP (Pyomo + HiGHS).

Stages: build -> solve -> check termination -> extract (the rule's columns). Per
bucket t of length h (hours), in kW:

  balance[t]      load = grid + renewables used + sum generators + sum discharge
                  - sum charge + unmet
  renewables used <= available;  grid <= grid_limit_kw;  generator <= its power
  soc[b,t]        soc[b,t-1] + (charge sqrt(eta) - discharge / sqrt(eta)) h, within
                  [soc_min, soc_max] x energy, soc[b,-1] = soc_initial x energy
  ramp[g,t]       generator[t] - generator[t-1] <= ramp_kw_per_s x dt (from 0 at t = 0)
  excess[t]       excess >= grid - import_cap_kw, >= 0 (peak_shaving: charged at
                  excess_usd_per_kwh on top of the cost)
  deliver[g,t]    generators with a start-up time or start cost: commitment binaries
                  (see `commitment`), which make it a MILP

Objective: dcsim.supply.dispatch.objective, the measure the rule is judged by (the
batteries' net draw from their initial charge included, at the run's mean grid
rate), so the LP is never worse than the rule (the rule's dispatch is one of its
feasible points).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyomo.environ as pyo
from pyomo.contrib.appsi.base import TerminationCondition
from pyomo.contrib.appsi.solvers import Highs

from dcsim.errors import DcsimError, Problem
from dcsim.supply.dispatch import UNMET, Inputs
from dcsim.supply.spec import Supply


def build(x: Inputs, s: Supply) -> pyo.ConcreteModel:
    """The dispatch LP of the run."""
    n, h = len(x.dt_s), x.dt_s / 3600.0
    m = pyo.ConcreteModel()
    m.T = pyo.RangeSet(0, n - 1)
    B, G = range(len(s.batteries)), range(len(s.generators))
    limit = s.grid_limit_kw
    m.grid = pyo.Var(m.T, bounds=(0, limit))
    m.ren = pyo.Var(m.T, bounds=lambda m, t: (0, float(x.renewable_kw[t])))
    m.unmet = pyo.Var(m.T, domain=pyo.NonNegativeReals)
    m.ch = pyo.Var(B, m.T, bounds=lambda m, b, t: (0, s.batteries[b].power_kw))
    m.dis = pyo.Var(B, m.T, bounds=lambda m, b, t: (0, s.batteries[b].power_kw))
    m.soc = pyo.Var(B, m.T, bounds=lambda m, b, t: (
        s.batteries[b].soc_min * s.batteries[b].energy_kwh,
        s.batteries[b].soc_max * s.batteries[b].energy_kwh))
    m.gen = pyo.Var(G, m.T, bounds=lambda m, g, t: (0, s.generators[g].power_kw))
    m.balance = pyo.Constraint(m.T, rule=lambda m, t: float(x.load_kw[t]) == m.grid[t]
                               + m.ren[t] + sum(m.gen[g, t] for g in G) + sum(
                                   m.dis[b, t] - m.ch[b, t] for b in B) + m.unmet[t])

    def soc(m: pyo.ConcreteModel, b: int, t: int) -> object:
        bat, eta = s.batteries[b], math.sqrt(s.batteries[b].round_trip_efficiency)
        before = m.soc[b, t - 1] if t > 0 else bat.soc_initial * bat.energy_kwh
        return m.soc[b, t] == before + (m.ch[b, t] * eta - m.dis[b, t] / eta) * float(h[t])

    m.state = pyo.Constraint(B, m.T, rule=soc)
    commitment(m, x, s)
    m.ramp = pyo.Constraint(G, m.T, rule=lambda m, g, t: pyo.Constraint.Skip if (
        s.generators[g].ramp_kw_per_s is None) else m.gen[g, t] - (
        m.gen[g, t - 1] if t > 0 else 0.0) <= s.generators[g].ramp_kw_per_s * float(x.dt_s[t]))
    unmet = UNMET * sum(m.unmet[t] * float(h[t]) for t in m.T)
    if s.policy == "peak_shaving":
        m.excess = pyo.Var(m.T, domain=pyo.NonNegativeReals)
        m.over_cap = pyo.Constraint(m.T, rule=lambda m, t: m.excess[t] >= m.grid[t] - float(
            s.import_cap_kw or 0.0))
        unmet = unmet + s.excess_usd_per_kwh * sum(m.excess[t] * float(h[t]) for t in m.T)
    rate = float(np.mean(x.carbon if s.policy == "carbon" else x.price))
    last = n - 1
    unmet = unmet + sum((s.batteries[b].soc_initial * s.batteries[b].energy_kwh - m.soc[b, last])
                        / math.sqrt(s.batteries[b].round_trip_efficiency) * rate for b in B)
    if s.policy == "carbon":
        m.objective = pyo.Objective(expr=sum((float(x.carbon[t]) * m.grid[t] + sum(
            s.generators[g].carbon_kg_per_kwh * m.gen[g, t] for g in G)) * float(h[t])
            for t in m.T) + unmet)
    else:
        starts = sum(s.generators[g].start_cost_usd * m.st[g, t] for g, t in m.st)
        m.objective = pyo.Objective(expr=sum((float(x.price[t]) * m.grid[t] + sum(
            s.generators[g].fuel_usd_per_kwh * m.gen[g, t] for g in G) + sum(
            s.batteries[b].degradation_usd_per_kwh * m.dis[b, t] for b in B)) * float(h[t])
            for t in m.T) + unmet + starts)
    return m


def commitment(m: pyo.ConcreteModel, x: Inputs, s: Supply) -> None:
    """Generators whose starts are modelled: on[g,t] (binary), start[g,t] >= on[g,t] -
    on[g,t-1]; deliver[g,t]: output <= power x (on - the share of the bucket a start
    in that bucket or before still spends starting: clip((t0[start] + start_up_s -
    t0[t]) / dt[t], 0, 1))."""
    C = [g for g, gen in enumerate(s.generators) if gen.commits]
    m.u = pyo.Var(C, m.T, domain=pyo.Binary)
    m.st = pyo.Var(C, m.T, bounds=(0, 1))
    m.started = pyo.Constraint(C, m.T, rule=lambda m, g, t: m.st[g, t] >= m.u[g, t] - (
        m.u[g, t - 1] if t > 0 else 0))
    dt = x.dt_s
    t0 = np.concatenate([[0.0], np.cumsum(dt)[:-1]])

    def deliver(m: pyo.ConcreteModel, g: int, t: int) -> object:
        """Output of generator g in bucket t within what its starts leave it."""
        gen, lost, tau = s.generators[g], [], t
        while tau >= 0 and t0[tau] + gen.start_up_s > t0[t]:
            lost.append(min((t0[tau] + gen.start_up_s - t0[t]) / dt[t], 1.0) * m.st[g, tau])
            tau -= 1
        return m.gen[g, t] <= gen.power_kw * (m.u[g, t] - sum(lost))

    m.deliver = pyo.Constraint(C, m.T, rule=deliver)


def optimal(x: Inputs, s: Supply, time_limit_s: float = 60.0) -> pd.DataFrame:
    """Solve the LP; the dispatch in the rule's columns (an error if HiGHS finds none)."""
    m = build(x, s)
    opt = Highs()
    opt.config.time_limit = time_limit_s
    opt.config.mip_gap = 0.0  # (with starts it is a MILP: never worse than the rule)
    res = opt.solve(m)
    if res.termination_condition != TerminationCondition.optimal:
        raise DcsimError(Problem("facility.supply", f"HiGHS: {res.termination_condition}",
                                 "an optimal dispatch of the run (the LP always has one: "
                                 "unmet load is allowed)"))
    return extract(m, x, s)


def extract(m: pyo.ConcreteModel, x: Inputs, s: Supply) -> pd.DataFrame:
    """The solved LP as the rule's per-bucket columns."""
    n = len(x.dt_s)

    def v(var: object, *k: int) -> np.ndarray:
        return np.array([max(pyo.value(var[(*k, t)]), 0.0) for t in range(n)])

    ren, grid = v(m.ren), v(m.grid)
    out = {"load_kw": x.load_kw, "renewable_available_kw": x.renewable_kw,
           "renewable_used_kw": ren, "curtailed_kw": x.renewable_kw - ren}
    ch = [v(m.ch, b) for b in range(len(s.batteries))]
    dis = [v(m.dis, b) for b in range(len(s.batteries))]
    soc = [np.array([pyo.value(m.soc[b, t]) for t in range(n)]) for b in range(len(ch))]
    gen = [v(m.gen, g) for g in range(len(s.generators))]
    zero = np.zeros(n)
    out |= {"battery_charge_kw": sum(ch, zero), "battery_discharge_kw": sum(dis, zero),
            "battery_soc_kwh": sum(soc, zero), "generators_kw": sum(gen, zero),
            "grid_kw": grid, "unmet_kw": v(m.unmet)}
    for b, bat in enumerate(s.batteries):
        out |= {f"soc_kwh:{bat.name}": soc[b], f"charge_kw:{bat.name}": ch[b],
                f"discharge_kw:{bat.name}": dis[b]}
    out |= {f"generator_kw:{g.name}": gen[i] for i, g in enumerate(s.generators)}
    out |= {f"start:{g.name}": np.round(v(m.st, i)) for i, g in enumerate(s.generators)
            if g.commits}
    return pd.DataFrame(out)
