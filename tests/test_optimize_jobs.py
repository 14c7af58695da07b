"""Training jobs in the optimizer: limit and racks per job under deadlines and budgets."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyomo.environ as pyo
import pytest
import yaml
from engine_helpers import chat_service

from dcsim.engine.site import site_overhead
from dcsim.errors import DcsimError
from dcsim.optimize.jobs import expected_runtime_s, shares
from dcsim.optimize.model import Fleet, Inputs, build
from dcsim.optimize.run import run_optimize
from dcsim.optimize.solver import solve
from dcsim.scenario import Facility, scenario_from_data

ROOT = Path(__file__).resolve().parents[1]


def _x(options: list[dict], budget_w: float | None = None, periods: int = 4) -> Inputs:
    """Two servers of 8 GPUs "G" (100 W idle, 250 W parked per GPU) in rack "r"; one
    service of 5 req/s whose only configuration (1 GPU, 10 req/s, 200 W above idle, 700 W
    a GPU at worst) needs one replica; one job of one server with the given options."""
    table = pd.DataFrame([{"service": "s", "service_index": 0, "config": "c", "gpu": "G",
                           "tp": 1, "max_num_seqs": 64, "planned_rps": 10.0,
                           "power_a_w": 300.0, "power_b_w_per_rps": 0.0,
                           "idle_w_per_gpu": 100.0, "power_cap_w": np.nan,
                           "peak_w_per_gpu": 700.0}])
    racks = pd.DataFrame([{"rack": "r", "row": "", "gpu": "G", "gpus_per_server": 8,
                           "servers": 2, "idle_w_per_gpu": 100.0, "max_w_per_gpu": 700.0,
                           "min_w_per_gpu": 250.0}])
    fleet = Fleet(racks, {} if budget_w is None else {"r": budget_w}, {}, None)
    o = site_overhead(Facility(pue=1.0), None, 1.0)
    o = type(o)(*(np.repeat(v, periods) for v in (o.cool_a, o.cool_b, o.loss_a, o.loss_b)))
    jobs = pd.DataFrame([{"job": "j", "job_index": 1, "gpu": "G", "servers": 1,
                          "gpus_per_server": 8, "start_s": 0.0, "racks": None, **opt}
                         for opt in options])
    return Inputs(table, np.full((1, periods), 5.0), ["s"], fleet, 3600.0, o,
                  np.ones(periods), 1, None, jobs=jobs)


def _solve(x: Inputs) -> tuple[pyo.ConcreteModel, float]:
    m = build(x)
    solved = solve(m, 30, 0.0, 0.0)
    assert solved.status == "optimal"
    return m, solved.objective


FAST = {"power_cap_w": np.nan, "above_idle_w": 3000.0, "runtime_s": 7200.0,
        "peak_w_per_gpu": 700.0}  # 6 kWh above idle
SLOW = {"power_cap_w": 400.0, "above_idle_w": 2500.0, "runtime_s": 10800.0,
        "peak_w_per_gpu": 400.0}  # 7.5 kWh above idle


def test_a_job_takes_the_limit_with_the_least_energy_by_hand():
    # idle 16 GPUs x 100 W + the replica's 200 W, 4 h: 7.2 kWh; plus the job
    m, obj = _solve(_x([FAST, SLOW]))
    assert [round(pyo.value(m.z[o])) for o in (0, 1)] == [1, 0]
    assert obj == pytest.approx(7.2 + 6.0, rel=1e-9)
    cheap_slow = dict(SLOW, above_idle_w=1500.0)  # 4.5 kWh: now the capped one wins
    m, obj = _solve(_x([FAST, cheap_slow]))
    assert [round(pyo.value(m.z[o])) for o in (0, 1)] == [0, 1]
    assert obj == pytest.approx(7.2 + 4.5, rel=1e-9)


def test_a_rack_budget_forces_the_job_to_a_lower_limit():
    # worst case, per GPU above the 250 W parked: the replica's server 450 W, the job's
    # server 450 W at full power (11.2 kW in all) or 150 W at 400 W (8.8 kW)
    m, obj = _solve(_x([FAST, SLOW], budget_w=9000.0))
    assert [round(pyo.value(m.z[o])) for o in (0, 1)] == [0, 1]
    assert obj == pytest.approx(7.2 + 7.5, rel=1e-9)
    assert round(pyo.value(m.J[1, "r"])) == 1
    x = _x([FAST, SLOW], budget_w=8000.0)  # neither fits beside the replica's server
    assert solve(build(x), 30, 0.0, 0.0).status == "infeasible"


def test_a_job_longer_than_the_horizon_counts_its_whole_energy_and_holds_its_server():
    long = dict(SLOW, runtime_s=6 * 3600.0)  # 2.5 kW for 6 h: 15 kWh above idle
    x = _x([long])
    m, obj = _solve(x)
    assert obj == pytest.approx(7.2 + 15.0, rel=1e-9)
    # the job's server is held in all 4 periods: the replica shares no server with it
    assert all(pyo.value(m.rack_servers["r", "G", t].body) == pytest.approx(2) for t in range(4))
    inside, after = shares(x.jobs, 4, 3600.0)
    assert inside.sum() == pytest.approx(4.0) and after.sum() == pytest.approx(2 * 3600.0)


def test_expected_runtime_with_failures_is_first_order():
    # 100 h of work, a failure every 50 h costing 5 h: W = 100 / (1 - 5/50) = 111.1 h
    assert expected_runtime_s(100.0, 50.0, 5.0) == pytest.approx(100 / 0.9)
    assert expected_runtime_s(100.0, math.inf, 5.0) == 100.0
    assert math.isinf(expected_runtime_s(100.0, 5.0, 6.0))


def _scenario(deadline_s: float | None, budget_kw: float = 40) -> dict:
    return {
        "name": "opt-job", "facility": {"pue": 1.2},
        "fleet": {"racks": [{"name": "r", "count": 2, "power_budget_kw": budget_kw,
                             "servers": [{"type": "dgx-h200", "count": 1}]}]},
        "workloads": [
            chat_service(3.0, 1),
            {"kind": "training", "name": "ft", "model": "llama-3.1-8b", "gpu": "H200-SXM",
             "gpus": 8, "parallelism": {"tp": 1, "pp": 1, "dp": 8}, "steps": 300,
             "global_batch_tokens": 524288, "seq_len": 4096, "micro_batches": 4,
             "deadline_s": deadline_s}],
        "optimize": {"period_s": 3600, "periods": 2, "demand_per_s": {"chat": [3.0, 3.0]},
                     "candidates": {"tp": [1], "power_cap_fractions": [1.0, 0.6],
                                    "max_num_seqs": [256]},
                     "check_by_simulation": False, "verify_duration_s": 120},
        "simulation": {"duration_s": 7200, "warmup_s": 10, "seed": 2},
    }


@pytest.mark.parametrize(("budget_kw", "limit_w"), [(40, None), (10, 420.0)])
def test_plan_meets_the_deadline_in_simulation_and_predicts_the_run(budget_kw, limit_w):
    # a DGX H200 at full power draws 11.2 kW at worst: a 10 kW rack forces the 60 % limit
    s = scenario_from_data(_scenario(deadline_s=3 * 3600.0, budget_kw=budget_kw))
    tables, _, files, plan = run_optimize(s, ROOT, None, check=True)
    job = plan.jobs.iloc[0]
    assert job["end_s"] <= 3 * 3600.0
    assert (pd.isna(job["power_cap_w"]) if limit_w is None else job["power_cap_w"] == limit_w)
    v = tables["verify_jobs"].iloc[0]
    assert v["meets_deadline"]
    # no failures: the simulated run matches the plan's arithmetic
    assert v["simulated_end_s"] == pytest.approx(v["predicted_end_s"], rel=0.02)
    assert v["simulated_gpu_kwh"] == pytest.approx(v["predicted_gpu_kwh"], rel=0.03)
    assert "training:" in files["plan_periods.yaml"]
    day = yaml.safe_load(files["plan.yaml"])  # the plan as a scenario runs the job too
    assert [w["name"] for w in day["workloads"] if w["kind"] == "training"] == [job["job"]]
    # the job's server is not given to the chat replicas while it runs
    dep = plan.deployments[plan.deployments["period"] == 0]
    job_racks = set(job["racks"])
    assert all(not (set(n.split("/")[0] for n in names) & job_racks) for names in dep["servers"])


def test_a_deadline_no_limit_meets_is_refused_with_the_fastest_end():
    s = scenario_from_data(_scenario(deadline_s=60.0))
    with pytest.raises(DcsimError) as e:
        run_optimize(s, ROOT, None, check=False)
    assert "workloads[1].deadline_s" in str(e.value) and "at least" in str(e.value)


def test_a_deadline_the_budget_cannot_afford_names_the_power_missing():
    # 10 kW racks allow only the 60 % limit, which ends after 6,000 s: a 5,000 s
    # deadline needs the full limit and a bigger budget where the job runs
    s = scenario_from_data(_scenario(deadline_s=5000.0, budget_kw=10))
    with pytest.raises(DcsimError) as e:
        run_optimize(s, ROOT, None, check=False)
    assert "power budget of r-" in str(e.value) and "kW more" in str(e.value)


def test_a_carbon_aware_plan_moves_a_flexible_job_into_the_clean_hours(tmp_path: Path):
    # 4 hourly periods, the grid clean only in hour 2: a 50-minute job due by the end
    # may start at any hour; weighing carbon, it runs in hour 2, while the energy
    # objective (every hour alike) keeps the start it was submitted with
    d = _scenario(deadline_s=4 * 3600.0)
    d["optimize"].update(periods=4, demand_per_s={"chat": [3.0] * 4}, shift_training=True)
    (tmp_path / "c.csv").write_text("timestamp,g_per_kwh\n" + "".join(
        f"2025-01-01T0{h}:00,{100 if h == 2 else 600}\n" for h in range(4)))
    d["facility"]["carbon_intensity_file"] = str(tmp_path / "c.csv")
    s = scenario_from_data(d)
    _, _, _, plan = run_optimize(s, ROOT, "carbon", check=False)
    job = plan.jobs.iloc[0]
    assert job["start_s"] == 2 * 3600.0 and job["end_s"] <= 3 * 3600.0
    _, _, _, plan = run_optimize(s, ROOT, "energy", check=False)
    assert plan.jobs.iloc[0]["start_s"] == 0.0


def test_cli_writes_the_jobs_plan_and_prints_it(tmp_path: Path):
    from typer.testing import CliRunner

    from dcsim.cli import app

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_scenario(deadline_s=3 * 3600.0)))
    r = CliRunner().invoke(app, ["optimize", str(tmp_path / "s.yaml"), "--out",
                                 str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert "training jobs" in r.output and "ft" in r.output
    jobs = pd.read_parquet(tmp_path / "out" / "jobs.parquet")
    assert list(jobs["job"]) == ["ft"] and jobs["end_s"].iloc[0] <= 3 * 3600.0
    plan = yaml.safe_load((tmp_path / "out" / "plan_periods.yaml").read_text())
    assert plan["training"][0]["job"] == "ft" and plan["training"][0]["rack_servers"]


def test_the_training_example_plan_meets_slos_and_its_deadline_in_simulation():
    from dcsim.engine.context import Context
    from dcsim.optimize.plan import optimize
    from dcsim.optimize.verify import verify, verify_jobs
    from dcsim.scenario import load_scenario

    s = load_scenario(ROOT / "scenarios" / "optimize_training.yaml")
    ctx = Context.load(s, ROOT / "scenarios")
    plan = optimize(s, ROOT / "scenarios", context=ctx)
    assert plan.solved.status == "optimal"
    dep = plan.deployments[plan.deployments["period"] % 4 == 0]  # every fourth hour
    checked = verify(s, plan.services, dep, plan.inputs, 300.0, ctx, "plan")
    assert checked["meets_slo"].all(), checked[~checked["meets_slo"]]
    jobs = verify_jobs(s, plan.jobs, ctx)
    assert jobs["meets_deadline"].all(), jobs
