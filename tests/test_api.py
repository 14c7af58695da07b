"""The Python API (`import dcsim`): the same answers as the commands, as DataFrames."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
import yaml
from typer.testing import CliRunner

import dcsim
from dcsim.cli import app
from dcsim.errors import DcsimError

ROOT = Path(__file__).resolve().parents[1]
SHORT = {"simulation.duration_s": 120.0, "simulation.warmup_s": 10.0}


@pytest.fixture(scope="module")
def short() -> dcsim.Scenario:
    return dcsim.load(ROOT / "scenarios" / "default.yaml").with_(**SHORT)


def test_with_changes_fields_by_path_validates_and_keeps_the_folder(short):
    base = dcsim.load(ROOT / "scenarios" / "default.yaml")
    more = base.with_(**{"workloads.chat.deployment.replicas": 6})
    assert more.workloads[0].deployment.replicas == 6
    assert base.workloads[0].deployment.replicas != 6  # scenarios are never changed
    assert more.base_dir == base.base_dir == ROOT / "scenarios"  # relative paths resolve
    with pytest.raises(DcsimError, match="replicass"):
        base.with_(**{"workloads.chat.deployment.replicass": 6})
    with pytest.raises(DcsimError, match="a catalog GPU"):  # cross-checked like a file
        base.with_(**{"workloads.chat.deployment.gpu": "NOPE"})


def test_run_gives_what_dcsim_run_writes(short, tmp_path):
    r = dcsim.run(short, seed=4)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(json.loads(short.model_dump_json())))
    res = CliRunner().invoke(app, ["run", str(tmp_path / "s.yaml"), "--seed", "4", "--out",
                                   str(tmp_path / "cli"), "-q"])
    assert res.exit_code == 0, res.output
    written = json.loads((tmp_path / "cli" / "summary.json").read_text())
    chat = r.summary().loc["chat"]
    assert chat["requests_finished"] == written["services"]["chat"]["requests_finished"]
    assert chat["ttft_p99_s"] == pytest.approx(written["services"]["chat"]["ttft_p99_s"])
    assert r.totals()["facility_kwh"] == pytest.approx(written["total"]["facility_kwh"])
    pd.testing.assert_frame_equal(r.requests, pd.read_parquet(tmp_path / "cli" /
                                                           "requests.parquet"))
    assert set(r.timeseries.columns) >= {"replica", "t_start_s", "power_w"}
    assert r.jobs.empty and r.training().empty  # no training in this scenario
    assert r.intervals().empty


def test_figures_are_plotly_figures_of_the_run(short):
    r = dcsim.run(short)
    for fig in (r.plot.latency(), r.plot.power(), r.plot.energy(), r.plot.utilisation()):
        assert isinstance(fig, go.Figure) and len(fig.data) > 0
    lat = r.plot.latency()  # latencies span decades: every panel on a log axis
    assert [lat.layout[f"xaxis{i or ''}"].type for i in (0, 2, 3)] == ["log"] * 3


def test_replications_give_intervals_and_save_writes_the_run_folder(short, tmp_path):
    poisson = short.with_(**{  # a whole sub-record may be given as a mapping
        "workloads.chat.arrival": {"kind": "poisson", "rate_per_s": 3.0},
        "workloads.chat.prompt_tokens": {"kind": "lognormal", "mean_tokens": 500, "sigma": 0.8},
        "workloads.chat.output_tokens": {"kind": "lognormal", "mean_tokens": 100, "sigma": 0.6}})
    r = dcsim.run(poisson, replications=3, workers=1)
    iv = r.intervals().loc["services.chat.requests_finished"]
    assert iv["low"] < iv["mean"] < iv["high"]
    assert isinstance(r.plot.power_bands(), go.Figure)
    out = r.save(tmp_path / "run")
    assert json.loads((out / "summary.json").read_text())["replications"]["n"] == 3
    assert (out / "requests.parquet").is_file() and (out / "replications_power.parquet").is_file()


def test_optimize_returns_the_plan_with_its_energy_carbon_and_cost(tmp_path):
    s = dcsim.load(ROOT / "scenarios" / "optimize_diurnal.yaml").with_(**{
        "optimize.periods": 2, "optimize.period_s": 600.0})
    plan = dcsim.optimize(s)
    assert plan.summary["status"] == "optimal"
    assert set(plan.deployments["period"]) == {0, 1}
    p = plan.periods
    # the scenario's grid: 400 g/kWh and $0.08/kWh, so carbon and cost follow the energy
    assert p["carbon_kg"].to_numpy() == pytest.approx(0.4 * p["facility_kwh"].to_numpy())
    assert p["cost_usd"].to_numpy() == pytest.approx(0.08 * p["facility_kwh"].to_numpy())
    assert "plan.yaml" in plan.files


def test_sweep_runs_a_sweep_file(tmp_path):
    base = yaml.safe_load((ROOT / "scenarios" / "default.yaml").read_text())
    base["simulation"] |= {"duration_s": 40, "warmup_s": 5}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "name": "t", "base": "base.yaml", "seeds": [1],
        "axes": [{"path": "workloads.chat.deployment.replicas", "values": [2, 4]}]}))
    table = dcsim.sweep(tmp_path / "sweep.yaml", tmp_path / "out")
    assert len(table) == 2 and (table["status"] == "finished").all()
