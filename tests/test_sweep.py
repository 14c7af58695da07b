"""Sweeps: points checked before running, parallel runs (local and Dask), resume, failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from engine_helpers import chat_service
from typer.testing import CliRunner

from dcsim.cli import app
from dcsim.errors import DcsimError
from dcsim.report.page import write_report
from dcsim.report.sweep import pareto_mask
from dcsim.scenario import load_scenario
from dcsim.sweep.points import sample
from dcsim.sweep.run import run_sweep
from dcsim.sweep.spec import SweepSpec

runner = CliRunner()

BASE = {
    "name": "sweep-base",
    "fleet": {"racks": [{"name": "r", "power_budget_kw": 20,
                         "servers": [{"type": "dgx-h200", "count": 1}]}]},
    "workloads": [chat_service(4.0, 1, (500, 0.5, 4000), (100, 0.5, 800))],
    "simulation": {"duration_s": 60, "warmup_s": 5, "seed": 1},
}


def _files(tmp: Path, axes: list[dict], seeds: list[int] | None = None, **extra: object) -> Path:
    (tmp / "base.yaml").write_text(yaml.safe_dump(BASE))
    sweep = {"name": "t", "base": "base.yaml", "axes": axes, "seeds": seeds or [1, 2], **extra}
    (tmp / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return tmp / "sweep.yaml"


CAPS = [{"path": "workloads.chat.deployment.power_cap_w", "values": [None, 400]}]


def test_grid_runs_every_point_and_seed_in_parallel_then_resumes(tmp_path: Path):
    f = _files(tmp_path, CAPS)
    out = tmp_path / "out"
    t = run_sweep(f, out, workers=2)
    assert len(t) == 4 and (t["status"] == "finished").all()
    assert sorted(t["seed"]) == [1, 1, 2, 2]
    assert t["workloads.chat.deployment.power_cap_w"].isna().sum() == 2
    # a 400 W limit draws less GPU energy than the default 700 W for the same requests
    e = t.groupby(t["workloads.chat.deployment.power_cap_w"].fillna(700))[
        "chat/energy_kwh"].mean()
    assert e[400] < e[700]
    # each point x seed has its own results; the seeds differ, the table is tidy
    assert len(list((out / "points").glob("*/summary.json"))) == 4
    cap = t["workloads.chat.deployment.power_cap_w"].fillna(700)
    assert (t.groupby(cap)["chat/energy_kwh"].nunique() == 2).all()  # seeds draw anew
    stamps = {p: p.stat().st_mtime_ns for p in (out / "points").glob("*/summary.json")}
    again = run_sweep(f, out, workers=2)  # resumable: nothing runs twice
    assert {p: p.stat().st_mtime_ns for p in (out / "points").glob("*/summary.json")} == stamps
    pd.testing.assert_frame_equal(again.drop(columns="wall_s"), t.drop(columns="wall_s"))
    page = write_report(out).read_text()
    assert "<h2>Metrics against each axis</h2>" in page and "Pareto front" in page
    # the axis is titled by its field's description (sweep.json keeps the titles)
    titles = json.loads((out / "sweep.json").read_text())["axis_titles"]
    path = "workloads.chat.deployment.power_cap_w"
    assert titles[path].endswith(f"({path})") and titles[path] in page
    # per point: the mean over its two seeds and a 95 % t-interval around it
    pts = pd.read_parquet(out / "sweep_points.parquet")
    assert len(pts) == 2 and (pts["seeds"] == 2).all()
    for _, p in pts.iterrows():
        mine = t[t["point"] == p["point"]]["chat/energy_kwh"]
        assert p["chat/energy_kwh_mean"] == pytest.approx(mine.mean())
        # two seeds: half-width t(0.975, 1) x |a - b| / 2 = 6.4 |a - b|, wider than both
        assert p["chat/energy_kwh_low"] <= mine.min() <= mine.max() <= p["chat/energy_kwh_high"]
    # the report's bars are that interval, not the seeds' range
    from dcsim.report.sweep import metric_vs_axis

    fig = metric_vs_axis(t, ["workloads.chat.deployment.power_cap_w"],
                         "workloads.chat.deployment.power_cap_w")
    bars = next(tr for tr in fig.data if tr.yaxis in ("y", None))
    got = sorted(float(m + h) for m, h in zip(bars.y, bars.error_y.array, strict=True))
    assert got == pytest.approx(sorted(pts["facility_kwh_high"]))


def test_a_failing_point_is_recorded_and_the_others_finish(tmp_path: Path):
    # 100 replicas of one GPU each do not fit 8 GPUs: valid schema, fails when it runs
    f = _files(tmp_path, [{"path": "workloads.chat.deployment.replicas", "values": [1, 100]}],
               seeds=[1])
    t = run_sweep(f, tmp_path / "out", workers=1)
    assert t.set_index("workloads.chat.deployment.replicas").loc[1, "status"] == "finished"
    bad = t.set_index("workloads.chat.deployment.replicas").loc[100]
    assert bad["status"] == "failed" and "replicas" in bad["error"]


def test_unknown_paths_and_rejected_values_are_found_before_anything_runs(tmp_path: Path):
    f = _files(tmp_path, [{"path": "workloads.chat.deployment.power_cap", "values": [400]}])
    r = runner.invoke(app, ["sweep", str(f), "--out", str(tmp_path / "out")])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "axes[0].path" in r.output and "power_cap_w" in r.output  # names what exists
    f = _files(tmp_path, [{"path": "workloads.chat.arrival.rate_per_s", "values": [4, -1]}])
    r = runner.invoke(app, ["sweep", str(f), "--out", str(tmp_path / "out")])
    assert r.exit_code == 1 and "axes[0] (workloads.chat.arrival.rate_per_s = -1)" in r.output
    assert not (tmp_path / "out").exists()


def test_validate_checks_a_sweep_file_as_sweep_would_before_it_runs(tmp_path: Path):
    f = _files(tmp_path, CAPS, seeds=[1, 2, 3])
    r = runner.invoke(app, ["validate", str(f)])
    assert r.exit_code == 0 and "a sweep of 6 runs" in r.output  # 2 values x 3 seeds
    f = _files(tmp_path, [{"path": "workloads.chat.arrival.rate_per_s", "values": [4, -1]}])
    r = runner.invoke(app, ["validate", str(f)])
    assert r.exit_code == 1 and "axes[0] (workloads.chat.arrival.rate_per_s = -1)" in r.output
    assert not (tmp_path / "runs").exists()  # validating runs nothing


def test_unreachable_scheduler_is_a_clear_error_within_the_timeout(tmp_path: Path):
    f = _files(tmp_path, CAPS, seeds=[1])
    with pytest.raises(DcsimError) as e:
        run_sweep(f, tmp_path / "out", 1, scheduler="tcp://127.0.0.1:9", timeout_s=2)
    assert "--scheduler" in str(e.value) and "reachable Dask scheduler" in str(e.value)


def test_the_same_sweep_runs_on_a_dask_cluster(tmp_path: Path):
    distributed = pytest.importorskip("distributed")
    f = _files(tmp_path, CAPS, seeds=[1])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        t = run_sweep(f, tmp_path / "out", 1, scheduler=cluster.scheduler_address)
    local = run_sweep(f, tmp_path / "local", workers=1)
    assert (t["status"] == "finished").all() and len(t) == 2
    # same points and seeds give the same results wherever they run
    pd.testing.assert_frame_equal(t.drop(columns="wall_s"), local.drop(columns="wall_s"))


@pytest.mark.parametrize("kind", ["latin_hypercube", "sobol"])
def test_stratified_samples_use_every_stratum_of_every_axis_once(kind):
    """Latin hypercube by construction; a scrambled Sobol' sequence of 2^k points has
    the same balance over 2^k equal intervals of each axis (scipy.stats.qmc draws both)."""
    points = 8 if kind == "sobol" else 10
    spec = SweepSpec.model_validate({
        "name": "lhs", "base": "x.yaml", "sample": {"kind": kind, "points": points},
        "axes": [{"path": "a", "range": {"start": 0, "stop": 1, "num": 2}},
                 {"path": "b", "range": {"start": 100, "stop": 200, "num": 2}}]})
    pts = np.array(sample(spec))
    assert pts.shape == (points, 2)
    assert sorted(np.floor(pts[:, 0] * points).astype(int)) == list(range(points))
    assert sorted(np.floor((pts[:, 1] - 100) / (100 / points)).astype(int)) == list(
        range(points))
    assert np.array_equal(pts, np.array(sample(spec)))  # seeded: the same draw again


def test_pareto_mask_keeps_exactly_the_undominated_points():
    x = np.array([1.0, 2.0, 3.0, 2.0, 4.0])
    y = np.array([5.0, 3.0, 1.0, 4.0, 1.0])
    assert pareto_mask(x, y).tolist() == [True, True, True, False, False]


def test_cli_runs_a_sweep_and_says_where_the_table_is(tmp_path: Path):
    f = _files(tmp_path, [{"path": "workloads.chat.arrival.rate_per_s",
                           "range": {"start": 2, "stop": 4, "num": 2}}], seeds=[3])
    r = runner.invoke(app, ["sweep", str(f), "--out", str(tmp_path / "out"), "--workers", "1"])
    assert r.exit_code == 0, r.output
    assert "2 of 2 points finished, 0 failed" in r.output
    t = pd.read_parquet(tmp_path / "out" / "sweep.parquet")
    assert sorted(t["workloads.chat.arrival.rate_per_s"]) == [2.0, 4.0]
    # twice the arrival rate, about twice the throughput
    rate = t.set_index("workloads.chat.arrival.rate_per_s")["chat/throughput_req_s"]
    assert rate[4.0] / rate[2.0] == pytest.approx(2.0, rel=0.25)


def test_a_grid_of_astronomically_many_points_is_refused_before_it_is_built(tmp_path):
    axes = [{"path": "simulation.duration_s", "range": {"start": 10, "stop": 20, "num": 10_000}}
            for _ in range(6)]  # 10^24 points
    r = runner.invoke(app, ["sweep", str(_files(tmp_path, axes)), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "at most 100,000" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_a_sweep_never_takes_over_a_folder_of_other_files(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    r = runner.invoke(app, ["sweep", str(_files(tmp_path, CAPS, [1])), "--out", str(mine)])
    assert r.exit_code == 1 and "did not write" in r.output.replace("\n", " ")
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_axes_are_titled_by_their_field_descriptions(tmp_path: Path):
    from dcsim.sweep.points import field_title
    from dcsim.workloads.spec import Deployment

    f = _files(tmp_path, CAPS, seeds=[1])
    s = load_scenario(f.parent / "base.yaml")
    path = "workloads.chat.deployment.power_cap_w"
    described = Deployment.model_fields["power_cap_w"].description.split(". ")[0]
    assert field_title(s, path) == f"{described.rstrip('.')} ({path})"
    assert field_title(s, "simulation.nothing_here") == "simulation.nothing_here"


def test_pareto_fronts_are_drawn_per_load_level_not_across_them():
    from dcsim.report.sweep import pareto

    rate = "workloads.chat.arrival.rate_per_s"
    rows = [(2.0, 1.0, 5.0), (2.0, 2.0, 3.0), (2.0, 3.0, 4.0),  # (3, 4) is dominated
            (8.0, 10.0, 1.0), (8.0, 11.0, 0.5)]
    table = pd.DataFrame([{"point": f"p{i}", "seed": 1, "status": "finished", rate: r,
                           "facility_kwh": e, "chat/ttft_p99_s": t}
                          for i, (r, e, t) in enumerate(rows)])
    fig = pareto(table, [rate])
    fronts = {tr.name: sorted(zip(tr.x, tr.y, strict=True)) for tr in fig.data
              if tr.name.startswith("Pareto front")}
    assert fronts == {"Pareto front at 2.0": [(1.0, 5.0), (2.0, 3.0)],
                      "Pareto front at 8.0": [(10.0, 1.0), (11.0, 0.5)]}
    assert "one front per load level" in fig.layout.title.text
