"""Unused servers switched off (fleet.unused_servers): simulator and optimizer agree."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyomo.environ as pyo
import pytest
from engine_helpers import chat_service
from test_optimize import _inputs, _small
from test_scheduling import _four_jobs
from test_scheduling import _scenario as _queue

from dcsim.catalog import load_catalog
from dcsim.engine.simulation import simulate
from dcsim.hardware.server import server_power_w
from dcsim.optimize.model import build
from dcsim.optimize.run import run_optimize
from dcsim.optimize.solver import solve
from dcsim.scenario import scenario_from_data

ROOT = Path(__file__).resolve().parents[1]


def _two_servers(mode: str, rack_kw: float = 40.0) -> dict:
    """Four 1-GPU chat replicas fill the first of two DGX H200; the second has no work."""
    return {
        "name": "off", "fleet": {"unused_servers": mode, "racks": [{
            "name": "r", "power_budget_kw": rack_kw,
            "servers": [{"type": "dgx-h200", "count": 2}]}]},
        "workloads": [chat_service(6.0, 4, (600, 0.6, 4000), (120, 0.5, 800))],
        "simulation": {"duration_s": 300, "seed": 2, "time_bucket_s": 30}}


def _energy_j(power, domain: str) -> float:
    p = power[power["domain"] == domain]
    return float((p["power_w"] * (p["t_end_s"] - p["t_start_s"])).sum())


def test_a_switched_off_server_saves_exactly_its_idle_draw():
    on = simulate(scenario_from_data(_two_servers("idle")))
    off = simulate(scenario_from_data(_two_servers("switched_off")))
    cat = load_catalog()
    srv, gpu = cat.server("dgx-h200"), cat.gpu("H200-SXM")
    wall, _, _ = server_power_w(8 * gpu.idle_power_w, srv, gpu)
    # same requests, same replicas: the only difference is the empty server
    assert _energy_j(on.power, "facility") - _energy_j(off.power, "facility") == pytest.approx(
        float(wall) * 300, rel=1e-9)
    assert _energy_j(on.power, "gpu") - _energy_j(off.power, "gpu") == pytest.approx(
        8 * gpu.idle_power_w * 300, rel=1e-9)
    assert np.allclose(on.requests["finish_s"], off.requests["finish_s"], equal_nan=True)


def test_budgets_leave_switched_off_servers_out():
    # 14 kW: one busy DGX H200 at full power (11.2 kW) plus the other parked at its lowest
    # limit does not fit, so the busy GPUs are limited; with the other switched off it fits
    on = simulate(scenario_from_data(_two_servers("idle", rack_kw=14)))
    off = simulate(scenario_from_data(_two_servers("switched_off", rack_kw=14)))
    assert on.budgets.set_index("domain").loc["rack", "throttled"]
    assert not off.budgets.set_index("domain").loc["rack", "throttled"]
    assert (off.replicas["power_cap_w"].isna()).all()


def test_training_servers_draw_only_while_a_job_holds_them():
    # with free servers switched off, every GPU-second of energy is a job's
    d = _queue(_four_jobs(), unused_servers="switched_off")
    r = simulate(scenario_from_data(d))
    assert _energy_j(r.power, "gpu") == pytest.approx(r.jobs["energy_j"].sum(), rel=1e-9)


def test_plan_pays_only_for_servers_it_uses_by_hand():
    # the hand-solved instance of test_optimize (A + B on 3 GPUs, 575 W above idle) with
    # unused servers off: one server of 8 GPUs at 100 W idle each is on, the other off
    x = _inputs([{"tp": 1, "planned_rps": 10.0, "power_a_w": 300.0, "power_b_w_per_rps": 5.0},
                 {"tp": 2, "planned_rps": 25.0, "power_a_w": 450.0, "power_b_w_per_rps": 4.0}],
                [[30.0]], pue=1.5)
    x = replace(x, servers_off=True)  # Inputs are frozen
    m = build(x)
    solved = solve(m, 30, 0.0, 0.0)
    assert solved.objective == pytest.approx((8 * 100 + 575) * 1.5 * 3600 / 3.6e6, rel=1e-9)
    assert sum(round(pyo.value(v)) for v in m.S.values()) == 1


def test_switched_off_plans_meet_slos_and_their_predicted_power_in_simulation():
    d = _small([4.0, 25.0])
    d["fleet"]["racks"][0]["servers"][0]["count"] = 3
    d["fleet"]["racks"][0]["power_budget_kw"] = 40
    d["fleet"]["unused_servers"] = "switched_off"
    tables, summary, _, _ = run_optimize(scenario_from_data(d), ROOT, None, check=True)
    plan = tables["verify"][tables["verify"]["plan"] == "plan"]
    assert plan["meets_slo"].all()
    assert np.allclose(plan["predicted_facility_w"], plan["simulated_facility_w"], rtol=0.03)
    assert summary["baselines"]["peak"]["energy_saved_by_plan"] > 0
