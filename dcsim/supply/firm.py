"""What the site's supply can carry, hour by hour, as an IT budget the power-capping
controller enforces at run time (facility.supply.on_shortfall: cap).

Firm supply (kW) = grid_limit_kw + each renewable's installed kW x its capacity factor
+ every generator's power. Batteries are left out: how much charge they hold is the
dispatch's decision after the run. Within an hour the lower of the values at its
start and end counts (the sun moves within the hour). The facility's overhead is
affine in IT power (cooling = cool_a x IT + cool_b, likewise losses), so the IT the
supply carries is (firm - cool_b - loss_b) / (1 + cool_a + loss_a), never below 0.
Steps follow the clock's hours, as the capacity factors and the weather do.
The leaf-spine switches' power is not in the servers' meter the controller reads:
what they draw beyond the budget stays unmet in the dispatch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dcsim.engine.site import outdoor_c, site_overhead
from dcsim.scenario import Facility
from dcsim.supply.apply import capacity_factor

STEP_S = 3600.0  # capacity factors and weather are hourly


def firm_supply_kw(f: Facility, base_dir: Path, t_s: np.ndarray) -> np.ndarray:
    """Grid limit + renewables' output + generators' power at times t_s, kW."""
    s = f.supply
    assert s is not None and s.grid_limit_kw is not None
    ren = sum((r.installed_kw * capacity_factor(r, f, base_dir, t_s) for r in s.renewables),
              np.zeros(np.shape(t_s)))
    return s.grid_limit_kw + ren + sum(g.power_kw for g in s.generators)


def it_budget_steps(f: Facility, base_dir: Path, duration_s: float, capacity_w: float,
                    liquid: float) -> tuple[np.ndarray, np.ndarray]:
    """Per clock hour of the run (the first and last may be part of one): its start (s
    from t = 0) and the IT power the firm supply carries in it (W)."""
    into = (f.start_time.minute * 60 + f.start_time.second) % STEP_S
    starts = np.concatenate([[0.0], np.arange(STEP_S - into, duration_s, STEP_S)])
    starts = np.unique(starts[starts < duration_s])
    ends = np.minimum(starts + STEP_S, duration_s)
    firm = np.minimum(firm_supply_kw(f, base_dir, starts),
                      firm_supply_kw(f, base_dir, np.maximum(ends - 1e-6, starts))) * 1e3
    mid = (starts + ends) / 2
    o = site_overhead(f, None if f.cooling is None else outdoor_c(f, base_dir, mid),
                      capacity_w, liquid)
    it = (firm - o.cool_b - o.loss_b) / (1 + o.cool_a + o.loss_a)
    return starts, np.maximum(it, 0.0)
