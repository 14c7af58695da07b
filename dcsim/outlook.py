"""Capacity outlook: under compound demand growth, when do GPUs or power budgets run out?

Starting from a simulated run (its summary), demand grows by a factor
f(m) = (1 + g)^m after m months. Assumptions, stated so a planner can defend them:

- GPUs: the work grows with demand at today's GPUs per unit of demand, so the GPUs
  busy (serving or training) grow as B x f(m); the fleet has G.
- Power, per budgeted rack, row and the facility: the domain never draws less than its
  idle floor I (every GPU idle); the part above it, from the run's p99 draw P, grows with
  demand: P(m) = I + (P - I) x f(m), against the budget.

A resource runs out in the first month its projected use exceeds its capacity:
m* = ceil(ln(headroom ratio) / ln(1 + g)). At the end of the horizon the table says what
to add: GPUs (and servers of the fleet's size) or kW of budget.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dcsim.summary import DomainPeak, RunSummary


def growth(g: float, months: np.ndarray | int) -> np.ndarray:
    """Demand multiplier after `months` of growth g per month: (1 + g)^m."""
    return np.power(1.0 + g, np.asarray(months, dtype=float))


def months_until(fixed: float, variable: float, capacity: float, g: float) -> int | None:
    """First whole month m with fixed + variable x (1 + g)^m > capacity (None: never)."""
    if fixed + variable > capacity:
        return 0
    if variable <= 0 or g <= 0:
        return None
    m = math.log((capacity - fixed) / variable) / math.log1p(g)
    return math.floor(m) + 1  # strictly above the capacity


def resources(summary: RunSummary) -> pd.DataFrame:
    """Today's use of each finite resource of a run: fixed and growing parts, capacity."""
    total = summary.total
    rows = [{"resource": "GPUs", "unit": "GPUs", "fixed": 0.0,
             "variable": float(total.gpus_serving + total.gpus_training),
             "capacity": float(total.gpus),
             "per_server": _gpus_per_server(summary.power_domains)}]
    for d in summary.power_domains:
        if d.budget_w is None:
            continue
        rows.append({"resource": f"{d.domain} {d.name} power", "unit": "kW",
                     "fixed": d.idle_w / 1e3, "variable": max(d.p99_w - d.idle_w, 0.0) / 1e3,
                     "capacity": d.budget_w / 1e3, "per_server": math.nan})
    return pd.DataFrame(rows)


def _gpus_per_server(domains: list[DomainPeak]) -> float:
    fac = [d for d in domains if d.domain == "facility"]
    if fac and fac[0].servers:
        return fac[0].gpus / fac[0].servers
    return math.nan


def projection(summary: RunSummary, g: float, months: int) -> pd.DataFrame:
    """Per resource and month: projected use and capacity (tidy)."""
    res = resources(summary)
    m = np.arange(months + 1)
    f = growth(g, m)
    parts = [pd.DataFrame({"resource": r.resource, "unit": r.unit, "month": m,
                           "demand_factor": f, "use": r.fixed + r.variable * f,
                           "capacity": r.capacity}) for r in res.itertuples()]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(out):
        out["share_of_capacity"] = out["use"] / out["capacity"].where(out["capacity"] > 0)
    return out


def runout(summary: RunSummary, g: float, months: int) -> pd.DataFrame:
    """Per resource: use now, capacity, the month it runs out (None beyond the horizon),
    use at the horizon's end and what to add by then."""
    rows = []
    f_end = float(growth(g, months))
    for r in resources(summary).itertuples():
        m = months_until(r.fixed, r.variable, r.capacity, g)
        end = r.fixed + r.variable * f_end
        short = max(end - r.capacity, 0.0)
        if r.unit == "GPUs":
            need = math.ceil(short - 1e-9)
            add = (f"{need} GPUs" + (f" ({math.ceil(need / r.per_server)} servers)"
                                     if need and r.per_server == r.per_server else "")
                   if need else "nothing")
        else:
            add = f"{short:.1f} kW of budget" if short > 0 else "nothing"
        rows.append({"resource": r.resource, "unit": r.unit, "use_now": r.fixed + r.variable,
                     "capacity": r.capacity, "runs_out_month": m if m is not None
                     and m <= months else None, "use_at_horizon": end,
                     "add_by_horizon": add})
    return pd.DataFrame(rows)
