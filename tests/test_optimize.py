"""The optimizer: hand-solved and brute-forced MILPs, one power formula, closed loop."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyomo.environ as pyo
import pytest
import yaml
from engine_helpers import chat_service
from typer.testing import CliRunner

from dcsim.cli import app
from dcsim.engine.site import facility_table, site_overhead
from dcsim.errors import DcsimError
from dcsim.hardware.facility import facility_power_w
from dcsim.optimize.model import Fleet, Inputs, build, replica_it_w
from dcsim.optimize.plan import optimize
from dcsim.optimize.run import run_optimize
from dcsim.optimize.solver import solve
from dcsim.scenario import Cooling, Facility, load_scenario, scenario_from_data

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _inputs(configs: list[dict], demand: list[list[float]], servers: int = 2,
            budget_w: float | None = None, pue: float = 1.0) -> Inputs:
    """One GPU type ("G", 8 per server; per GPU 100 W idle, 700 W at the full limit, 250 W at
    the lowest)."""
    table = pd.DataFrame([{"service": "s", "service_index": 0, "config": f"c{i}", "gpu": "G",
                           "max_num_seqs": 64, "idle_w_per_gpu": 100.0,
                           "power_cap_w": np.nan, "peak_w_per_gpu": 700.0, **c}
                          for i, c in enumerate(configs)])
    racks = pd.DataFrame([{"rack": "r", "row": "", "gpu": "G", "gpus_per_server": 8,
                           "servers": servers, "idle_w_per_gpu": 100.0, "max_w_per_gpu": 700.0,
                           "min_w_per_gpu": 250.0}])
    fleet = Fleet(racks, {} if budget_w is None else {"r": budget_w}, {}, None)
    n = len(demand[0])
    o = site_overhead(Facility(pue=pue), None, 1.0)
    o = type(o)(*(np.repeat(v, n) for v in (o.cool_a, o.cool_b, o.loss_a, o.loss_b)))
    return Inputs(table, np.array(demand), ["s"], fleet, 3600.0, o, np.ones(n), 0, None)


def _solve(x: Inputs) -> tuple[pyo.ConcreteModel, float]:
    m = build(x)
    solved = solve(m, 30, 0.0, 0.0)
    assert solved.status == "optimal"
    return m, solved.objective


def test_tiny_instance_matches_the_hand_optimum():
    # 30 req/s. A: tp1, 10 req/s, 300 W + 5 W per req/s; B: tp2, 25 req/s, 450 W + 4.
    # Above idle (100 W a GPU): A 200 + 5y, B 250 + 4y. 3A = 750 W, 2B = 620 W, and
    # A + B with B full: 450 + 4 x 25 + 5 x 5 = 575 W, the optimum
    x = _inputs([{"tp": 1, "planned_rps": 10.0, "power_a_w": 300.0, "power_b_w_per_rps": 5.0},
                 {"tp": 2, "planned_rps": 25.0, "power_a_w": 450.0, "power_b_w_per_rps": 4.0}],
                [[30.0]], pue=1.5)
    m, obj = _solve(x)
    assert [round(pyo.value(m.N[c, 0])) for c in (0, 1)] == [1, 1]
    assert pyo.value(m.y[1, 0]) == pytest.approx(25.0)
    assert obj == pytest.approx((16 * 100 + 575) * 1.5 * 3600 / 3.6e6, rel=1e-9)


def _brute(configs: list[dict], demand: float, gpus: int, budget_w: float | None,
           peaks: list[float]) -> float:
    """Cheapest IT power above idle over every replica count (loads filled cheapest first)."""
    best = math.inf
    for counts in itertools.product(range(6), repeat=len(configs)):
        if sum(n * c["tp"] for n, c in zip(counts, configs, strict=True)) > gpus:
            continue
        if sum(n * c["planned_rps"] for n, c in zip(counts, configs, strict=True)) < demand - 1e-9:
            continue
        if budget_w is not None:  # servers at each level: as few as hold its replicas
            worst, used = 0.0, 0
            for level in set(peaks):
                g = sum(n * c["tp"] for n, c, p in zip(counts, configs, peaks, strict=True)
                        if p == level)
                s = math.ceil(g / 8)
                worst += s * 8 * level
                used += s
            if worst + (gpus // 8 - used) * 8 * 250 > budget_w + 1e-6 or used > gpus // 8:
                continue
        left, cost = demand, 0.0
        for n, c in sorted(zip(counts, configs, strict=True),
                           key=lambda nc: nc[1]["power_b_w_per_rps"]):
            y = min(left, n * c["planned_rps"])
            left -= y
            cost += (c["power_a_w"] - c["tp"] * 100) * n + c["power_b_w_per_rps"] * y
        best = min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(8))
def test_small_random_instances_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 4))
    peaks = [700.0] + [float(rng.choice([500.0, 600.0])) for _ in range(k - 1)]
    configs = [{"tp": int(rng.choice([1, 2, 4])), "planned_rps": float(rng.uniform(3, 12)),
                "power_a_w": float(rng.uniform(150, 400)),
                "power_b_w_per_rps": float(rng.uniform(1, 20)),
                "power_cap_w": np.nan if p == 700.0 else p, "peak_w_per_gpu": p}
               for p in peaks]
    for c in configs:
        c["power_a_w"] += c["tp"] * 100  # above idle
    demand = float(rng.uniform(5, 30))
    budget = float(rng.uniform(6000, 10000)) if seed % 2 else None
    want = _brute(configs, demand, 16, budget, peaks)
    x = _inputs(configs, [[demand]], budget_w=budget)
    if math.isinf(want):
        assert solve(build(x), 30, 0.0, 0.0).status not in ("optimal", "time limit")
        return
    _, obj = _solve(x)
    assert obj == pytest.approx((1600 + want) * 3600 / 3.6e6, rel=1e-7)


def test_one_power_formula_for_optimizer_and_simulator():
    # the facility model: a Pyomo expression through facility_power_w equals the
    # simulator's facility rows for the same IT power and weather
    f = Facility(cooling=Cooling())
    it = np.array([150e3, 90e3])
    dt = np.array([3600.0, 3600.0])
    power = pd.DataFrame({"domain": ["facility"] * 2, "power_w": it})
    rows = facility_table(power, it, dt, f, ROOT, 400e3)
    sim = (rows["power_w"] + rows["cooling_w"] + rows["losses_w"]).to_numpy()
    from dcsim.engine.site import outdoor_c

    o = site_overhead(f, outdoor_c(f, ROOT, np.array([1800.0, 5400.0])), 400e3)
    m = pyo.ConcreteModel()
    m.it = pyo.Var([0, 1])
    for t in (0, 1):
        m.it[t].fix(float(it[t]))
        assert pyo.value(facility_power_w(m.it[t], o, t)) == pytest.approx(sim[t], rel=1e-12)
    row = {"power_a_w": 900.0, "tp": 2, "idle_w_per_gpu": 110.0, "power_b_w_per_rps": 12.0}
    m.n, m.y = pyo.Var(), pyo.Var()
    m.n.fix(3)
    m.y.fix(7.5)
    assert pyo.value(replica_it_w(row, m.n, m.y)) == replica_it_w(row, 3, 7.5)


def _small(demand: list[float], slo: dict | None = None) -> dict:
    return {
        "name": "opt-small",
        "facility": {"pue": 1.2},
        "fleet": {"racks": [{"name": "r", "power_budget_kw": 20,
                             "servers": [{"type": "dgx-h200", "count": 1}]}]},
        "workloads": [chat_service(5.0, 2, slo=slo)],
        "optimize": {"period_s": 3600, "periods": len(demand), "demand_per_s": {"chat": demand},
                     "candidates": {"tp": [1, 2], "power_cap_fractions": [1.0, 0.7],
                                    "max_num_seqs": [256]},
                     "utilization_target": 0.8, "verify_duration_s": 240},
        "simulation": {"duration_s": 3600, "warmup_s": 30, "seed": 3},
    }


def test_plans_meet_their_slos_in_simulation_and_beat_peak_sizing():
    s = scenario_from_data(_small([4.0, 12.0, 25.0]))
    tables, summary, files, _ = run_optimize(s, ROOT, None, check=True)
    v = tables["verify"]
    plan = v[v["plan"] == "plan"]
    assert plan["meets_slo"].all(), plan
    assert summary["baselines"]["peak"]["energy_saved_by_plan"] > 0
    # predicted facility power within 10 % of the simulated
    assert np.allclose(plan["predicted_facility_w"], plan["simulated_facility_w"], rtol=0.1)
    period = yaml.safe_load(files["periods/period-02.yaml"])
    assert scenario_from_data(period).workloads  # runnable as it is written


def test_infeasible_demand_is_explained_in_terms_of_servers():
    s = scenario_from_data(_small([500.0]))
    with pytest.raises(DcsimError, match=r"more H200-SXM servers"):
        optimize(s, ROOT)


def test_an_slo_no_configuration_meets_names_the_best_achievable():
    s = scenario_from_data(_small([4.0], slo={"ttft_p99_s": 0.001}))
    with pytest.raises(DcsimError, match=r"workloads\[0\].slo.*best achievable p99: ttft"):
        optimize(s, ROOT)


def test_forecast_with_missing_periods_is_refused():
    d = _small([4.0, 5.0])
    d["optimize"]["periods"] = 3
    with pytest.raises(DcsimError, match=r"demand_per_s.chat: got '2 values'; expected one "
                       r"rate per period: 3"):
        optimize(scenario_from_data(d), ROOT)


def test_unknown_objective_exits_1_without_writing(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_small([4.0])))
    res = runner.invoke(app, ["optimize", str(path), "--objective", "speed", "--out",
                              str(tmp_path / "o")])
    assert res.exit_code == 1 and "energy, cost or carbon" in res.output
    assert not (tmp_path / "o").exists()


def test_the_example_plan_meets_its_slos_in_simulation():
    from dcsim.engine.context import Context
    from dcsim.optimize.verify import verify

    s = load_scenario(ROOT / "scenarios" / "optimize_diurnal.yaml")
    plan = optimize(s, ROOT / "scenarios")
    assert plan.solved.status == "optimal" and plan.solved.gap <= s.optimize.mip_gap + 1e-9
    # every eighth hour replayed for five simulated minutes, as the CLI's --verify does
    dep = plan.deployments[plan.deployments["period"] % 8 == 0]
    checked = verify(s, plan.services, dep, plan.inputs, 300.0,
                     Context.load(s, ROOT / "scenarios"), "plan")
    assert checked["meets_slo"].all(), checked[~checked["meets_slo"]]
    assert len(checked) == 3 * 2


def test_cost_and_carbon_objectives_weigh_each_hour_by_price_and_intensity(tmp_path):
    # hourly price and intensity: the objective is the sum over periods of facility
    # kWh x that hour's figure, for the same plan energy bookkeeping
    d = _small([6.0, 6.0])
    d["optimize"]["check_by_simulation"] = False
    (tmp_path / "c.csv").write_text("timestamp,g_per_kwh\n2025-01-01T00:00,100\n"
                                    "2025-01-01T01:00,500\n")
    d["facility"]["carbon_intensity_file"] = str(tmp_path / "c.csv")
    plan = optimize(scenario_from_data(d), ROOT, objective="carbon")
    kwh = plan.periods["facility_kwh"].to_numpy()
    assert plan.solved.objective == pytest.approx(kwh[0] * 0.1 + kwh[1] * 0.5, rel=1e-6)


def test_budget_value_is_the_hand_computed_shadow_price_of_a_binding_rack():
    # a fast config A at the full limit (25 W per req/s above idle, 80 req/s per server,
    # 8 x (700 - 250) = 3600 W of worst case per server above its parked floor) and a capped
    # B (36 W per req/s, 40 req/s per server, 8 x (400 - 250) = 1200 W). Moving 1 req/s
    # from B to A costs 3600/80 - 1200/40 = 15 W of budget and saves 36 - 25 = 11 W:
    # 11/15 kWh per kW of budget over the one-hour period, where the 9 kW budget binds
    from dcsim.optimize.solver import Values, budget_values

    def plan(budget_w: float) -> pd.DataFrame:
        x = _inputs([{"tp": 1, "planned_rps": 10.0, "power_a_w": 300.0,
                      "power_b_w_per_rps": 5.0},
                     {"tp": 1, "planned_rps": 5.0, "power_a_w": 250.0, "power_b_w_per_rps": 6.0,
                      "power_cap_w": 400.0, "peak_w_per_gpu": 400.0}], [[120.0]],
                    budget_w=budget_w)
        m, _ = _solve(x)
        v = Values()
        v.add(m, 0)
        return budget_values(x, v)

    tight = plan(9000.0).iloc[0]
    assert (tight["domain"], tight["name"], tight["period"]) == ("rack", "r", 0)
    assert tight["binding"] and tight["value_per_kw"] == pytest.approx(11 / 15, rel=1e-9)
    loose = plan(10000.0).iloc[0]  # the plan's servers need 8.8 kW: 1.2 kW to spare
    assert not loose["binding"] and loose["value_per_kw"] == 0.0


def test_a_model_is_not_built_from_inputs_that_make_no_sense():
    x = _inputs([{"tp": 1, "planned_rps": 10.0, "power_a_w": 300.0, "power_b_w_per_rps": 5.0}],
                [[float("nan")]])
    with pytest.raises(DcsimError) as err:
        build(x)
    assert "req/s >= 0" in str(err.value)


def test_extra_constraints_enter_through_a_plain_callable():
    # the hand instance of test_tiny_instance (optimum A + B = 575 W above idle); forbid
    # B and the best left is 3 A = 750 W
    x = _inputs([{"tp": 1, "planned_rps": 10.0, "power_a_w": 300.0, "power_b_w_per_rps": 5.0},
                 {"tp": 2, "planned_rps": 25.0, "power_a_w": 450.0, "power_b_w_per_rps": 4.0}],
                [[30.0]])

    def no_b(m, x_, d):
        m.no_b = pyo.Constraint(m.T, rule=lambda m, t: m.N[1, t] == 0)

    m = build(x, extra=no_b)
    solved = solve(m, 30, 0.0, 0.0)
    assert solved.objective == pytest.approx((16 * 100 + 750) * 3600 / 3.6e6, rel=1e-9)


def test_candidates_the_fleet_cannot_hold_are_an_error_not_a_traceback(tmp_path):
    d = yaml.safe_load((ROOT / "scenarios" / "optimize_diurnal.yaml").read_text())
    d["optimize"].setdefault("candidates", {}).update(gpus=["H200-SXM"], tp=[16])
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    r = runner.invoke(app, ["optimize", str(p), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "optimize.candidates" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()
    d["optimize"]["candidates"].update(gpus=["no-such-gpu"], tp=[1])
    p.write_text(yaml.safe_dump(d))
    r = runner.invoke(app, ["validate", str(p)])
    assert r.exit_code == 1 and "optimize.candidates.gpus[0]" in r.output


def test_the_terminal_prints_the_plan_its_peak_fleet_and_the_objective_unit(tmp_path):
    """dcsim optimize speaks the plan: a row per service and run of periods with one
    configuration, the peak GPUs, and the solver status as a footnote with its unit."""
    import json

    import pandas as pd
    from typer.testing import CliRunner

    from dcsim.cli import app

    res = CliRunner().invoke(app, [
        "optimize", str(ROOT / "scenarios" / "optimize_diurnal.yaml"), "--set",
        "optimize.periods=4", "--set", "optimize.period_s=600", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    rec = json.loads((tmp_path / "o" / "optimize.json").read_text())
    plan = pd.read_parquet(tmp_path / "o" / "plan.parquet")
    # the compressed rows expand back to the plan, period by period
    expanded = sorted((r["service"], t, r["gpu"], r["tp"], r["replicas"])
                      for r in rec["deployments"]
                      for t in range(r["first_period"], r["last_period"] + 1))
    assert expanded == sorted(zip(plan["service"], plan["period"], plan["gpu"], plan["tp"],
                                  plan["replicas"], strict=True))
    peak = (plan["tp"] * plan["replicas"]).groupby([plan["gpu"], plan["period"]]).sum()
    assert rec["peak_gpus"] == {g: int(n) for g, n in peak.groupby(level=0).max().items()}
    lines = res.output.splitlines()
    assert any(line.startswith("peak fleet: ") for line in lines)
    assert any(line.startswith("solver: optimal, energy objective") and " kWh " in line
               for line in lines)
    assert sum("chat" in line for line in lines) >= 1 and "summarise" in res.output
    # per stage: the capacity table per class of services, each MILP round with its gap
    assert any(line.startswith("capacity table: chat: ") and "usable" in line
               for line in lines)
    assert any(line.startswith("MILP round 1: optimal, gap ") for line in lines)
