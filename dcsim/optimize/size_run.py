"""`dcsim size`: the least fleet for the scenario's demand, confirmed by simulation.

Stages:
1. Capacity table at the SLO boundary (utilisation target 1: the least fleet has no
   headroom of ours; add it to the demand if you want it), each configuration the
   sizing uses checked by simulation and its rate lowered where an SLO fails
   (dcsim.optimize.calibrate), as `dcsim optimize` does.
2. The sizing MILP (dcsim.optimize.sizing): fewest GPUs (or least server capex), then
   least power.
3. Confirmation (dcsim.optimize.size_check): each service at its peak period on the
   sized fleet meets its SLOs in simulation, and one replica fewer does not; where the
   simulation disagrees with the table, replicas are added or removed until both hold.
4. Hardware (servers, racks: dcsim.optimize.fleet_size), energy, carbon and
   electricity per year (the optimizer's period model on the sized fleet), capital
   cost and cost of ownership (dcsim.optimize.costs), and with growth, the month each
   resource the scenario has runs out (dcsim.optimize.size_growth).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from dcsim import __version__
from dcsim.engine.context import Context
from dcsim.engine.site import liquid_share
from dcsim.errors import DcsimError, Problem
from dcsim.optimize import costs as costs_
from dcsim.optimize import fleet_size as fs
from dcsim.optimize import jobs as jobs_
from dcsim.optimize import size_check, size_growth
from dcsim.optimize.calibrate import calibrate
from dcsim.optimize.capacity import service_lengths
from dcsim.optimize.model import Inputs
from dcsim.optimize.plan import (
    Progress,
    _check_reachable,
    _weights,
    fleet_frame,
    period_energy,
    undominated,
)
from dcsim.optimize.sizing import DEPLOYMENT_COLUMNS, SizingInputs, deployments, size
from dcsim.optimize.spec import OptimizeSpec, SizingSpec
from dcsim.optimize.table import capacity_table, demand, horizon
from dcsim.scenario import Scenario
from dcsim.workloads.spec import InferenceService, TrainingJob

ROUNDS = 4
YEAR_S = 365.0 * 86400.0


def run_size(s: Scenario, base_dir: Path, growth_per_month: float = 0.0, months: int = 0,
             objective: str | None = None, context: Context | None = None,
             progress: Progress | None = None
             ) -> tuple[dict[str, pd.DataFrame], dict[str, object], dict[str, str]]:
    """Tables, sizing.json contents and text files (sized.yaml: the sized fleet at the
    fleet's peak period, a scenario `dcsim run` takes). `objective` (gpus | capex)
    replaces sizing.objective; `progress` hears each stage (as dcsim optimize's)."""
    say = progress or (lambda _stage, _msg: None)
    for w in s.workloads:  # sizing places one deployment a service
        if isinstance(w, InferenceService):
            w.colocated("dcsim size")
    ctx = context or Context.load(s, base_dir)
    sz = _spec(s, objective, ctx)
    # sizing counts colocated replicas (it does not split services into pools)
    opt = (s.optimize or OptimizeSpec()).model_copy(update={"utilization_target": 1.0,
                                                            "disaggregate": []})
    s = s.model_copy(update={"optimize": opt})
    services = [w for w in s.workloads if isinstance(w, InferenceService)]
    jobs = [w for w in s.workloads if isinstance(w, TrainingJob)]
    if not services and not jobs:
        raise DcsimError(Problem("workloads", [], "inference services or training jobs to "
                                 "size a fleet for"))
    n = horizon(s, opt)
    dem = demand(s, services, opt, ctx.base_dir) if services else np.zeros((0, n))
    table = _table(s, services, ctx, opt)
    asked = {j.name: j.gpus for j in jobs}
    s = s.model_copy(update={"workloads": [least_job(s, w, ctx) if isinstance(
        w, TrainingJob) else w for w in s.workloads]})
    jobs = [w for w in s.workloads if isinstance(w, TrainingJob)]  # deadlines' fewest GPUs
    job_rows = (jobs_.job_options(s, jobs, ctx.catalog, ctx.store, [1.0])
                if jobs else pd.DataFrame())
    gpus_in = set(table["gpu"]) | {j.gpu for j in jobs}
    tpl = fs.templates(s, ctx.catalog, gpus_in)
    held = fs.job_servers(job_rows, n, opt.period_s,
                          {g: t.gpus_per_server for g, t in tpl.items()},
                          s.fleet.training_scheduler.spare_servers)
    x = SizingInputs(table, dem, [v.name for v in services],
                     {k: v * tpl[k[0]].gpus_per_server for k, v in held.items()},
                     _gpu_weights(sz, tpl, ctx), opt.min_replicas)
    if services:
        say("capacity", f"capacity table: {len(table)} usable configurations for "
                        f"{len(services)} services at the SLO boundary")
    x, dep = _solve(s, services, x, ctx, opt, say)
    dep, check = size_check.confirm(s, services, dep, dem, held, tpl, ctx, opt, n)
    _say_confirmed(check, say)
    x = replace(x, table=size_check.confirmed_rates(x.table, dep, check))
    fleet = fs.hardware(dep, held, n, tpl)
    sized = fs.sized_scenario(s, fleet, tpl)
    inputs = _energy_inputs(sized, x, ctx, opt, job_rows)
    periods = period_energy(dep, inputs, job_rows if len(job_rows) else None)
    peak_t = int(periods["it_w"].idxmax())
    peak = size_check.simulate_period(sized, services, dep, peak_t, inputs, ctx, opt) \
        if len(dep) else None
    summary, capex = _summary(s, services, fleet, periods, dem, opt, sz, ctx, peak, check)
    if len(job_rows):
        summary["training"] = _training(job_rows, asked)
    tables = {"sizing_fleet": fleet, "sizing_deployments": _tidy(dep),
              "sizing_check": check, "sizing_periods": periods, "sizing_capex": capex,
              "capacity": x.table}
    if months > 0:
        say("growth", f"re-sizing {months} months of {growth_per_month:.1%} growth")
        growth, runout = size_growth.project(
            s, ctx.catalog, x, inputs, tpl, held, n, growth_per_month, months,
            opt.time_limit_s, job_rows if len(job_rows) else None)
        tables |= {"sizing_growth": growth, "sizing_runout": runout}
        summary["growth"] = {"per_month": growth_per_month, "months": months,
                             "runout": records(runout)}
    files = {"sized.yaml": size_check.peak_yaml(sized, services, dep, peak_t, opt)} \
        if len(dep) else {}
    return tables, summary, files


def _spec(s: Scenario, objective: str | None, ctx: Context) -> SizingSpec:
    """The sizing section with --objective applied; its cost items checked before any
    work is done."""
    sz = s.sizing or SizingSpec()
    if objective is not None:
        if objective not in ("gpus", "capex"):
            raise DcsimError(Problem("--objective", objective, "gpus or capex"))
        sz = sz.model_copy(update={"objective": objective})
    costs_.unit_costs(sz.capex_usd, sz.amortisation_years, set(ctx.catalog.servers))
    return sz


def _say_confirmed(check: pd.DataFrame, say: Progress) -> None:
    for _, c in check.iterrows():
        fewer = {True: "one fewer meets them too", False: "one fewer does not",
                 None: "no fewer allowed"}[c["one_fewer_meets_slo"]]
        say("confirm", f"confirmed: {c['service']} at {c['peak_rps']:.3g} req/s on "
                       f"{c['replicas']} replicas meets its SLOs, {fewer}")


def _training(job_rows: pd.DataFrame, asked: dict[str, int]) -> list[dict[str, object]]:
    """sizing.json's training entry: per job the GPUs asked and sized, its expected end
    and deadline."""
    return [{"job": r["job"], "gpus_asked": asked[r["job"]], "gpus": int(r["gpus"]),
             "expected_end_s": float(r["end_s"]),
             "deadline_s": None if pd.isna(r["deadline_s"]) else float(r["deadline_s"])}
            for _, r in job_rows.iterrows()]


def least_job(s: Scenario, job: TrainingJob, ctx: Context) -> TrainingJob:
    """A job with a deadline on the fewest data-parallel replicas (tp and pp kept) whose
    expected end, failures included, at the default power limit still meets it; a job
    without one as given. Bisection: more replicas never end later (the step's compute
    shrinks as 1/dp while the all-reduce grows with log or (dp-1)/dp)."""
    if job.deadline_s is None or job.parallelism.dp == 1:
        return job

    def with_dp(dp: int) -> TrainingJob:
        p = job.parallelism.model_copy(update={"dp": dp})
        return TrainingJob.model_validate(job.model_copy(update={
            "parallelism": p, "gpus": p.tp * p.pp * dp}).model_dump())

    def meets(dp: int) -> bool:
        one = with_dp(dp)
        there = s.model_copy(update={"workloads": [one if w is job else w
                                                   for w in s.workloads]})
        try:
            jobs_.job_options(there, [one], ctx.catalog, ctx.store, [1.0])
        except DcsimError:
            return False
        return True

    if not meets(job.parallelism.dp):  # the error as the job itself gives it
        jobs_.job_options(s, [job], ctx.catalog, ctx.store, [1.0])
    lo, hi = 0, job.parallelism.dp  # meets(hi); lo fails (or is 0)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if meets(mid) else (mid, hi)
    return with_dp(hi)


def _table(s: Scenario, services: list[InferenceService], ctx: Context, opt: OptimizeSpec
           ) -> pd.DataFrame:
    """The usable capacity-table rows (planned rate > 0, undominated), one id each."""
    if not services:
        return pd.DataFrame(columns=["service_index", "gpu", "tp", "planned_rps", "kind",
                                     "config", "basis"])
    table = capacity_table(s, services, ctx.catalog, ctx.store, opt, ctx.base_dir)
    _check_reachable(table, services)
    return undominated(table[table["planned_rps"] > 0]).reset_index(drop=True)


def _solve(s: Scenario, services: list[InferenceService], x: SizingInputs, ctx: Context,
           opt: OptimizeSpec, say: Progress) -> tuple[SizingInputs, pd.DataFrame]:
    """Solve; check the configurations used by simulation; solve again while a rate fell."""
    if not services:  # training alone: its GPUs are what its jobs ask for
        return x, pd.DataFrame(columns=DEPLOYMENT_COLUMNS)
    for r in range(ROUNDS):
        v = size(x, opt.time_limit_s)
        say("milp", f"sizing MILP round {r + 1}: " + ", ".join(
            f"{n:,} {g}" for g, n in v.gpus.items() if n) + f" ({v.status})")
        if not opt.check_by_simulation:
            break
        used = {c for (c, _), k in v.replicas.items() if k > 0}
        checked, changed = calibrate(s, services, x.table, used, ctx, opt.verify_duration_s,
                                     say)
        x = replace(x, table=checked)
        if not changed:
            break
    return x, deployments(x, v)


def _gpu_weights(sz: SizingSpec, tpl: dict[str, fs.Template], ctx: Context
                 ) -> dict[str, float]:
    """Stage 1's weight of one GPU per type: 1, or its server's capex per GPU (in
    thousands of USD, to keep the solver's numbers near one)."""
    if sz.objective == "gpus":
        return {g: 1.0 for g in tpl}
    c = costs_.unit_costs(sz.capex_usd, sz.amortisation_years, set(ctx.catalog.servers)
                          ).set_index("item")
    missing = sorted(t.server for t in tpl.values() if t.server not in c.index)
    if missing:
        raise DcsimError(Problem("sizing.capex_usd", missing, "a price for every server "
                                 "type the sizing may use (--objective capex)"))
    return {g: float(c.at[t.server, "capex_usd"]) / t.gpus_per_server / 1e3
            for g, t in tpl.items()}


def _energy_inputs(sized: Scenario, x: SizingInputs, ctx: Context, opt: OptimizeSpec,
                   job_rows: pd.DataFrame) -> Inputs:
    """The optimizer's period model on the sized fleet: its idle power, overheads and
    the grid's price and carbon."""
    from dcsim.engine.fleet import fleet_servers

    fleet = fleet_frame(sized, ctx.catalog)
    cap_w = float((fleet.racks["servers"] * fleet.racks["gpus_per_server"]
                   * fleet.racks["max_w_per_gpu"]).sum())
    n = x.demand.shape[1]
    liquid = liquid_share([(v.spec, 1) for v in fleet_servers(sized, ctx.catalog)])
    o, weight, carbon, price = _weights(sized, opt, n, ctx.base_dir, cap_w, liquid)
    return Inputs(x.table, x.demand, x.services, fleet, opt.period_s, o, weight,
                  opt.min_replicas, None, jobs=job_rows if len(job_rows) else None,
                  spares=sized.fleet.training_scheduler.spare_servers,
                  servers_off=sized.fleet.unused_servers == "switched_off",
                  carbon_kg_per_kwh=carbon, usd_per_kwh=price)


def records(df: pd.DataFrame) -> list[dict[str, object]]:
    """A table's rows as plain JSON values (missing: None)."""
    return [{k: None if v is None or (isinstance(v, float) and not np.isfinite(v)) or v is
             pd.NA else (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()}
            for r in df.astype(object).to_dict("records")]


def _tidy(dep: pd.DataFrame) -> pd.DataFrame:
    return dep.drop(columns=[c for c in ("servers",) if c in dep])


def _summary(s: Scenario, services: list[InferenceService], fleet: pd.DataFrame,
             periods: pd.DataFrame, dem: np.ndarray, opt: OptimizeSpec, sz: SizingSpec,
             ctx: Context, peak: pd.DataFrame | None, check: pd.DataFrame
             ) -> tuple[dict[str, object], pd.DataFrame]:
    """sizing.json's record and the capex table."""
    per_year = YEAR_S / (len(periods) * opt.period_s)
    mwh = float(periods["facility_kwh"].sum()) * per_year / 1e3
    usd = float(periods["cost_usd"].sum()) * per_year
    kg = float(periods["carbon_kg"].sum()) * per_year
    tokens = sum(float(dem[i].sum()) * opt.period_s * per_year * _mean_tokens(v, s, ctx)
                 for i, v in enumerate(services))
    unit = costs_.unit_costs(sz.capex_usd, sz.amortisation_years, set(ctx.catalog.servers))
    capex = costs_.capex_rows({str(r["server"]): int(r["servers"]) for _, r in
                               fleet.iterrows()}, int(fleet["racks"].sum()),
                              float(fleet["nameplate_kw"].sum()), unit)
    money = costs_.ownership(capex, usd if np.isfinite(usd) else None, tokens)
    out: dict[str, object] = {
        "dcsim_version": __version__, "scenario": s.name, "objective": sz.objective,
        "method": "least fleet at the SLO boundary (capacity table, utilisation target 1), "
        "configurations checked by simulation; each service confirmed at its peak period, "
        "one replica fewer shown to fail",
        "gpus": {str(r["gpu"]): int(r["gpus"]) for _, r in fleet.iterrows()},
        "servers": {str(r["server"]): int(r["servers"]) for _, r in fleet.iterrows()},
        "racks": int(fleet["racks"].sum()),
        "it_peak_mw": float(periods["it_w"].max()) / 1e6,
        "facility_peak_mw": float(periods["facility_w"].max()) / 1e6,
        "nameplate_mw": float(fleet["nameplate_kw"].sum()) / 1e3,
        "facility_mw_simulated_at_peak": None if peak is None else float(
            peak["simulated_facility_w"].iloc[0]) / 1e6,
        "facility_mw_predicted_at_peak_inference": None if peak is None else float(
            peak["predicted_facility_w"].iloc[0]) / 1e6,
        "energy_mwh_per_year": mwh, "carbon_t_per_year": kg / 1e3 if np.isfinite(kg) else None,
        "tokens_per_year": tokens, **money,
        "confirmed": bool(check["meets_slo"].all()) if len(check) else None,
        "fleet": records(fleet), "check": records(check), "capex": records(capex)}
    if peak is not None:
        out["peak_period"] = records(peak[["period", "service", "ttft_p99_s", "tpot_p99_s",
                                           "slo_attainment", "meets_slo"]])
    return out, capex


def _mean_tokens(svc: InferenceService, s: Scenario, ctx: Context) -> float:
    """Mean prompt + output tokens of one request of the service."""
    ln = service_lengths(svc, s.simulation.seed, ctx.base_dir)
    return float(np.mean(ln.prompt) + np.mean(ln.output))
