"""The plan pays for the replicas it adds: each loads in the last lead of the period
before, on GPUs free then, drawing idle power where servers switch off (hand-solved
MILPs), and the lead is the one the simulator's cold start takes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pyomo.environ as pyo
import pytest
from test_optimize import _inputs, _solve

from dcsim.catalog import load_catalog
from dcsim.engine.build_scaling import cold_start_lead_s, replica_weight_bytes
from dcsim.optimize.model import cold_starts_w
from dcsim.optimize.plan_scenario import cold_start_lead_s as plan_lead_s
from dcsim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]

# A: 8 GPUs, 10 req/s, 200 W above its idle GPUs; B: 4 GPUs, 4 req/s, none above idle
A = {"tp": 8, "planned_rps": 10.0, "power_a_w": 1000.0, "power_b_w_per_rps": 0.0,
     "lead_s": 360.0}
B = {"tp": 4, "planned_rps": 4.0, "power_a_w": 400.0, "power_b_w_per_rps": 0.0,
     "lead_s": 360.0}


def replicas(m: pyo.ConcreteModel, c: int) -> list[int]:
    return [round(pyo.value(m.N[c, t])) for t in m.T]


def test_a_switch_that_cannot_prewarm_is_paid_in_the_period_before():
    # 16 GPUs; 16 req/s then 20. Alone each period: four B (no power above idle), then
    # two A. But two A for period 1 must load while period 0 still serves: 16 GPUs of
    # B plus 16 of A do not fit, so period 0 runs the two A already: 400 W more for
    # an hour, 0.4 kWh (idle 1.6 kW both hours)
    x = _inputs([A, B], [[16.0, 20.0]])
    m, free = _solve(x)
    assert replicas(m, 0) == [0, 2] and replicas(m, 1) == [4, 0]
    assert free == pytest.approx((1600 + 1600 + 400) / 1e3)
    m, paid = _solve(replace(x, cold_starts=True))
    assert replicas(m, 0) == [2, 2] and replicas(m, 1) == [0, 0]
    assert paid == pytest.approx(free + 0.4)


def test_a_cold_start_draws_idle_power_for_its_lead_where_servers_switch_off():
    # one A, then two: the second loads for 360 s of period 0 at 8 x 100 W idle wall:
    # 80 W over the hour. Servers on: one (800 W) + 200 W, then two (1600) + 400 W
    x = replace(_inputs([A], [[5.0, 15.0]]), servers_off=True, cold_starts=True)
    m, obj = _solve(x)
    assert replicas(m, 0) == [1, 2]
    assert obj == pytest.approx((800 + 200 + 80 + 1600 + 400) / 1e3)
    # the predicted periods use the same definition
    dep = pd.DataFrame([{"service_index": 0, "config": "c0", "period": t, "replicas": n,
                         "tp": 8, "idle_w_per_gpu": 100.0, "lead_s": 360.0}
                        for t, n in ((0, 1), (1, 2))])
    assert cold_starts_w(dep, x).tolist() == pytest.approx([80.0, 0.0])
    # where unused servers stay on, their GPUs idle anyway: no extra energy
    assert cold_starts_w(dep, replace(x, servers_off=False)).tolist() == [0.0, 0.0]


def test_the_plan_and_the_run_take_the_same_lead():
    s = load_scenario(ROOT / "scenarios" / "optimize_diurnal.yaml")
    s = s.model_copy(update={"fleet": s.fleet.model_copy(update={
        "unused_servers": "switched_off"})})
    cat = load_catalog()
    svc = s.workloads[0]
    d = svc.deployment
    lead = cold_start_lead_s(s.fleet, d, cat.gpu(d.gpu), cat.model(svc.model))
    weights = replica_weight_bytes(d, cat.gpu(d.gpu), cat.model(svc.model))
    by_hand = (s.fleet.server_boot_s + weights / (s.fleet.storage.per_client_gbyte_s * 1e9)
               + 20.0)
    assert lead == pytest.approx(by_hand)
    assert plan_lead_s(s, svc, cat) == lead


def test_a_change_of_gpu_limit_alone_starts_nothing():
    # A at full power (10 req/s) and at 420 W (7 req/s, no power above idle): the same
    # family. 14 req/s then 20: two at 420 W, then two at full power. All 16 GPUs serve
    # both hours; were a limit change a cold start, the two at full power could not
    # pre-warm beside the two at 420 W and period 0 would have to run them already
    low = dict(A, planned_rps=7.0, power_a_w=800.0, power_cap_w=420.0)
    x = replace(_inputs([A, low], [[14.0, 20.0]]), cold_starts=True)
    m, obj = _solve(x)
    assert replicas(m, 0) == [0, 2] and replicas(m, 1) == [2, 0]
    assert obj == pytest.approx((1600 + 0 + 1600 + 400) / 1e3)


def test_the_plan_scenario_changes_a_limit_in_place_and_starts_replicas_a_lead_early():
    from dcsim.optimize.plan_scenario import schedule_steps

    steps = schedule_steps([1, 1, 2, 1], 600.0, 90.0, [420.0, 560.0, 560.0, 420.0])
    assert [(s.at_s, s.replicas, s.power_cap_w) for s in steps] == [
        (0.0, 1, 420.0), (600.0, 1, 560.0), (1110.0, 2, 560.0), (1800.0, 1, 420.0)]
    # more replicas and a new limit in one period: they start under the old one
    both = schedule_steps([1, 2], 600.0, 90.0, [420.0, None])
    assert [(s.at_s, s.replicas, s.power_cap_w) for s in both] == [
        (0.0, 1, 420.0), (510.0, 2, 420.0), (600.0, 2, None)]


def test_a_family_idle_for_a_period_after_one_at_full_power_keeps_no_limit():
    # a family serving at full power (no limit) in period 0, idle in period 1, at 420 W
    # in period 2: the idle period keeps "no limit" (once a TypeError in notebook 03)
    from dcsim.optimize.plan_scenario import family_service

    s = load_scenario(ROOT / "scenarios" / "optimize_diurnal.yaml")
    svc = s.workloads[0]
    gpu = svc.deployment.gpu
    rows = pd.DataFrame({
        "period": [0, 2], "replicas": [2, 1], "load_rps": [3.0, 1.0],
        "power_cap_w": [float("nan"), 420.0], "gpu": [gpu, gpu], "tp": [1, 1],
        "max_num_seqs": [64, 64], "config": ["a", "b"]})
    out = family_service(s, svc, rows, 3, 600.0, load_catalog(), False)
    steps = [(x.at_s, x.replicas, x.power_cap_w) for x in out.scaling.steps]
    lead = round(plan_lead_s(s, out, load_catalog()), 3)
    assert steps == [(0.0, 2, None), (600.0, 0, None), (1200.0 - lead, 1, None),
                     (1200.0, 1, 420.0)]
    assert out.deployment.replicas == 2
