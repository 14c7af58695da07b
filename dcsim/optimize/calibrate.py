"""Check the queueing model's capacities by short simulations, and correct them.

The analytic model screens every configuration fast; the ones a plan actually uses
are then simulated: one replica alone at its planned rate (pooling across replicas
only helps, so this is the conservative case). Where an SLO bound fails (with a
10 % margin: p99s from a few thousand requests are noisy), the rate
is lowered by bisection on simulations until it holds, and the plan is solved
again with the corrected rate. The table records each row's basis: "model" or
"simulated".
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from dcsim.engine.context import Context
from dcsim.engine.simulation import simulate
from dcsim.optimize.verify import pools_service, replica_service
from dcsim.scenario import Scenario
from dcsim.slo import meets_p99
from dcsim.workloads.spec import InferenceService

STEPS = 5  # bisection steps when the planned rate fails (to 1/32 of it)
MIN_REQUESTS = 3000  # simulated per check, so that a p99 rests on 30 requests
MARGIN = 0.9  # a check passes when every p99 is within 90 % of its bound: a p99 from a few
# thousand requests is noisy, and the plan is judged on other samples


def holds(s: Scenario, svc: InferenceService, row: pd.Series, rate: float, ctx: Context,
          duration_s: float, partner: pd.Series | None = None) -> bool:
    """Does one replica of this configuration meet every SLO bound at `rate` req/s? A
    pool's replica (role prefill or decode) is checked beside enough replicas of the
    other pool's `partner` row, on its own bounds: TTFT for prefill, TPOT and E2E for
    decode."""
    one = row.to_dict() | {"replicas": 1, "load_rps": rate, "period": 0}
    duration = max(duration_s, MIN_REQUESTS / max(rate, 1e-9))
    sim = s.simulation.model_copy(update={"duration_s": duration,
                                          "warmup_s": min(duration / 10, 60.0)})
    role = str(row.get("role", ""))
    mine = dict(svc.slo.model_dump())
    if role:
        assert partner is not None
        # the partner pool with a quarter more replicas than its planned rate needs, and
        # one more: never the bottleneck of the check (an assumed margin)
        other = partner.to_dict() | {"load_rps": rate, "period": 0, "replicas": math.ceil(
            rate / max(float(partner["planned_rps"]), 1e-9) * 1.25) + 1}
        rows = (pd.Series(one), pd.Series(other))
        work = pools_service(svc, *(rows if role == "prefill" else rows[::-1]), False)
        ignore = ("tpot_p99_s", "e2e_p99_s") if role == "prefill" else ("ttft_p99_s",)
        mine.update(dict.fromkeys(ignore))
        s = s.model_copy(update={"fleet": s.fleet.model_copy(update={"racks": [], "rows": []}),
                                 "facility": s.facility.model_copy(update={
                                     "power_budget_kw": None, "supply": None})})
    else:
        work = replica_service(svc, pd.Series(one), False)
    sc = Scenario.model_validate(s.model_copy(update={
        "workloads": [work], "simulation": sim, "optimize": None}).model_dump())
    r = simulate(sc, context=ctx)
    req = r.requests[~r.requests["in_warmup"]]
    slo = svc.slo.model_copy(update={k: None if v is None else v * MARGIN
                                     for k, v in mine.items()})
    return meets_p99(req, slo, duration)


def partner_row(table: pd.DataFrame, row: pd.Series) -> pd.Series | None:
    """For a pool's row, the other pool's row of the same GPU, tp and batch limit at the
    default GPU limit (the check's ample partner); None for a colocated row."""
    role = str(row.get("role", ""))
    if not role:
        return None
    other = "decode" if role == "prefill" else "prefill"
    pool = table[(table["service_index"] == row["service_index"]) & (table["role"] == other)]
    same = pool[(pool["gpu"] == row["gpu"]) & (pool["tp"] == row["tp"])]
    best = same if len(same) else pool
    best = best[best["power_cap_w"].isna()] if best["power_cap_w"].isna().any() else best
    return best.loc[best["planned_rps"].idxmax()] if len(best) else None


def calibrate(s: Scenario, services: list[InferenceService], table: pd.DataFrame,
              used: set[int], ctx: Context, duration_s: float,
              say: Callable[[str, str], None] | None = None) -> tuple[pd.DataFrame, bool]:
    """Simulate the used rows not yet checked; lower failing rates. A new table with the
    checked rows marked simulated (the caller's is left alone), and whether a rate fell;
    `say` (stage, message) hears the outcome.

    Rows of services alike (same capacity key) share the result.
    """
    table = table.copy()
    changed = False
    for c in sorted(used):
        if table.at[c, "basis"] == "simulated":
            continue
        row = table.loc[c]
        svc = services[int(row["service_index"])]
        rate = float(row["planned_rps"])
        partner = partner_row(table, row)
        if not holds(s, svc, row, rate, ctx, duration_s, partner):
            lo, hi = 0.0, rate
            for _ in range(STEPS):
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if holds(s, svc, row, mid, ctx, duration_s, partner) else (
                    lo, mid)
            rate = lo
            changed = True
        same = (table["kind"] == row["kind"]) & (table["config"] == row["config"])
        table.loc[same, "planned_rps"] = rate
        table.loc[same, "basis"] = "simulated"
    if say is not None:
        say("check", f"simulation check of {len(used)} configurations: "
                     + ("a rate fell, solving again" if changed else "every rate held"))
    return table, changed
