"""Confirm a sized fleet by simulation: each service at its peak period meets its SLOs,
and one replica fewer does not.

A service runs alone on the sized fleet (its replicas' GPUs are its own, so the others
do not change its latencies), with Poisson arrivals at its peak rate split over its
configurations by their planned rates, for optimize.verify_duration_s (longer for a
slow service: at least MIN_REQUESTS requests). Where the simulation disagrees with the
capacity table, the answer follows the simulation: a failing service gets replicas
added, one by one; a service that still meets its SLOs with one replica fewer loses
it; at most STEPS of each, and the table says how many.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dcsim import yamlfile
from dcsim.engine.context import Context
from dcsim.engine.simulation import simulate
from dcsim.hardware.facility import facility_power_w
from dcsim.optimize import fleet_size as fs
from dcsim.optimize.model import Inputs, period_it_w
from dcsim.optimize.spec import OptimizeSpec
from dcsim.optimize.verify import period_scenario
from dcsim.scenario import Scenario
from dcsim.slo import meets_p99, slo_attainment
from dcsim.workloads.spec import InferenceService

STEPS = 3
MIN_REQUESTS = 2000


def confirm(s: Scenario, services: list[InferenceService], dep: pd.DataFrame,
            dem: np.ndarray, held: dict[tuple[str, int], int], tpl: dict[str, fs.Template],
            ctx: Context, opt: OptimizeSpec, n: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The deployments after confirmation and one row per service of what was simulated."""
    rows = []
    for i, svc in enumerate(services):
        t = int(np.argmax(dem[i]))
        rate = float(dem[i, t])

        def run(d: pd.DataFrame, i: int = i, t: int = t, rate: float = rate) -> dict:
            sized = fs.sized_scenario(s, fs.hardware(d, held, n, tpl), tpl)
            return _service_run(sized, services, d, i, t, rate, ctx, opt)

        got, added, removed = run(dep), 0, 0
        while not got["meets_slo"] and added < STEPS:
            dep, added = respread(dep, i, t, rate, +1, opt.min_replicas), added + 1
            got = run(dep)
        fewer = None
        while got["meets_slo"]:
            cand = respread(dep, i, t, rate, -1, opt.min_replicas)
            if cand is None:
                break
            fewer = run(cand)
            if not fewer["meets_slo"] or removed == STEPS:
                break
            dep, got, removed = cand, fewer, removed + 1
        mine = dep[(dep["service_index"] == i) & (dep["period"] == t)]
        rows.append({"service": svc.name, "peak_period": t, "peak_rps": rate,
                     "replicas": int(mine["replicas"].sum()),
                     "gpus": int((mine["replicas"] * mine["tp"]).sum()),
                     "configs": ", ".join(f"{int(r['replicas'])} x {r['config']}"
                                          for _, r in mine.iterrows()),
                     **{k: got[k] for k in ("ttft_p99_s", "tpot_p99_s", "e2e_p99_s",
                                            "slo_attainment", "meets_slo")},
                     "one_fewer_slo_attainment": None if fewer is None else fewer[
                         "slo_attainment"],
                     "one_fewer_meets_slo": None if fewer is None else fewer["meets_slo"],
                     "added_by_simulation": added, "removed_by_simulation": removed})
    return dep, pd.DataFrame(rows)


def confirmed_rates(table: pd.DataFrame, dep: pd.DataFrame, check: pd.DataFrame
                    ) -> pd.DataFrame:
    """The capacity table with each confirmed configuration's rate set to what the
    simulation showed it carries at the peak (load / replicas): raised where replicas
    were removed, lowered where they were added (services alike share it)."""
    table = table.copy()
    for _, c in check.iterrows():
        if not (c["added_by_simulation"] or c["removed_by_simulation"]):
            continue
        mine = dep[(dep["service"] == c["service"]) & (dep["period"] == c["peak_period"])]
        for _, r in mine.iterrows():
            rate = float(r["load_rps"]) / int(r["replicas"])
            row = table[(table["service_index"] == r["service_index"])
                        & (table["config"] == r["config"])]
            same = (table["kind"] == row["kind"].iloc[0]) & (table["config"] == r["config"])
            old = float(row["planned_rps"].iloc[0])
            table.loc[same, "planned_rps"] = rate if c["added_by_simulation"] else max(
                old, rate)
            table.loc[same, "basis"] = "simulated at the peak"
    return table


def respread(dep: pd.DataFrame, i: int, t: int, rate: float, change: int, floor: int
             ) -> pd.DataFrame | None:
    """Service i's rows in period t with one replica more (+1) or fewer (-1) of its
    largest configuration, its rate re-split by planned capacity; None when fewer would
    go below the availability floor (or to none)."""
    dep = dep.copy()
    mine = dep[(dep["service_index"] == i) & (dep["period"] == t)]
    if change < 0 and int(mine["replicas"].sum()) - 1 < max(floor, 1):
        return None
    row = mine.sort_values(["replicas", "tp"], ascending=False).index[0]
    dep.loc[row, "replicas"] = int(dep.loc[row, "replicas"]) + change
    dep = dep[dep["replicas"] > 0]
    mine = dep[(dep["service_index"] == i) & (dep["period"] == t)]
    cap = mine["planned_rps"] * mine["replicas"]
    dep.loc[mine.index, "load_rps"] = rate * cap / cap.sum()
    return dep.reset_index(drop=True)


def _service_run(sized: Scenario, services: list[InferenceService], dep: pd.DataFrame,
                 i: int, t: int, rate: float, ctx: Context, opt: OptimizeSpec) -> dict:
    mine = dep[(dep["service_index"] == i) & (dep["period"] == t)]
    duration = min(max(opt.verify_duration_s, MIN_REQUESTS / max(rate, 1e-9)),
                   4 * opt.verify_duration_s)
    sc = period_scenario(sized, services, mine.sort_values("tp", ascending=False), t,
                         opt.period_s, duration)
    return _rows(sc, simulate(sc, context=ctx).requests, [services[i]], duration)[0]


def _rows(sc: Scenario, requests: pd.DataFrame, services: list[InferenceService],
          duration: float) -> list[dict]:
    """Per service (its replicas' workloads named service@config): p99s and SLO."""
    req = requests[~requests["in_warmup"]]
    out = []
    for svc in services:
        names = [w.name for w in sc.workloads if w.name.startswith(f"{svc.name}@")]
        mine = req[req["service"].isin(names)]
        done = mine[mine["status"] == "finished"]
        out.append({"service": svc.name, "requests": len(mine),
                    **{f"{k}_p99_s": _q(done[f"{k}_s"]) for k in ("ttft", "tpot", "e2e")},
                    "slo_attainment": slo_attainment(mine, svc.slo, duration),
                    "meets_slo": bool(meets_p99(mine, svc.slo, duration))})
    return out


def simulate_period(sized: Scenario, services: list[InferenceService], dep: pd.DataFrame,
                    t: int, x: Inputs, ctx: Context, opt: OptimizeSpec) -> pd.DataFrame:
    """Every service of period t on the sized fleet at once: per service its p99s and SLO,
    and the period's simulated and predicted facility power (inference only)."""
    mine = dep[dep["period"] == t].sort_values("tp", ascending=False)
    sc = period_scenario(sized, services, mine, t, opt.period_s, opt.verify_duration_s)
    r = simulate(sc, context=ctx)
    fac = r.power[r.power["domain"] == "facility"]
    sim_w = float((fac["power_w"] + fac["cooling_w"] + fac["losses_w"]).mul(
        fac["t_end_s"] - fac["t_start_s"]).sum() / opt.verify_duration_s)
    used = [v for v in services if v.name in set(mine["service"])]
    pred = float(facility_power_w(period_it_w(mine, x, t), x.overhead, t))
    return pd.DataFrame([row | {"period": t, "simulated_facility_w": sim_w,
                                "predicted_facility_w": pred}
                         for row in _rows(sc, r.requests, used, opt.verify_duration_s)])


def peak_yaml(sized: Scenario, services: list[InferenceService], dep: pd.DataFrame, t: int,
              opt: OptimizeSpec) -> str:
    """The sized fleet serving period t, as a scenario file."""
    mine = dep[dep["period"] == t].sort_values("tp", ascending=False)
    sc = period_scenario(sized, services, mine, t, opt.period_s, opt.verify_duration_s)
    return yamlfile.dump(sc.model_dump(mode="json", exclude_none=True))


def _q(v: pd.Series) -> float:
    v = v.dropna()
    return float(np.quantile(v, 0.99)) if len(v) else float("nan")
