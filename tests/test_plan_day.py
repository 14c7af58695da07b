"""The optimizer's plan as one runnable scenario (plan.yaml), and --verify's continuous
run of it against the peak and greedy baselines."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from engine_helpers import chat_service

from dcsim.optimize.plan_scenario import schedule_steps
from dcsim.optimize.run import run_optimize
from dcsim.scenario import scenario_from_data

ROOT = Path(__file__).resolve().parents[1]


def day(demand: list[float], period_s: float = 400.0) -> dict:
    return {
        "name": "plan-day",
        "facility": {"pue": 1.2},
        "fleet": {"unused_servers": "switched_off", "server_boot_s": 60,
                  "server_off_after_s": 60,
                  "racks": [{"name": "r", "power_budget_kw": 40,
                             "servers": [{"type": "dgx-h200", "count": 2}]}]},
        "workloads": [chat_service(5.0, 2, slo={"ttft_p99_s": 2.0, "tpot_p99_s": 0.1})],
        "optimize": {"period_s": period_s, "periods": len(demand),
                     "demand_per_s": {"chat": demand},
                     "candidates": {"tp": [1], "power_cap_fractions": [1.0],
                                    "max_num_seqs": [256]},
                     "utilization_target": 0.8, "verify_mode": "continuous"},
        "simulation": {"duration_s": 3600, "warmup_s": 30, "seed": 3},
    }


def test_steps_start_replicas_a_lead_early_and_drain_at_the_period() -> None:
    steps = schedule_steps([1, 3, 3, 2, 0], 600.0, 90.0)
    assert [(s.at_s, s.replicas) for s in steps] == [(0, 1), (510, 3), (1800, 2), (2400, 0)]
    # leads longer than a period still keep the steps in order
    tight = schedule_steps([1, 2, 3], 100.0, 150.0)
    assert [s.at_s for s in tight] == [0.0, pytest.approx(0.001), 50.0]


def test_the_plan_runs_as_one_day_and_saves_against_the_peak_baseline() -> None:
    s = scenario_from_data(day([2.0, 40.0, 2.0]))
    tables, summary, files, _ = run_optimize(s, ROOT, None, check=True)
    sc = scenario_from_data(yaml.safe_load(files["plan.yaml"]))
    svc = sc.workloads[0]
    assert svc.scaling is not None and svc.arrival.kind == "steps"
    replicas = [st.replicas for st in svc.scaling.steps]
    assert max(replicas) > min(replicas)  # the plan scales with the demand
    day_rows = {d["plan"]: d for d in summary["verify_continuous"]}
    assert day_rows["plan"]["cold_starts"] >= 1 and day_rows["peak"]["cold_starts"] == 0
    assert day_rows["plan"]["gpu_hours_in_use"] < day_rows["peak"]["gpu_hours_in_use"]
    assert day_rows["plan"]["facility_kwh"] < day_rows["peak"]["facility_kwh"]
    v = tables["verify_continuous"]
    plan = v[v["plan"] == "plan"]
    assert len(plan) == 3 and (plan["slo_attainment"] >= 0.95).all(), plan
    # the period energies add up to the day's
    assert plan["period_facility_kwh"].sum() == pytest.approx(day_rows["plan"]["facility_kwh"])
