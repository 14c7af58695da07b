"""Everything `dcsim optimize` produces: plan, baselines, closed-loop check, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dcsim import __version__, yamlfile
from dcsim.engine.context import Context
from dcsim.optimize import baselines
from dcsim.optimize import jobs as jobs_
from dcsim.optimize.plan import Plan, Progress, optimize, period_energy
from dcsim.optimize.plan_scenario import plan_scenario
from dcsim.optimize.verify import period_scenario, verify, verify_jobs
from dcsim.optimize.verify_day import verify_continuous
from dcsim.scenario import Scenario
from dcsim.workloads.spec import InferenceService


def run_optimize(s: Scenario, base_dir: Path, objective: str | None, check: bool,
                 quantile: float | None = None, progress: Progress | None = None
                 ) -> tuple[dict[str, pd.DataFrame], dict[str, object], dict[str, str], Plan]:
    """Tables, optimize.json contents and text files (plan.yaml: the plan as one runnable
    scenario; plan_periods.yaml: its periods; periods/*.yaml: each period alone).

    With `quantile`, every profile answer is taken at that quantile of its error
    (dcsim.profiles.uncertainty) for planning and for the simulation check alike, and
    the plan at the median answers is solved too, to state what the margin costs."""
    for w in s.workloads:  # the baselines' deployment; the plan may split it
        if isinstance(w, InferenceService):
            w.colocated("dcsim optimize", "give the colocated deployment the baselines "
                        "use and list the service under optimize.disaggregate: the plan "
                        "splits it where that costs less")
    ctx = Context.load(s, base_dir)  # one catalog and profile store for every stage
    median = None
    if quantile is not None:
        median = optimize(s, base_dir, objective, ctx, progress)
        ctx = ctx.with_store(ctx.store.at_quantile(quantile))
    plan = optimize(s, base_dir, objective, ctx, progress)
    x = plan.inputs
    compared = {"plan": plan.deployments, "peak": baselines.peak(x, plan.services),
                "greedy": baselines.greedy(x, plan.services)}
    jobs = {"plan": plan.jobs, "peak": baselines.peak_jobs(x), "greedy": baselines.greedy_jobs(x)}
    energy = {k: period_energy(v, x, jobs[k]) for k, v in compared.items()}
    after = {k: float(jobs_.after_kwh(v, x, weighted=False).sum()) if len(v) else 0.0
             for k, v in jobs.items()}
    summary = _summary(plan, energy, after)
    if median is not None:
        summary["quantile"] = _margin(quantile, plan, median)
    tables = {"plan": _tidy(plan.deployments), "capacity": plan.table,
              "periods": energy["plan"], "budget_values": plan.budget_values}
    bv = plan.budget_values
    summary["budget_value_per_kw"] = {
        "unit": {"energy": "kWh", "cost": "USD", "carbon": "kg CO2e"}[plan.spec.objective]
        + " of the period per kW more budget (LP dual, the plan's configurations kept)",
        "binding": bv[bv["binding"]].to_dict("records")}
    if len(plan.jobs):
        tables["jobs"] = _tidy_jobs(plan.jobs)
        summary["training"] = _tidy_jobs(plan.jobs)[
            ["job", "power_cap_w", "racks", "start_s", "runtime_s", "end_s", "deadline_s",
             "energy_kwh"]
        ].to_dict("records")
    n = x.demand.shape[1]
    mode = plan.spec.verify_mode
    continuous = check and mode != "periods"
    day = {k: plan_scenario(s, plan.services, v, n, x.period_s, ctx.catalog, jobs[k], k)
           for k, v in compared.items() if len(v) and (k == "plan" or continuous)}
    why = {k: v for k, v in day.items() if isinstance(v, str)}
    if why:
        summary["plan_scenario_missing"] = why
    if continuous:
        if progress is not None:
            progress("verify", f"running the plan and its baselines over the {n} periods "
                               "as one continuous simulation each")
        runs = {k: verify_continuous(sc, plan.services, n, x.period_s, ctx, k)
                for k, sc in day.items() if not isinstance(sc, str)}
        if runs:
            tables["verify_continuous"] = pd.concat([v[0] for v in runs.values()],
                                                    ignore_index=True)
            summary["verify_continuous"] = [v[1] for v in runs.values()]
    if check and mode != "continuous":
        if progress is not None:
            progress("verify", f"replaying the plan and {len(compared) - 1} baselines, "
                               f"{x.demand.shape[1]} periods, in the simulator")
        checked = pd.concat([verify(s, plan.services, dep, x, plan.spec.verify_duration_s,
                                    ctx, label) for label, dep in compared.items()
                             if len(dep)], ignore_index=True)
        tables["verify"] = checked
        summary["verify"] = _verify_summary(checked)
        if len(plan.jobs):
            tables["verify_jobs"] = verify_jobs(s, plan.jobs, ctx)
            summary["verify_training"] = tables["verify_jobs"].to_dict("records")
    files = {"plan_periods.yaml": _plan_yaml(s, plan, energy["plan"])}
    if not isinstance(day["plan"], str):
        files["plan.yaml"] = yamlfile.dump(day["plan"].model_dump(mode="json",
                                                                  exclude_none=True))
    for t in range(x.demand.shape[1]):
        sc = period_scenario(s, plan.services, plan.deployments, t, x.period_s, x.period_s)
        files[f"periods/period-{t:02d}.yaml"] = yamlfile.dump(
            sc.model_dump(mode="json", exclude_none=True))
    return tables, summary, files, plan


def peak_gpus(dep: pd.DataFrame) -> dict[str, int]:
    """Per GPU type, the most GPUs a plan's replicas use in any period."""
    if dep.empty:
        return {}
    per = (dep["tp"] * dep["replicas"]).groupby([dep["gpu"], dep["period"]]).sum()
    return {str(g): int(v) for g, v in per.groupby(level=0).max().items()}


def _margin(q: float | None, plan: Plan, median: Plan) -> dict[str, object]:
    """What planning at quantile q of the profile's error costs against the median."""
    robust, mid = peak_gpus(plan.deployments), peak_gpus(median.deployments)
    return {"q": q, "method": "every profile answer's latency and energy at quantile q of "
            "its provenance's error (dcsim.profiles.uncertainty)",
            "peak_gpus": robust, "peak_gpus_at_median": mid,
            "extra_gpus": {g: robust.get(g, 0) - mid.get(g, 0) for g in robust | mid},
            "objective_value_at_median": median.solved.objective}


def _tidy(dep: pd.DataFrame) -> pd.DataFrame:
    out = dep.copy()
    if "servers" in out:
        out["servers"] = out["servers"].map(lambda v: ",".join(v))
    return out


def _tidy_jobs(jobs: pd.DataFrame) -> pd.DataFrame:
    out = jobs.copy()
    out["racks"] = out["racks"].map(lambda v: ",".join(v))
    out["rack_servers"] = out["rack_servers"].map(
        lambda v: ",".join(f"{r}:{n}" for r, n in sorted(v.items())))
    return out


def _objective_value(e: pd.DataFrame) -> float:
    return float((e["facility_kwh"] * e["objective_weight"]).sum())


def _summary(plan: Plan, energy: dict[str, pd.DataFrame], after: dict[str, float]
             ) -> dict[str, object]:
    """Energies over the horizon, plus the training jobs' facility energy after it."""
    sv = plan.solved
    plan_kwh = float(energy["plan"]["facility_kwh"].sum()) + after["plan"]
    out: dict[str, object] = {
        "dcsim_version": __version__, "objective": plan.spec.objective,
        "status": sv.status, "objective_value": sv.objective, "best_bound": sv.bound,
        "gap": sv.gap, "build_s": sv.build_s, "solve_s": sv.solve_s,
        "variables": sv.n_vars, "constraints": sv.n_cons,
        "periods": int(plan.demand.shape[1]), "period_s": plan.spec.period_s,
        "predicted_facility_kwh": plan_kwh,
        "training_facility_kwh_after_horizon": after["plan"], "baselines": {}}
    out["objective_unit"] = OBJECTIVE_UNITS[plan.spec.objective]
    out["deployments"] = plan_rows(plan.deployments)
    out["peak_gpus"] = peak_gpus(plan.deployments)
    e = energy["plan"]
    out["predicted_carbon_kg"] = float(e["carbon_kg"].sum())
    out["predicted_cost_usd"] = float(e["cost_usd"].sum())
    for name in ("peak", "greedy"):
        kwh = float(energy[name]["facility_kwh"].sum()) + after[name]
        out["baselines"][name] = {  # type: ignore[index]
            "predicted_facility_kwh": kwh, "objective_value": _objective_value(energy[name]),
            "energy_saved_by_plan": 1 - plan_kwh / kwh if kwh > 0 else None}
    return out


OBJECTIVE_UNITS = {"energy": "kWh", "cost": "USD", "carbon": "kg CO2e"}


def plan_rows(dep: pd.DataFrame) -> list[dict[str, object]]:
    """Per service and run of periods with one configuration: GPU type, tp, power limit
    (None: the default), batch limit and replicas, and the pool (role: prefill or decode;
    "" colocated) (optimize.json's `deployments`)."""
    if dep.empty:
        return []
    cols = ["gpu", "tp", "power_cap_w", "max_num_seqs", "replicas"]
    if "role" in dep:
        cols.append("role")
    rows: list[dict[str, object]] = []
    plain = dep[cols].astype(object).where(dep[cols].notna(), None)  # NaN limit: default
    for service, g in dep.sort_values(["service", "period", "config"]).groupby(
            "service", sort=False):
        per = {int(t): tuple(map(tuple, plain.loc[x.index].to_numpy()))
               for t, x in g.groupby("period")}
        for period, key in per.items():
            last = rows[-1] if rows and rows[-1]["service"] == service else None
            if last is not None and last["_key"] == key and last["last_period"] == period - 1:
                last["last_period"] = int(period)
                continue
            for c in key:
                rows.append({"service": service, "first_period": int(period),
                             "last_period": int(period), "_key": key,
                             **dict(zip(cols, c, strict=True))})
    return [{k: v for k, v in r.items() if k != "_key"} for r in rows]


def _verify_summary(v: pd.DataFrame) -> dict[str, object]:
    out = {}
    for label, g in v.groupby("plan", sort=False):
        per_period = g.drop_duplicates("period")
        out[str(label)] = {
            "periods_meeting_every_slo": int(g.groupby("period")["meets_slo"].all().sum()),
            "periods": int(g["period"].nunique()),
            "slo_attainment_min": float(g["slo_attainment"].min()),
            "simulated_facility_w_mean": float(per_period["simulated_facility_w"].mean()),
            "predicted_facility_w_mean": float(per_period["predicted_facility_w"].mean()),
        }
    return out


def _plan_yaml(s: Scenario, plan: Plan, energy: pd.DataFrame) -> str:
    periods = []
    for t in range(plan.demand.shape[1]):
        dep = plan.deployments[plan.deployments["period"] == t]
        periods.append({
            "period": t, "start_s": t * plan.spec.period_s,
            "predicted_facility_kwh": round(float(energy.at[t, "facility_kwh"]), 3),
            "scenario": f"periods/period-{t:02d}.yaml",
            "deployments": [{
                "service": r["service"], "gpu": r["gpu"], "tp": int(r["tp"]),
                "power_cap_w": None if pd.isna(r["power_cap_w"]) else float(r["power_cap_w"]),
                "max_num_seqs": int(r["max_num_seqs"]), "replicas": int(r["replicas"]),
                "load_rps": round(float(r["load_rps"]), 4),
                "demand_share": round(float(r["load_rps"]) / max(float(
                    plan.demand[int(r["service_index"]), t]), 1e-12), 4),
                "servers": list(r["servers"])} for _, r in dep.iterrows()]})
    doc = {"dcsim_version": __version__, "scenario": s.name, "objective": plan.spec.objective,
           "status": plan.solved.status, "period_s": plan.spec.period_s,
           "demand_per_s": {svc.name: np.round(plan.demand[i], 4).tolist()
                            for i, svc in enumerate(plan.services)},
           "periods": periods}
    if len(plan.jobs):
        doc["training"] = [{
            "job": r["job"], "power_cap_w": None if pd.isna(r["power_cap_w"])
            else float(r["power_cap_w"]), "rack_servers": dict(r["rack_servers"]),
            "start_s": float(r["start_s"]),
            "expected_runtime_s": round(float(r["runtime_s"]), 1),
            "expected_end_s": round(float(r["end_s"]), 1),
            "deadline_s": None if pd.isna(r["deadline_s"]) else float(r["deadline_s"]),
            "energy_kwh": round(float(r["energy_kwh"]), 3)} for _, r in plan.jobs.iterrows()]
    return yamlfile.dump(doc)
