"""Scenario files: examples validate; bad input gets path, value and expectation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dcsim.cli import app
from dcsim.errors import DcsimError
from dcsim.scenario import Scenario, load_scenario

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "scenarios").glob("*.yaml"))
runner = CliRunner()


def _default() -> dict:
    return yaml.safe_load((ROOT / "scenarios" / "default.yaml").read_text())


def _write(tmp_path: Path, data: dict | str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_validates(path):
    s = load_scenario(path)
    assert s.workloads


def test_defaults_are_filled_and_frozen():
    s = load_scenario(ROOT / "scenarios" / "default.yaml")
    d = s.workloads[0].deployment
    assert d.gpu_memory_utilization == 0.9 and d.chunked_prefill is True
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its own frozen error
        s.simulation.seed = 3  # type: ignore[misc]


def _problem_for(tmp_path: Path, data: dict | str) -> str:
    with pytest.raises(DcsimError) as info:
        load_scenario(_write(tmp_path, data))
    return str(info.value)


def test_unknown_field_names_path_and_known_fields(tmp_path):
    d = _default()
    d["workloads"][0]["slo"]["ttft_p95_s"] = 1.0
    msg = _problem_for(tmp_path, d)
    assert "workloads[0].slo.ttft_p95_s" in msg and "ttft_p99_s" in msg


def test_wrong_type_and_negative_values(tmp_path):
    d = _default()
    d["workloads"][0]["slo"]["ttft_p99_s"] = -1
    d["workloads"][0]["deployment"]["replicas"] = 0
    d["facility"]["pue"] = "high"
    msg = _problem_for(tmp_path, d)
    assert "workloads[0].slo.ttft_p99_s: got -1" in msg
    assert "workloads[0].deployment.replicas: got 0" in msg
    assert "facility.pue: got 'high'" in msg


def test_unknown_gpu_and_model(tmp_path):
    d = _default()
    d["workloads"][0]["deployment"]["gpu"] = "H300"
    d["workloads"][0]["model"] = "llama-9"
    msg = _problem_for(tmp_path, d)
    assert "workloads[0].deployment.gpu: got 'H300'" in msg and "H200-SXM" in msg
    assert "workloads[0].model: got 'llama-9'" in msg


def test_model_that_does_not_fit_says_how_much(tmp_path):
    d = _default()
    d["workloads"][0]["model"] = "llama-3.1-405b"
    msg = _problem_for(tmp_path, d)
    assert "workloads[0].deployment.tp" in msg and "811.7 GB per GPU" in msg


def test_power_cap_outside_range(tmp_path):
    d = _default()
    d["workloads"][0]["deployment"]["power_cap_w"] = 900
    assert "200-700 W" in _problem_for(tmp_path, d)


def test_inventory_too_small(tmp_path):
    d = _default()
    d["workloads"][0]["deployment"]["replicas"] = 9
    assert "at most the 8 H200-SXM GPUs" in _problem_for(tmp_path, d)


def test_training_parallelism_must_multiply_to_gpus(tmp_path):
    d = yaml.safe_load((ROOT / "scenarios" / "training.yaml").read_text())
    d["workloads"][0]["parallelism"]["dp"] = 7
    msg = _problem_for(tmp_path, d)
    assert "workloads[0]: parallelism tp x pp x dp = 224 must equal gpus = 256" in msg


def test_yaml_syntax_error_has_line_and_column(tmp_path):
    msg = _problem_for(tmp_path, "name: x\nworkloads: [\n  {kind: inference\n")
    assert "line " in msg and "column " in msg


def test_missing_trace_file(tmp_path):
    d = _default()
    d["workloads"][0]["arrival"]["path"] = "nope.csv"
    assert "workloads[0].arrival.path: got 'nope.csv'" in _problem_for(tmp_path, d)


def test_cli_validate_exit_codes_and_no_traceback(tmp_path):
    ok = runner.invoke(app, ["validate", str(ROOT / "scenarios" / "default.yaml")])
    assert ok.exit_code == 0
    d = _default()
    d["simulation"]["duration_s"] = 0
    bad = runner.invoke(app, ["validate", str(_write(tmp_path, d))])
    assert bad.exit_code == 1
    assert "simulation.duration_s: got 0" in bad.output
    assert "Traceback" not in bad.output


def test_cli_schema_is_json_schema():
    res = runner.invoke(app, ["schema"])
    assert res.exit_code == 0
    schema = json.loads(res.output)
    assert schema == Scenario.model_json_schema()
    assert "workloads" in schema["properties"]


def test_cli_profiles_query_json():
    res = runner.invoke(app, ["profiles", "query", "--gpu", "H200-SXM", "--model", "llama-3.1-8b",
                              "--phase", "decode", "--batch", "64", "--seq", "2048", "--json"])
    assert res.exit_code == 0
    ans = json.loads(res.output)
    # the measured point in points.csv: 12.0868 ms, 7.46898 J
    assert ans["provenance"] == "measured"
    assert ans["latency_ms"] == pytest.approx(12.0868)
    assert ans["energy_j"] == pytest.approx(7.46898)


def test_cli_profiles_query_bad_input_exits_1():
    res = runner.invoke(app, ["profiles", "query", "--gpu", "H200-SXM", "--model", "nope",
                              "--phase", "decode", "--batch", "1", "--seq", "128"])
    assert res.exit_code == 1 and "Traceback" not in res.output


def test_zero_batch_and_unknown_routing(tmp_path):
    d = _default()
    d["workloads"][0]["deployment"]["max_num_seqs"] = 0
    d["workloads"][0]["routing"] = "random"
    msg = _problem_for(tmp_path, d)
    assert "workloads[0].deployment.max_num_seqs: got 0" in msg
    assert "workloads[0].routing: got 'random'" in msg and "least_outstanding" in msg


def test_token_budget_must_hold_a_full_batch(tmp_path):
    d = _default()
    d["workloads"][0]["deployment"].update(max_num_seqs=512, max_batched_tokens=256)
    msg = _problem_for(tmp_path, d)
    assert "workloads[0].deployment: max_batched_tokens (256) must be at least" in msg


def _training() -> dict:
    return yaml.safe_load((ROOT / "scenarios" / "training.yaml").read_text())


def _tp_16(d: dict) -> None:
    d["workloads"][0]["parallelism"] = {"tp": 16, "pp": 2, "dp": 8}


def _interval_0(d: dict) -> None:
    d["workloads"][0]["checkpoint"]["interval_s"] = 0


def _no_bandwidth(d: dict) -> None:
    d["fleet"]["storage"]["write_bandwidth_gbyte_s"] = 0


def _nic_0(d: dict) -> None:
    d["catalog"] = {"servers": [{"id": "dgx-h100", "gpu": "H100-SXM", "gpus_per_server": 8,
                                 "max_power_w": 10200, "non_gpu_power_w": 2000, "nics": 8,
                                 "nic_gbps": 0, "source": "test"}]}


@pytest.mark.parametrize(("change", "expected"), [
    (_tp_16, "workloads[0].parallelism.tp: got 16; expected at most 8"),
    (_interval_0, "interval_s must be > 0"),
    (_no_bandwidth, "fleet.storage.write_bandwidth_gbyte_s: got 0"),
    (_nic_0, "nic_gbps: got 0"),
])
def test_bad_training_input_names_the_field(tmp_path, change, expected):
    d = _training()
    change(d)
    assert expected in _problem_for(tmp_path, d)


def test_a_job_larger_than_the_fleet_is_refused_before_running(tmp_path):
    d = _training()
    d["workloads"][0].update(gpus=512, parallelism={"tp": 8, "pp": 4, "dp": 16})
    result = runner.invoke(app, ["run", str(_write(tmp_path, d)), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and not (tmp_path / "o").exists()
    assert "workloads[0].gpus: got 512" in result.output
