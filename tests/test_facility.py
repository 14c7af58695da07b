"""Facility model: PUE over a year of weather, hourly carbon and price, bad series."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dcsim.engine.simulation import simulate
from dcsim.engine.site import plant_of
from dcsim.errors import DcsimError
from dcsim.hardware.facility import chiller_cop, cooling_and_losses
from dcsim.hardware.series import load_hourly, synthetic_temperature
from dcsim.power_summary import energy_split
from dcsim.scenario import Cooling, load_scenario, scenario_from_data

ROOT = Path(__file__).resolve().parents[1]
YEAR = np.arange(0, 365 * 86400, 3600.0)


@pytest.mark.parametrize("medium", ["air", "liquid"])
def test_modelled_pue_is_sensible_over_a_year_and_higher_in_summer(medium):
    c = Cooling(medium=medium)
    t_out = synthetic_temperature(c.weather, datetime(2025, 1, 1), YEAR)
    it = np.full(YEAR.size, 6e5)
    cooling, losses = cooling_and_losses(it, t_out, plant_of(c), 1e6)
    pue = 1 + (cooling + losses) / it
    assert pue.min() >= 1.03 and pue.max() <= 2.0
    january, july = pue[: 31 * 24].mean(), pue[181 * 24: 212 * 24].mean()
    assert july > january


def test_chiller_cop_follows_carnot_and_falls_with_heat():
    c = Cooling(medium="air", carnot_fraction=0.5, approach_k=5, max_cop=50)
    # 10 C supply, 35 C outdoor: lift 30 K, Carnot COP 283.15 / 30
    assert float(chiller_cop(35.0, plant_of(c))) == pytest.approx(0.5 * 283.15 / 30)
    assert float(chiller_cop(20.0, plant_of(c))) > float(chiller_cop(35.0, plant_of(c)))


def _run(tmp_path: Path, facility: dict, duration: float = 7200.0):
    d = yaml.safe_load((ROOT / "scenarios" / "default.yaml").read_text())
    d["facility"].update(facility)
    d["simulation"] = {"duration_s": duration, "seed": 3, "time_bucket_s": 600}
    d["workloads"][0]["arrival"]["rate_scale"] = 0.2
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return simulate(load_scenario(path), base_dir=tmp_path)


def _hourly(path: Path, column: str, values: list[float], start: str = "2025-07-01") -> Path:
    ts = pd.date_range(start, periods=len(values), freq="h")
    pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%d %H:%M"), column: values}).to_csv(
        path, index=False)
    return path


def test_modelled_facility_energy_adds_up(tmp_path):
    r = _run(tmp_path, {"cooling": {"medium": "air"}, "start_time": "2025-07-15T12:00:00"})
    s = energy_split(r.power)
    assert s["facility_kwh"] == pytest.approx(
        s["it_energy_kwh"] + s["cooling_kwh"] + s["losses_kwh"], rel=1e-12)
    assert 1.03 < s["effective_pue"] < 2.0
    fac = r.power[r.power["domain"] == "facility"]
    assert fac["outdoor_c"].notna().all() and (fac["cooling_w"] > 0).all()


def test_hourly_carbon_and_price_series(tmp_path):
    _hourly(tmp_path / "c.csv", "g_per_kwh", [100.0, 500.0, 300.0])
    _hourly(tmp_path / "p.csv", "usd_per_kwh", [0.05, 0.20, 0.10])
    r = _run(tmp_path, {"carbon_intensity_file": "c.csv", "electricity_price_file": "p.csv",
                        "start_time": "2025-07-01T00:00:00"})
    fac = r.power[r.power["domain"] == "facility"].sort_values("t_start_s")
    kwh = (fac["power_w"] + fac["cooling_w"] + fac["losses_w"]) * 600 / 3.6e6
    hour = (fac["t_start_s"] // 3600).astype(int).to_numpy()
    assert fac["carbon_g"].to_numpy() == pytest.approx(kwh.to_numpy() * np.array(
        [100.0, 500.0])[hour])
    assert fac["cost_usd"].to_numpy() == pytest.approx(kwh.to_numpy() * np.array(
        [0.05, 0.20])[hour])


@pytest.mark.parametrize(("rows", "message"), [
    ("timestamp,g_per_kwh\n2025-01-01 00:00,100\n2025-01-01 02:00,100\n", "without gaps"),
    ("timestamp,g_per_kwh\nnoon,100\n", "row 2.timestamp"),
    ("timestamp,g_per_kwh\n2025-01-01 00:00,-5\n", "a number in [0, 2000]"),
    ("timestamp,grams\n2025-01-01 00:00,5\n", "also the columns ['g_per_kwh']"),
])
def test_bad_series_are_rejected(tmp_path, rows, message):
    path = tmp_path / "bad.csv"
    path.write_text(rows)
    with pytest.raises(DcsimError) as info:
        load_hourly(path, "g_per_kwh")
    assert message in str(info.value)


def test_series_must_cover_the_run(tmp_path):
    _hourly(tmp_path / "c.csv", "g_per_kwh", [100.0])
    with pytest.raises(DcsimError, match="covering the run"):
        _run(tmp_path, {"carbon_intensity_file": "c.csv", "start_time": "2025-07-01T00:00:00"})


def test_bad_cooling_inputs_are_schema_errors():
    base = yaml.safe_load((ROOT / "scenarios" / "default.yaml").read_text())
    for bad in ({"max_cop": 0}, {"carnot_fraction": -1}, {"medium": "oil"}):
        d = {**base, "facility": {**base["facility"], "cooling": bad}}
        with pytest.raises(DcsimError, match=r"facility\.cooling"):
            scenario_from_data(d)
