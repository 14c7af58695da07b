"""The site's firm supply as a budget of the power-capping controller, hour by hour
(facility.supply.on_shortfall: cap; the budget itself: dcsim.supply.firm).

It is one more domain, over every server that is not off for the whole run. Its
budget changes each hour; when capped, the serving GPUs get the highest common limit
with which their worst case fits what the hour's budget leaves after the servers the
controller does not cap (training servers at their limit, the others idle), or their
lowest limit where nothing fits (the rest is then unmet in the dispatch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dcsim.engine.site import liquid_share
from dcsim.errors import DcsimError
from dcsim.hardware.placement import Domain, budget_caps, idle_w, worst_case_w

if TYPE_CHECKING:
    from dcsim.engine.build import RunModel

KIND, NAME = "supply", "site"


@dataclass(frozen=True)
class SupplyBudget:
    """The supply domain, its budget per hour and the servers the controller caps."""

    starts_s: np.ndarray  # start of each hour
    budgets_w: np.ndarray  # IT power the firm supply carries in it
    domain: Domain  # with the first hour's budget
    serving: tuple[int, ...]  # servers with replicas
    fixed: tuple[int, ...]  # the others that are on


def supply_budget(model: RunModel) -> SupplyBudget | None:
    """The supply domain of the run (None: the scenario does not cap on shortfall)."""
    s = model.scenario
    sup = s.facility.supply
    if sup is None or sup.on_shortfall != "cap":
        return None
    from dcsim.supply.firm import it_budget_steps

    pl = model.placement
    capacity = (s.facility.power_budget_kw * 1e3 if s.facility.power_budget_kw
                else sum(x.spec.max_power_w for x in pl.servers))
    starts, budgets = it_budget_steps(s.facility, model.context.base_dir,
                                      s.simulation.duration_s, capacity,
                                      liquid_share([(x.spec, 1) for x in pl.servers]))
    on = tuple(i for i in range(len(pl.servers)) if not pl.off[i])
    serving = tuple(i for i in on if pl.servers[i].replicas)
    fixed = tuple(i for i in on if not pl.servers[i].replicas)
    return SupplyBudget(starts, budgets, Domain(KIND, NAME, float(budgets[0]),
                                                "facility.supply.grid_limit_kw", on),
                        serving, fixed)


def serving_caps(model: RunModel, sb: SupplyBudget, budget_w: float) -> np.ndarray:
    """Per server, the GPU limit (W) serving servers get under a budget of budget_w."""
    pl = model.placement
    caps = pl.server_caps.astype(float).copy()
    pool = set(pl.pool)
    fixed_w = worst_case_w(pl.servers, tuple(i for i in sb.fixed if i in pool), caps) + sum(
        idle_w(pl.servers, (i,)) for i in sb.fixed if i not in pool)
    dom = Domain(KIND, NAME, budget_w - fixed_w, sb.domain.field, sb.serving)
    try:
        return budget_caps(pl.servers, [dom], caps)
    except DcsimError:  # not even the lowest limits fit: the lowest, the rest unmet
        low = caps.copy()
        for i in sb.serving:
            low[i] = pl.servers[i].gpu.power_limit_min_w
        return low
