"""facility.supply: where the meter's power comes from, bucket by bucket."""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from engine_helpers import chat_service
from typer.testing import CliRunner

from dcsim.cli import app
from dcsim.report.page import write_report
from dcsim.scenario import Facility
from dcsim.supply import lp
from dcsim.supply.apply import capacity_factor
from dcsim.supply.dispatch import Inputs, dispatch, objective
from dcsim.supply.spec import Renewable, Supply

runner = CliRunner()


def _supply(**kw: object) -> Supply:
    base = {"grid_limit_kw": 6.0, "renewables": [{"name": "pv", "kind": "solar",
                                                  "installed_kw": 8.0}],
            "batteries": [{"name": "b1", "energy_kwh": 10.0, "power_kw": 3.0},
                          {"name": "b2", "energy_kwh": 4.0, "power_kw": 2.0,
                           "round_trip_efficiency": 0.8, "degradation_usd_per_kwh": 0.02}],
            "generators": [{"name": "gas", "power_kw": 4.0, "fuel_usd_per_kwh": 0.12,
                            "carbon_kg_per_kwh": 0.45, "ramp_kw_per_s": 0.002},
                           {"name": "diesel", "power_kw": 2.0, "fuel_usd_per_kwh": 0.3,
                            "carbon_kg_per_kwh": 0.7}]}
    return Supply.model_validate(base | kw)


def _random_inputs(seed: int, n: int = 96) -> Inputs:
    rng = np.random.default_rng(seed)
    dt = np.full(n, 900.0)
    hour = (np.arange(n) + 0.5) * 0.25
    return Inputs(dt, 5.0 + 4.0 * rng.random(n),
                  np.where((hour > 6) & (hour < 18), 8 * np.sin(np.pi * (hour - 6) / 12), 0),
                  0.05 + 0.2 * rng.random(n), 0.2 + 0.4 * rng.random(n))


def _check_physics(d: pd.DataFrame, x: Inputs, s: Supply) -> None:
    h = x.dt_s / 3600
    # balance, every bucket, to the joule (kW x s)
    supplied = (d["grid_kw"] + d["renewable_used_kw"] + d["generators_kw"]
                + d["battery_discharge_kw"] - d["battery_charge_kw"] + d["unmet_kw"])
    assert np.abs((supplied - d["load_kw"]) * x.dt_s).max() < 1e-3  # kJ -> under a joule
    assert np.allclose(d["renewable_used_kw"] + d["curtailed_kw"], x.renewable_kw)
    assert (d["curtailed_kw"] >= -1e-9).all() and (d["unmet_kw"] >= -1e-9).all()
    if s.grid_limit_kw is not None:
        assert (d["grid_kw"] <= s.grid_limit_kw + 1e-6).all()
    for b in s.batteries:
        soc = d[f"soc_kwh:{b.name}"].to_numpy()
        assert (soc >= b.soc_min * b.energy_kwh - 1e-6).all()
        assert (soc <= b.soc_max * b.energy_kwh + 1e-6).all()
        eta = math.sqrt(b.round_trip_efficiency)
        before = np.concatenate([[b.soc_initial * b.energy_kwh], soc[:-1]])
        step = (d[f"charge_kw:{b.name}"] * eta - d[f"discharge_kw:{b.name}"] / eta) * h
        assert np.allclose(soc, before + step, atol=1e-6)
        assert (d[f"charge_kw:{b.name}"] <= b.power_kw + 1e-6).all()
    for g in s.generators:
        out = d[f"generator_kw:{g.name}"].to_numpy()
        assert (out <= g.power_kw + 1e-6).all()
        if g.ramp_kw_per_s is not None:
            rise = np.diff(np.concatenate([[0.0], out]))
            assert (rise <= g.ramp_kw_per_s * x.dt_s + 1e-6).all()


@pytest.mark.parametrize("policy", ["cost", "carbon", "peak_shaving"])
@pytest.mark.parametrize("seed", [1, 2])
def test_dispatch_balances_every_bucket_and_the_lp_is_never_worse(policy, seed):
    s = _supply(policy=policy, import_cap_kw=5.0 if policy == "peak_shaving" else None)
    x = _random_inputs(seed)
    rule, best = dispatch(x, s), lp.optimal(x, s)
    _check_physics(rule, x, s)
    _check_physics(best, x, s)
    assert objective(best, x, s) <= objective(rule, x, s) + 1e-6


@pytest.mark.parametrize("policy", ["cost", "carbon", "peak_shaving"])
def test_with_start_up_times_the_optimal_dispatch_is_still_never_worse(policy):
    gens = [{"name": "gas", "power_kw": 4.0, "fuel_usd_per_kwh": 0.12, "carbon_kg_per_kwh": 0.45,
             "ramp_kw_per_s": 0.002, "start_up_s": 1200.0, "start_cost_usd": 0.5},
            {"name": "diesel", "power_kw": 2.0, "fuel_usd_per_kwh": 0.3,
             "carbon_kg_per_kwh": 0.7, "start_up_s": 300.0}]
    s = _supply(policy=policy, generators=gens, grid_limit_kw=4.0,
                import_cap_kw=3.5 if policy == "peak_shaving" else None)
    x = _random_inputs(3)
    rule, best = dispatch(x, s), lp.optimal(x, s)
    for d in (rule, best):
        _check_physics(d, x, s)
        out = d["generator_kw:gas"].to_numpy()
        starts = d["start:gas"].to_numpy()
        # 1,200 s of start-up in 900 s buckets: nothing in a start's first bucket, at
        # most two thirds of the power in its second
        for k in np.flatnonzero(starts > 0.5):
            assert out[k] <= 1e-6 and (k + 1 >= len(out) or out[k + 1] <= 8.0 / 3 + 1e-6)
    assert (rule["start:gas"] > 0.5).any()  # not vacuous
    assert objective(best, x, s) <= objective(rule, x, s) + 1e-6


def test_a_generator_started_ahead_covers_the_peak_the_rule_leaves_short_by_hand():
    # grid 100 kW; 100, 200, 100 kW in hourly buckets; gas of 150 kW needs 30 min to
    # start. The rule starts it when the peak comes: 75 kW on average in that hour,
    # 25 kWh unmet. The optimal dispatch starts it an hour ahead: nothing unmet, and
    # $0.1 x 300 + $0.2 x 100 + one start of $5 = $55
    s = Supply.model_validate({"grid_limit_kw": 100.0, "generators": [
        {"name": "gas", "power_kw": 150.0, "fuel_usd_per_kwh": 0.2, "carbon_kg_per_kwh": 0.5,
         "start_up_s": 1800.0, "start_cost_usd": 5.0}]})
    x = Inputs(np.full(3, 3600.0), np.array([100.0, 200.0, 100.0]), np.zeros(3),
               np.full(3, 0.1), np.full(3, 0.4))
    rule, best = dispatch(x, s), lp.optimal(x, s)
    assert list(rule["generators_kw"]) == pytest.approx([0.0, 75.0, 0.0])
    assert list(rule["unmet_kw"]) == pytest.approx([0.0, 25.0, 0.0])
    assert list(best["start:gas"]) == [1.0, 0.0, 0.0]
    assert list(best["generators_kw"]) == pytest.approx([0.0, 100.0, 0.0])
    assert objective(best, x, s) == pytest.approx(55.0)


def test_a_two_hour_day_by_hand():
    # 10 kW for two hours; 4 kW of sun in the first; grid at most 5 kW at $0.10; gas at
    # $0.20 covers the rest: 1 kW, then 5 kW. Cost 0.1 x 10 + 0.2 x 6 = $2.20.
    s = Supply.model_validate({"grid_limit_kw": 5.0, "generators": [
        {"name": "gas", "power_kw": 5.0, "fuel_usd_per_kwh": 0.2, "carbon_kg_per_kwh": 0.5}]})
    x = Inputs(np.full(2, 3600.0), np.full(2, 10.0), np.array([4.0, 0.0]), np.full(2, 0.1),
               np.full(2, 0.4))
    for d in (dispatch(x, s), lp.optimal(x, s)):
        assert list(d["grid_kw"]) == pytest.approx([5.0, 5.0])
        assert list(d["generators_kw"]) == pytest.approx([1.0, 5.0])
        assert objective(d, x, s) == pytest.approx(2.2)


def test_a_battery_buys_cheap_and_sells_dear_by_hand():
    # price $0.10 then $0.30; a lossless 10 kWh, 5 kW battery starting empty: it charges
    # 5 kWh in the cheap hour and gives them back in the dear one. Load 6 kW: grid 11
    # then 1 kW; cost 0.1 x 11 + 0.3 x 1 = $1.40 against $2.40 without it.
    s = Supply.model_validate({"batteries": [{"name": "b", "energy_kwh": 10.0,
                                               "power_kw": 5.0, "round_trip_efficiency": 1.0,
                                               "soc_min": 0.0, "soc_max": 1.0,
                                               "soc_initial": 0.0}]})
    x = Inputs(np.full(2, 3600.0), np.full(2, 6.0), np.zeros(2), np.array([0.1, 0.3]),
               np.full(2, 0.4))
    for d in (dispatch(x, s), lp.optimal(x, s)):
        assert list(d["grid_kw"]) == pytest.approx([11.0, 1.0])
        assert objective(d, x, s) == pytest.approx(1.4)
    # starting half full is no free lunch: draining its 5 kWh in the dear hour would cost
    # 0.1 x 6 + 0.3 x 1 = $0.90 plus putting them back at the mean price, 5 x 0.2 = $1,
    # so $1.90; cycling as before still costs $1.40, and the LP finds that
    half = s.model_copy(update={"batteries": [s.batteries[0].model_copy(
        update={"soc_initial": 0.5})]})
    d = lp.optimal(x, half)
    assert objective(d, x, half) == pytest.approx(1.4)
    drained = d.assign(grid_kw=[6.0, 1.0], **{"soc_kwh:b": [5.0, 0.0]})
    assert objective(drained, x, half) == pytest.approx(1.9)


def test_the_synthetic_sun_and_a_capacity_factor_file(tmp_path: Path):
    f = Facility(start_time=datetime(2025, 6, 1))
    sun = Renewable(name="pv", kind="solar", installed_kw=1.0)
    cf = capacity_factor(sun, f, tmp_path, np.array([3, 12, 21]) * 3600.0)
    assert cf == pytest.approx([0.0, 0.8, 0.0])
    (tmp_path / "cf.csv").write_text("timestamp,capacity_factor\n" + "\n".join(
        f"2025-06-01T{h:02d}:00:00,{h / 100}" for h in range(24)) + "\n")
    own = sun.model_copy(update={"capacity_factor_file": "cf.csv"})
    assert capacity_factor(own, f, tmp_path, np.array([5.5 * 3600]))[0] == pytest.approx(0.05)


def _scenario(supply: dict | None) -> dict:
    fac = {"pue": 1.2} | ({"supply": supply} if supply else {})
    return {"name": "supply", "facility": fac,
            "fleet": {"racks": [{"name": "r", "power_budget_kw": 40,
                                 "servers": [{"type": "dgx-h200", "count": 1}]}]},
            "workloads": [chat_service(2.0, 1)],
            "simulation": {"duration_s": 1800, "warmup_s": 30, "seed": 3,
                           "time_bucket_s": 60}}


def test_a_run_with_supply_writes_its_dispatch_and_one_without_is_unchanged(tmp_path: Path):
    supply = {"grid_limit_kw": 3.0, "batteries": [{"name": "b", "energy_kwh": 5.0,
                                                   "power_kw": 2.0}],
              "generators": [{"name": "gas", "power_kw": 3.0, "fuel_usd_per_kwh": 0.15,
                              "carbon_kg_per_kwh": 0.45}]}
    outs = {}
    for name, sup in (("with", supply), ("without", None)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(_scenario(sup)))
        r = runner.invoke(app, ["run", str(tmp_path / f"{name}.yaml"), "--out",
                                str(tmp_path / name), "-q"])
        assert r.exit_code == 0, r.output
        outs[name] = json.loads((tmp_path / name / "summary.json").read_text())
    assert "supply" not in outs["without"]
    assert not (tmp_path / "without" / "supply.parquet").exists()
    # the simulation itself is the same: supply only says where the power came from
    assert outs["with"]["total"] == outs["without"]["total"]
    sup = outs["with"]["supply"]
    table = pd.read_parquet(tmp_path / "with" / "supply.parquet")
    power = pd.read_parquet(tmp_path / "with" / "power.parquet")
    fac = power[power["domain"] == "facility"]
    meter_kwh = float(((fac["power_w"] + fac["cooling_w"] + fac["losses_w"])
                       * (fac["t_end_s"] - fac["t_start_s"])).sum()) / 3.6e6
    for kind in ("rule", "lp"):
        t = sup[kind]
        assert t["load_kwh"] == pytest.approx(meter_kwh, rel=1e-9)
        assert t["grid_peak_kw"] <= 3.0 + 1e-6
        assert len(table[table["dispatch"] == kind]) == len(fac)
    assert sup["lp"]["objective"] <= sup["rule"]["objective"] + 1e-9
    # the terminal and the report say it
    r = runner.invoke(app, ["run", str(tmp_path / "with.yaml"), "--out", str(tmp_path / "w2"),
                            "-q", "--report"])
    assert "supply, rule cost dispatch: grid" in r.output.replace("\n", " ")
    page = (tmp_path / "w2" / "report.html").read_text()
    assert "<h2>Supply</h2>" in page and "Where the power came from" in page
    assert "<h2>Supply</h2>" not in write_report(tmp_path / "without").read_text()


@pytest.mark.parametrize(("supply", "words"), [
    ({"policy": "peak_shaving"}, "import_cap_kw"),
    ({"batteries": [{"name": "b", "energy_kwh": 5, "power_kw": 1, "soc_initial": 0.95}]},
     "soc_initial"),
    ({"renewables": [{"name": "x", "kind": "solar", "installed_kw": 1}],
      "batteries": [{"name": "x", "energy_kwh": 5, "power_kw": 1}]}, "unique"),
    ({"generators": [{"name": "g", "power_kw": -1, "fuel_usd_per_kwh": 0.1,
                      "carbon_kg_per_kwh": 0.1}]}, "power_kw"),
    ({"renewables": [{"name": "pv", "kind": "solar", "installed_kw": 1,
                      "capacity_factor_file": "missing.csv"}]}, "capacity_factor_file"),
])
def test_bad_supply_input_is_one_clear_line(tmp_path: Path, supply, words):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_scenario(supply)))
    r = runner.invoke(app, ["validate", str(tmp_path / "s.yaml")])
    assert r.exit_code == 1 and words in r.output and "Traceback" not in r.output
