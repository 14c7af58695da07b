"""`dcsim run`: results folder contents, summary consistency, clean failures."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from dcsim.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    d = yaml.safe_load((ROOT / "scenarios" / "default.yaml").read_text())
    d["simulation"].update(duration_s=300, warmup_s=30)
    scen = tmp / "s.yaml"
    scen.write_text(yaml.safe_dump(d))
    res = runner.invoke(app, ["run", str(scen), "--out", str(tmp / "out"), "--seed", "4", "-q"])
    assert res.exit_code == 0, res.output
    assert "SLO attainment" in res.output
    return tmp / "out"


def test_results_folder_has_every_table(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert names == {"requests.parquet", "timeseries.parquet", "replicas.parquet",
                     "power.parquet", "budgets.parquet", "summary.json", "scenario.resolved.yaml",
                     ".dcsim-results"}
    req = pd.read_parquet(run_dir / "requests.parquet")
    for col in ("service", "replica", "arrival_s", "first_token_s", "finish_s", "prompt_tokens",
                "output_tokens", "ttft_s", "tpot_s", "e2e_s", "preemptions", "energy_j",
                "carbon_g", "cost_usd"):
        assert col in req.columns
    resolved = yaml.safe_load((run_dir / "scenario.resolved.yaml").read_text())
    assert resolved["simulation"]["seed"] == 4  # --seed overrides the file
    assert "dcsim_version" in resolved


def test_summary_agrees_with_the_tables(run_dir):
    summary = json.loads((run_dir / "summary.json").read_text())
    req = pd.read_parquet(run_dir / "requests.parquet")
    reps = pd.read_parquet(run_dir / "replicas.parquet")
    chat = summary["services"]["chat"]
    counted = req[(req["status"] == "finished") & ~req["in_warmup"]]
    assert chat["requests_finished"] == len(counted)
    assert chat["ttft_p99_s"] == pytest.approx(counted["ttft_s"].quantile(0.99))
    assert chat["energy_kwh"] == pytest.approx(reps["energy_j"].sum() / 3.6e6)
    total = summary["total"]
    assert total["facility_kwh"] == pytest.approx(total["it_energy_kwh"] * 1.3)  # default PUE
    assert total["carbon_kg"] == pytest.approx(total["facility_kwh"] * 0.4)
    assert total["cost_usd"] == pytest.approx(total["facility_kwh"] * 0.08)
    assert total["gpu_hours"] == pytest.approx(4 * 300 / 3600)
    # every request's carbon adds up to the facility's
    assert req["carbon_g"].sum() / 1e3 <= total["carbon_kg"] + 1e-9
    assert sum(chat["profile_provenance"]["decode_steps"].values()) > 0


def test_failed_run_exits_1_and_writes_nothing(tmp_path):
    d = yaml.safe_load((ROOT / "scenarios" / "default.yaml").read_text())
    d["fleet"]["racks"][0]["power_budget_kw"] = 2  # below the servers at their lowest limits
    scen = tmp_path / "s.yaml"
    scen.write_text(yaml.safe_dump(d))
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(scen), "--out", str(out)])
    assert res.exit_code == 1
    assert "power budget" in res.output and "Traceback" not in res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_training_scenario_runs_from_the_cli(tmp_path):
    d = yaml.safe_load((ROOT / "scenarios" / "training.yaml").read_text())
    d["simulation"]["duration_s"] = 7200
    scen = tmp_path / "t.yaml"
    scen.write_text(yaml.safe_dump(d))
    res = runner.invoke(app, ["run", str(scen), "--out", str(tmp_path / "o"), "-q"])
    assert res.exit_code == 0, res.output
    jobs = pd.read_parquet(tmp_path / "o" / "jobs.parquet")
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert jobs["job"].tolist() == ["pretrain-70b"] and jobs["tokens_done"].iloc[0] > 0
    assert summary["jobs"][0]["energy_j"] == pytest.approx(jobs["energy_j"].iloc[0])


def test_version_prints_and_exits_0():
    from dcsim import __version__

    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"dcsim {__version__}"


def test_set_changes_one_field_for_the_run_and_bad_ones_are_refused(tmp_path):
    f = ROOT / "scenarios" / "mixed_services.yaml"
    r = runner.invoke(app, ["run", str(f), "--out", str(tmp_path / "a"), "-q",
                            "--set", "workloads.chat.deployment.replicas=3",
                            "--set", "simulation.duration_s=40"])
    assert r.exit_code == 0, r.output
    reps = pd.read_parquet(tmp_path / "a" / "replicas.parquet")
    assert (reps["service"] == "chat").sum() == 3
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["duration_s"] == 40
    for bad, says in (("workloads.nope.deployment.replicas=3", "a name: chat"),
                      ("workloads.chat.deployment.replicas=-3", "greater than or equal to 1"),
                      ("simulation.duration_s", "PATH=VALUE")):
        r = runner.invoke(app, ["run", str(f), "--out", str(tmp_path / "b"), "-q", "--set", bad])
        assert r.exit_code == 1 and says in r.output and "Traceback" not in r.output
        assert not (tmp_path / "b").exists()


def test_a_service_answered_mostly_outside_the_measurements_gets_a_warning(tmp_path):
    # 12,000-token prompts: every decode step's context is beyond the measured 8,192
    f = ROOT / "scenarios" / "default.yaml"
    d = yaml.safe_load(f.read_text())
    d["workloads"][0]["arrival"] = {"kind": "poisson", "rate_per_s": 1.0}
    d["workloads"][0]["prompt_tokens"] = {"kind": "constant", "tokens": 12000}
    d["workloads"][0]["output_tokens"] = {"kind": "constant", "tokens": 50}
    d["simulation"] = {"duration_s": 30}
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(d))
    r = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 0, r.output
    assert "warning: chat:" in r.output and "derived" in r.output
    plain = runner.invoke(app, ["run", str(f), "--out", str(tmp_path / "p"), "-q",
                                "--set", "simulation.duration_s=120"])
    assert plain.exit_code == 0, plain.output
    assert "warning:" not in plain.output


def test_a_training_run_prints_no_inference_table_and_stays_short(tmp_path):
    r = runner.invoke(app, ["run", str(ROOT / "scenarios" / "training.yaml"), "--out",
                            str(tmp_path / "t"), "-q"])
    assert r.exit_code == 0, r.output
    assert "requests finished" not in r.output and "pretrain-70b" in r.output
    # the job's expected end as a date (facility.start_time + end_s) and in days
    import json
    from datetime import timedelta

    from dcsim.scenario import load_scenario

    job = json.loads((tmp_path / "t" / "summary.json").read_text())["jobs"][0]
    start = load_scenario(ROOT / "scenarios" / "training.yaml").facility.start_time
    row = next(line for line in r.output.splitlines() if "pretrain-70b" in line)
    assert f"{start + timedelta(seconds=job['end_s']):%Y-%m-%d}" in row
    assert f"({job['end_s'] / 86400:.1f} days)*" in row  # * : expected, not finished
    # eight budgeted racks: the five closest to their budgets by name, the rest in a line
    assert r.output.count("rack train-pod-") == 5 and "3 more racks" in r.output
    assert len(r.output.splitlines()) <= 40


@pytest.mark.parametrize("kind", ["inference", "training"])
def test_init_writes_a_starter_that_validates_and_runs_and_never_replaces_a_file(
        tmp_path, kind):
    target = tmp_path / "s.yaml"
    name = 'odd: "name" #1'  # YAML-significant characters survive as the scenario name
    r = runner.invoke(app, ["init", name, "--kind", kind, "--out", str(target)])
    assert r.exit_code == 0, r.output
    assert target.read_text().startswith("# A starter scenario")  # commented
    from dcsim.scenario import load_scenario

    assert load_scenario(target).name == name
    assert runner.invoke(app, ["validate", str(target)]).exit_code == 0
    ran = runner.invoke(app, ["run", str(target), "--out", str(tmp_path / "o"), "-q",
                              "--set", "simulation.duration_s=300"])
    assert ran.exit_code == 0, ran.output
    before = target.read_text()
    again = runner.invoke(app, ["init", "other", "--kind", kind, "--out", str(target)])
    assert again.exit_code == 1 and "never replaces" in again.output
    assert target.read_text() == before


def test_the_inference_table_gives_every_figure_its_unit(tmp_path):
    """Latencies in ms or s, energy in Wh/kWh/MWh, counts with separators, and nowhere a
    number in scientific notation (the terminal once printed `TTFT p99 ms 1.78e+03`)."""
    import re

    r = runner.invoke(app, ["run", str(ROOT / "scenarios" / "default.yaml"), "--out",
                            str(tmp_path / "o"), "-q", "--set", "simulation.duration_s=180"])
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in r.output.splitlines() if line.count("│") == 3}
    for label in ("TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99", "E2E p99"):
        assert re.fullmatch(r"[\d.,]+ (ms|s|min)", rows[label]), (label, rows[label])
    assert re.fullmatch(r"[\d.,]+ (Wh|kWh|MWh)", rows["GPU energy"])
    assert rows["throughput"].endswith(" req/s") and rows["J per output token"].endswith(" J")
    assert re.fullmatch(r"\d{1,3}(,\d{3})*", rows["requests finished"])
    assert not re.search(r"\d[eE][+-]\d", r.output)
