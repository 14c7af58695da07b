"""The power-capping controller (fleet.power_capping kind controller) during a run.

Every budgeted rack, row and the facility is metered at each change of a serving
replica's draw: the replica's GPUs at their iteration's power (dcsim.engine.recost.
draw_w), its server's other GPUs idle, the host through the PSUs (the same server
model as the power accounting), training servers at their worst case (GPUs at their
limit: the controller does not cap them), servers off for the whole run at zero. A
serving server that a scaling switched off is still metered at its host's idle draw,
which overstates the domain, never understates it.

Per domain, three moves, each an event only when it happens or is being decided
(no polling):
- the draw reaches cap_at_fraction x budget while free: if its mean over the next
  window_s is still at that level, reaction_s later the domain's serving replicas go
  under their capped tables (the static worst-case limits, with which the domain's
  worst case fits its budget) from their next iteration;
- a change that would take the draw above the budget while free: the brake, at once,
  work in flight included (dcsim.engine.recost), so the metered draw never exceeds it;
- while capped, when the draw falls below release_below_fraction x budget, a hold span
  of hold_s begins; at its end the limits lift if its mean draw stayed below that level
  (else the next fall below it starts another); a replica stays capped while another
  domain holding its server is capped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import pandas as pd
import simpy

from dcsim.engine.build import limit_after_budgets
from dcsim.engine.costs import IterationCosts
from dcsim.engine.recost import draw_w, recost_now
from dcsim.engine.supply_cap import SupplyBudget, serving_caps, supply_budget
from dcsim.hardware.capping_spec import CappingController
from dcsim.hardware.server import wall_w

if TYPE_CHECKING:
    from dcsim.engine.build import RunModel
    from dcsim.engine.replica import Replica

COLUMNS = ["t_s", "kind", "domain", "event", "power_w", "budget_w", "limit_w"]
TOLERANCE = 1e-9  # relative: sums of floats that equal the budget exactly may land above


class Capper:
    """Meters the budgeted domains and caps, brakes and releases them (module docstring)."""

    def __init__(self, env: simpy.Environment, model: RunModel, replicas: list[Replica],
                 spec: CappingController, trace: bool = False,
                 supply: SupplyBudget | None = None) -> None:
        pl = model.placement
        self.env, self.spec, self.replicas, self.model = env, spec, replicas, model
        self.doms = [d for d in pl.domains if d.budget_w is not None]
        self.supply, self.supply_d = supply, -1
        if supply is not None:
            self.supply_d = len(self.doms)
            self.doms.append(supply.domain)
        self.budget = [float(d.budget_w or 0.0) for d in self.doms]
        # per replica, (limit W or None for the GPU's default, tables): as asked, under
        # the static domains' cap, under the supply's cap of the hour
        self.free = [(r.power_cap_w, r.costs) for r in model.replicas]
        self.low = [(r.capped_cap_w, r.capped_costs or r.costs) for r in model.replicas]
        self.short = list(self.low)
        self.where = pl.where_index
        self.servers = pl.servers
        self.server_doms: dict[int, list[int]] = {}
        for d, dom in enumerate(self.doms):
            for si in dom.servers:
                self.server_doms.setdefault(si, []).append(d)
        self.dom_reps = [[r for si in dom.servers for r in pl.servers[si].replicas]
                         for dom in self.doms]
        self.draw = [0.0] * len(replicas)
        self.gpu_w = [_base_gpu_w(model, si) for si in range(len(pl.servers))]
        self.wall = [0.0 if pl.off[si] else wall_w(g, x.spec, x.gpu)
                     for si, (g, x) in enumerate(zip(self.gpu_w, pl.servers, strict=True))]
        self.total = [sum(self.wall[si] for si in dom.servers) for dom in self.doms]
        n = len(self.doms)
        self.capped, self.watching, self.cap_due = [False] * n, [False] * n, [False] * n
        self.energy = [0.0] * n  # integral of the metered draw, J, up to `since`
        self.since = [0.0] * n
        self.hold_v = [0] * n  # a new cap cancels the previous cap's hold checks
        self.holding = [False] * n  # a hold span is being judged
        self.peak_w = list(self.total)
        self.excess_w = [0.0] * n  # the most the metered draw ever stood above the budget
        self.capped_since, self.capped_s = [0.0] * n, [0.0] * n
        self.braking = 0  # > 0 while a brake recosts its replicas
        # (t, domain, event, draw W, budget W, capped limit W)
        self.rows: list[tuple[float, int, str, float, float, float]] = []
        self.trace: list[tuple[float, int, float]] | None = [] if trace else None
        if supply is not None:  # (before the first meter readings, which may brake)
            self._supply_limits(0)
            for k in range(1, len(supply.starts_s)):
                self._after(float(supply.starts_s[k]), lambda k=k: self._new_budget(k))
        for r in sorted({r for reps in self.dom_reps for r in reps}):
            self.update(replicas[r])
            replicas[r].meter = self.update  # type: ignore[assignment]

    def update(self, rep: Replica) -> None:
        """Replica `rep`'s draw may have changed: meter its domains and act on them."""
        r = rep.index
        w = draw_w(rep)
        if w == self.draw[r]:
            return
        si = self.where[r]
        self.gpu_w[si] += w - self.draw[r]
        self.draw[r] = w
        x = self.servers[si]
        wall = wall_w(self.gpu_w[si], x.spec, x.gpu)
        dwall, self.wall[si] = wall - self.wall[si], wall
        now = self.env.now
        for d in self.server_doms[si]:
            self.energy[d] += self.total[d] * (now - self.since[d])
            self.since[d] = now
            self.total[d] += dwall
        for d in self.server_doms[si]:
            self._check(d)

    def integral(self, d: int) -> float:
        """The metered draw of domain d integrated from 0 to now, J."""
        return self.energy[d] + self.total[d] * (self.env.now - self.since[d])

    def costs_now(self, r: int) -> IterationCosts:
        """Replica r's tables as its domains stand: the lowest limit of those that hold
        (as asked; the static cap if a rack, row or the facility is capped; the supply's
        if it is)."""
        doms = self.server_doms.get(self.where[r], ())
        options = [self.free[r]]
        if any(self.capped[d] for d in doms if d != self.supply_d):
            options.append(self.low[r])
        if self.supply_d in doms and self.capped[self.supply_d]:
            options.append(self.short[r])
        return min(options, key=lambda o: math.inf if o[0] is None else o[0])[1]

    def _supply_limits(self, k: int) -> None:
        """The supply's limits for hour k's budget, per replica."""
        assert self.supply is not None
        caps = serving_caps(self.model, self.supply, float(self.supply.budgets_w[k]))
        pl = self.model.placement
        for r, spec in enumerate(self.model.replicas):
            if spec.costs_for is None:
                continue
            cap = limit_after_budgets(spec.power_cap_w, pl.where[r], float(caps[self.where[r]]))
            self.short[r] = (cap, spec.costs_for(cap))

    def _new_budget(self, k: int) -> None:
        """Hour k begins: the supply's budget and limits change; a capped domain moves to
        the new limits at once where they are lower, from the next iteration where not."""
        assert self.supply is not None
        d = self.supply_d
        self.budget[d] = float(self.supply.budgets_w[k])
        self._supply_limits(k)
        self._log(d, "budget")
        if self.capped[d]:
            self._retarget(d, brake=True)
        self._check(d)

    def _retarget(self, d: int, brake: bool) -> None:
        """Every replica of domain d under the tables its domains now call for: at once
        where they are lower (a brake), from its next iteration otherwise."""
        self.braking += brake
        for r in self.dom_reps[d]:
            rep, target = self.replicas[r], self.costs_now(r)
            if rep.costs is target:
                continue
            if brake and _limit(target) < _limit(rep.costs):
                recost_now(rep, target)
                self.update(rep)
            else:
                _apply(rep, target)
        self.braking -= brake

    def _check(self, d: int) -> None:
        tot, b, spec = self.total[d], self.budget[d], self.spec
        if self.trace is not None:
            self.trace.append((self.env.now, d, tot))
        if not self.capped[d]:
            if tot > b * (1 + TOLERANCE):
                self._cap(d, "brake")
            elif tot >= spec.cap_at_fraction * b and not (self.watching[d] or self.cap_due[d]):
                self.watching[d] = True
                e0 = self.integral(d)
                self._after(spec.window_s, lambda: self._watched(d, e0))
        elif tot < spec.release_below_fraction * b and not self.holding[d]:
            self._hold(d)
        if not self.braking:  # (a brake's own steps are not states that last)
            self.peak_w[d] = max(self.peak_w[d], self.total[d])
            self.excess_w[d] = max(self.excess_w[d], self.total[d] - b)

    def _after(self, delay: float, act: Callable[[], None]) -> None:
        self.env.timeout(delay).callbacks.append(lambda _e: act())

    def _watched(self, d: int, e0: float) -> None:
        """The window after a crossing is over: cap if its mean draw stayed up."""
        self.watching[d] = False
        if self.capped[d]:
            return
        spec = self.spec
        if (self.integral(d) - e0) / spec.window_s >= spec.cap_at_fraction * self.budget[d]:
            self.cap_due[d] = True
            self._after(spec.reaction_s, lambda: self._react(d))
        elif self.total[d] >= spec.cap_at_fraction * self.budget[d]:
            self._check(d)  # still up now: watch the next window

    def _react(self, d: int) -> None:
        self.cap_due[d] = False
        if not self.capped[d]:
            self._cap(d, "cap")

    def _cap(self, d: int, event: str) -> None:
        now = self.env.now
        self.capped[d], self.capped_since[d] = True, now
        self.hold_v[d] += 1
        self.holding[d] = False
        self._log(d, event)
        self._retarget(d, event == "brake")
        self._check(d)

    def _hold(self, d: int) -> None:
        """The capped draw is below the release level: judge the next hold_s."""
        self.holding[d] = True
        v, e0 = self.hold_v[d], self.integral(d)
        self._after(self.spec.hold_s, lambda: self._held(d, v, e0))

    def _held(self, d: int, v: int, e0: float) -> None:
        """A hold span is over: lift the cap if its mean draw was low; else wait for the
        draw to fall below the release level again (now, if it is)."""
        if v != self.hold_v[d] or not self.capped[d]:
            return
        self.holding[d] = False
        spec = self.spec
        level = spec.release_below_fraction * self.budget[d]
        if (self.integral(d) - e0) / spec.hold_s >= level:
            if self.total[d] < level:
                self._hold(d)
            return
        now = self.env.now
        self.capped[d] = False
        self.capped_s[d] += now - self.capped_since[d]
        self._log(d, "release")
        self._retarget(d, brake=False)
        self._check(d)  # the draw may be up already

    def table(self) -> pd.DataFrame:
        """One row per cap, brake, release and (the supply's) change of budget: time,
        domain, the metered draw, the budget and the serving GPUs' capped limit then."""
        if not self.rows:
            return pd.DataFrame({c: [] for c in COLUMNS})
        return pd.DataFrame([(t, self.doms[d].kind, self.doms[d].name, ev, w, b, lim)
                             for t, d, ev, w, b, lim in self.rows], columns=COLUMNS)

    def _log(self, d: int, event: str) -> None:
        """A row of the table: the domain's draw, budget and capped limit now (the lowest
        its serving replicas get while it is capped, W)."""
        if d == self.supply_d:
            options = [self.short[r][0] for r in self.dom_reps[d]]
        else:
            options = [self.low[r][0] for r in self.dom_reps[d]]
        limits = [math.inf if x is None else x for x in options]
        self.rows.append((self.env.now, d, event, self.total[d], self.budget[d],
                          min(limits, default=math.nan)))

    def summary(self, end_s: float) -> list[dict[str, object]]:
        """Per budgeted domain: caps, brakes, time capped, peak and excess of the metered
        draw over the run (the supply's budget: its lowest and highest hour's)."""
        out = []
        for d, dom in enumerate(self.doms):
            capped_s = self.capped_s[d] + (end_s - self.capped_since[d] if self.capped[d]
                                           else 0.0)
            events = [row[2] for row in self.rows if row[1] == d]
            lo = hi = self.budget[d]
            if d == self.supply_d and self.supply is not None:
                lo, hi = float(self.supply.budgets_w.min()), float(self.supply.budgets_w.max())
            out.append({"kind": dom.kind, "name": dom.name, "budget_w": lo,
                        "budget_max_w": hi,
                        "caps": events.count("cap"), "brakes": events.count("brake"),
                        "capped_s": capped_s, "capped_share": capped_s / end_s,
                        "peak_w": self.peak_w[d], "excess_w": self.excess_w[d]})
        return out


def _limit(costs: IterationCosts) -> float:
    """The GPU limit a cost table answers at, W (the default limit: infinite)."""
    cap = costs.decode_cost.power_cap_w
    return math.inf if cap is None else float(cap)


def _apply(rep: Replica, costs: IterationCosts) -> None:
    """New tables from the replica's next iteration (a decode block ends at its step)."""
    if rep.state in ("off", "loading"):  # nothing runs: its next start uses them
        rep.costs, rep._dec_rows = costs, costs.decode.rows
        for k in costs.classes:
            rep.steps.setdefault(k, 0)
            rep.prefills.setdefault(k, 0)
        return
    rep.retune(costs, rep.seqs_limit)


def _base_gpu_w(model: RunModel, si: int) -> float:
    """Server si's GPUs apart from its replicas' draw, W: idle GPUs without a replica,
    a training server's GPUs at their limit, nothing while off for the whole run."""
    pl = model.placement
    x = pl.servers[si]
    if pl.off[si]:
        return 0.0
    if si in pl.pool and not x.replicas:
        return x.spec.gpus_per_server * float(pl.server_caps[si])
    return (x.spec.gpus_per_server - sum(x.tps)) * x.gpu.idle_power_w


def start_capping(env: simpy.Environment, model: RunModel, replicas: list[Replica],
                  trace: bool = False) -> Capper | None:
    """The controller, if the scenario asks for one and has a budget (or its supply
    caps on shortfall)."""
    spec = model.scenario.fleet.power_capping
    if not isinstance(spec, CappingController):
        return None
    supply = supply_budget(model)
    if supply is None and not any(d.budget_w is not None for d in model.placement.domains):
        return None
    return Capper(env, model, replicas, spec, trace, supply)
