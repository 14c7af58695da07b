"""Impossible inputs are refused before anything runs, with the field at fault: TP that
does not split the heads or spans servers, a training job whose state cannot fit, more
pipeline stages than layers, catalog entries that break physics, budgets below idle,
prompts that can never fit an iteration."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dcsim.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _refused(tmp_path: Path, stem: str, change) -> str:
    d = yaml.safe_load((ROOT / "scenarios" / f"{stem}.yaml").read_text())
    change(d)
    d["profiles"] = [str(ROOT / "scenarios" / p) for p in d.get("profiles", [])]
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    for cmd in ("validate", "run"):  # one validation: run refuses what validate refuses
        r = runner.invoke(app, [cmd, str(p), "-q"] if cmd == "run" else [cmd, str(p)])
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    assert not (tmp_path / "runs").exists()
    return r.output.replace("\n", " ")


def _dep(d):
    return d["workloads"][0]["deployment"]


def test_tp_must_split_the_attention_heads(tmp_path):
    out = _refused(tmp_path, "default", lambda d: _dep(d).update(tp=3))
    assert "workloads[0].deployment.tp" in out and "32 attention heads" in out


def test_tp_must_stay_inside_one_server(tmp_path):
    out = _refused(tmp_path, "default", lambda d: _dep(d).update(tp=16, replicas=1))
    assert "workloads[0].deployment.tp" in out and "at most 8" in out


def _job(d):
    return next(w for w in d["workloads"] if w["kind"] == "training")


def test_a_70b_model_cannot_train_on_one_gpu(tmp_path):
    out = _refused(tmp_path, "training", lambda d: _job(d).update(
        gpus=1, parallelism={"tp": 1, "pp": 1, "dp": 1}))
    assert ".gpus" in out and "training state" in out


def test_no_more_pipeline_stages_than_layers(tmp_path):
    out = _refused(tmp_path, "training", lambda d: _job(d).update(
        gpus=8 * 128, parallelism={"tp": 8, "pp": 128, "dp": 1}))
    assert "parallelism.pp" in out and "80 layers" in out


def test_a_gpu_whose_tdp_exceeds_its_highest_limit_is_refused(tmp_path):
    out = _refused(tmp_path, "custom_hardware",
                   lambda d: d["catalog"]["gpus"][0].update(tdp_w=900))
    assert "catalog.gpus[0].tdp_w" in out


def test_a_server_rated_below_its_gpus_is_refused(tmp_path):
    out = _refused(tmp_path, "custom_hardware",
                   lambda d: d["catalog"]["servers"][0].update(max_power_w=1000))
    assert "catalog.servers[0].max_power_w" in out and "2400" in out


@pytest.mark.parametrize("kw", [1.0, 0.5])
def test_a_budget_below_the_idle_draw_names_its_field(tmp_path, kw):
    out = _refused(tmp_path, "default",
                   lambda d: d["fleet"]["racks"][0].update(power_budget_kw=kw))
    assert "fleet.racks[0].power_budget_kw" in out and "idle draw" in out


def test_a_prompt_longer_than_the_budget_needs_chunked_prefill(tmp_path):
    def change(d):
        w = d["workloads"][0]
        w["arrival"] = {"kind": "poisson", "rate_per_s": 1.0}
        w["prompt_tokens"] = {"kind": "constant", "tokens": 10000}
        w["output_tokens"] = {"kind": "constant", "tokens": 10}
        _dep(d).update(chunked_prefill=False, max_batched_tokens=8192)

    out = _refused(tmp_path, "default", change)
    assert "max_batched_tokens" in out and "10000 tokens" in out


def test_a_budget_below_the_lowest_limits_is_caught_by_validate_too(tmp_path):
    # 4 kW holds the idle draw (3.4 kW) but not the servers at their lowest limits
    out = _refused(tmp_path, "default",
                   lambda d: d["fleet"]["racks"][0].update(power_budget_kw=4.0))
    assert "fleet.racks[0].power_budget_kw" in out and "lowest power limit" in out


def test_a_placement_the_fleet_cannot_make_is_caught_by_validate_too(tmp_path):
    out = _refused(tmp_path, "default", lambda d: _dep(d).update(
        servers=["inference-rack/dgx-h200-1"] * 3 + ["no-such-server"]))
    assert "workloads[0].deployment.servers[3]" in out and "no-such-server" in out
