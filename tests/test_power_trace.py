"""simulation.power_trace: a synchronous job's power phase by phase, its swing and ramp,
and the battery a grid ramp limit asks for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from dcsim.cli import app
from dcsim.engine.context import Context
from dcsim.power_trace import GRID_S, ramp_limited, summarise
from dcsim.scenario import PowerTrace, scenario_from_data
from dcsim.training.step import step_model

runner = CliRunner()


def _scenario(trace: dict | None) -> dict:
    sim = {"duration_s": 1200, "time_bucket_s": 60} | ({"power_trace": trace} if trace else {})
    return {"name": "trace", "facility": {"pue": 1.2},
            "fleet": {"racks": [{"name": "r", "count": 2, "power_budget_kw": 60,
                                 "servers": [{"type": "dgx-h200", "count": 4}]}]},
            "workloads": [{"kind": "training", "name": "ft", "model": "llama-3.1-8b",
                           "gpu": "H200-SXM", "gpus": 32,
                           "parallelism": {"tp": 1, "pp": 2, "dp": 16},
                           "total_tokens": 1e10, "global_batch_tokens": 2097152}],
            "simulation": sim}


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("trace")
    out = {}
    for name, tr in (("with", {"start_s": 600, "duration_s": 60, "grid_ramp_kw_per_s": 5}),
                     ("without", None)):
        (tmp / f"{name}.yaml").write_text(yaml.safe_dump(_scenario(tr)))
        r = runner.invoke(app, ["run", str(tmp / f"{name}.yaml"), "--out", str(tmp / name),
                                "-q"])
        assert r.exit_code == 0, r.output
        out[name] = tmp / name
    return out


def test_phases_follow_the_step_decomposition(traced):
    phases = pd.read_parquet(traced["with"] / "power_trace_phases.parquet")
    job = pd.read_parquet(traced["with"] / "jobs.parquet").iloc[0]
    inner = phases.iloc[1:-1]  # the first and last are cut by the window
    dur = (inner["end_s"] - inner["start_s"]).groupby(inner["phase"]).agg(["min", "max"])
    for phase, col in (("compute", "compute_s"), ("bubble", "bubble_s"),
                       ("allreduce", "exposed_dp_s")):
        assert dur.loc[phase].to_numpy() == pytest.approx([job[col]] * 2, rel=1e-9)
    starts = phases[phases["phase"] == "compute"]["start_s"].to_numpy()[1:]
    assert np.diff(starts) == pytest.approx(job["step_s"], rel=1e-9)  # one step apart
    assert phases["start_s"].min() == 600 and phases["end_s"].max() == pytest.approx(660)


def test_the_swing_of_one_synchronous_job_by_hand(traced):
    s = json.loads((traced["with"] / "summary.json").read_text())["power_trace"]
    sc = scenario_from_data(_scenario(None))
    job = pd.read_parquet(traced["with"] / "jobs.parquet").iloc[0]
    ctx = Context.load(sc)
    wait = step_model(sc.workloads[0], ctx.catalog, ctx.store, 0.0).wait_power_w
    # 32 GPUs between busy and waiting power, through the constant PUE of 1.2
    assert s["largest_swing_mw"] * 1e6 == pytest.approx(32 * (job["busy_power_w"] - wait)
                                                        * 1.2, rel=1e-6)
    # the trace averages to the run's facility power over the window's buckets
    trace = pd.read_parquet(traced["with"] / "power_trace.parquet")
    power = pd.read_parquet(traced["with"] / "power.parquet")
    fac = power[(power["domain"] == "facility") & (power["t_start_s"] >= 600)
                & (power["t_start_s"] < 660)]
    mean = float(((trace["t_end_s"] - trace["t_s"]) * trace["facility_w"]).sum() / 60)
    assert mean == pytest.approx(float((fac["power_w"] + fac["cooling_w"] + fac["losses_w"])
                                       .mean()), rel=1e-3)
    # tracing changes nothing the run computed
    plain = json.loads((traced["without"] / "summary.json").read_text())
    assert json.loads((traced["with"] / "summary.json").read_text())["total"] == plain["total"]
    assert "power_trace" not in plain
    assert not (traced["without"] / "power_trace.parquet").exists()
    from dcsim.report.page import write_report

    page = write_report(traced["with"]).read_text()
    assert "<h2>Power swings</h2>" in page and "To keep grid import within 5 kW/s" in page


def test_battery_for_a_ramp_limit_by_hand():
    # 0 for a second, then 1 MW; the grid may move 1 MW/s: it ramps over one second and the
    # battery covers the triangle between: 1 MW at first, 0.5 MW s = 0.139 kWh
    n = round(1 / GRID_S)
    p = np.r_[np.zeros(n), np.full(2 * n, 1e6)]
    s = summarise(p, PowerTrace(start_s=0, duration_s=3, grid_ramp_kw_per_s=1000.0))
    assert s["largest_swing_mw"] == pytest.approx(1.0)
    assert s["steepest_ramp_mw_per_s"] == pytest.approx(1.0)
    assert s["battery_power_kw"] == pytest.approx(1000 - 10, rel=1e-9)  # one step moved
    assert s["battery_energy_kwh"] == pytest.approx(0.5e6 / 3.6e6, rel=0.02)
    g = ramp_limited(np.array([0.0, 10, 10, 10, 10, 10, 0]), 3.0)
    assert list(g) == [0, 3, 6, 9, 10, 10, 7]


def test_a_window_past_the_run_is_refused(tmp_path: Path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_scenario(
        {"start_s": 1100, "duration_s": 200})))
    r = runner.invoke(app, ["validate", str(tmp_path / "s.yaml")])
    assert r.exit_code == 1 and "power_trace ends at 1300" in r.output
