"""`dcsim calibrate`: a synthetic "real" deployment with a known perturbation is
recovered; the written profile says what the fit says; bad measurements are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from engine_helpers import chat_service
from typer.testing import CliRunner

from dcsim.calibration import fit as F
from dcsim.calibration.correction import Correction
from dcsim.calibration.measured import energy_from_power_log, read_requests
from dcsim.cli import app
from dcsim.engine.context import Context
from dcsim.engine.simulation import simulate
from dcsim.errors import DcsimError
from dcsim.profiles.table import read_profile_csv
from dcsim.scenario import scenario_from_data

# what the synthetic deployment does differently from the profile: prefill +3 ms per
# iteration, decode 15 % slower, 10 % more power
TRUTH = Correction(prefill_scale=1.0, prefill_overhead_s=0.003, decode_scale=1.15,
                   energy_scale=1.10)
COLUMNS = ["arrival_s", "first_token_s", "finish_s", "prompt_tokens", "output_tokens"]


def _scenario(rate_per_s: float, duration_s: float, seed: int) -> dict:
    """Llama-3.1-8B on one H200 with Poisson arrivals, prompts of 800 tokens on average
    (lognormal, up to 16k) and answers of 50."""
    svc = chat_service(rate_per_s, 1, prompt=(800, 1.2, 16000), output=(50, 1.0, 2000))
    svc["deployment"]["max_num_seqs"] = 64
    return {"name": "measured", "workloads": [svc],
            "simulation": {"duration_s": duration_s, "seed": seed}}


def _measure(d: dict, folder: Path, name: str) -> tuple[Path, float]:
    """The deployment 'as measured': the scenario's requests served under TRUTH."""
    s = scenario_from_data(d)
    ctx = Context.load(s, folder)
    drawn = simulate(s, context=ctx).requests
    drawn = drawn[drawn["status"] == "finished"]
    real = F.run_with(F.replay_of(s, ctx, drawn, folder / f"{name}-trace"), TRUTH)
    path = folder / f"{name}.csv"
    real.requests[COLUMNS].assign(engine="synthetic").to_csv(path, index=False)  # extra column
    return path, real.energy_j


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> dict:
    """A light-load measurement to fit (most requests find the replica idle), a busier
    one (8x the rate) held out, and the command run on them."""
    tmp = tmp_path_factory.mktemp("calibrate")
    light, e_light = _measure(_scenario(0.5, 600, 3), tmp, "light")
    busy, e_busy = _measure(_scenario(4.0, 150, 4), tmp, "busy")
    (tmp / "deployment.yaml").write_text(yaml.safe_dump(_scenario(0.5, 600, 3)))
    res = CliRunner().invoke(app, [
        "calibrate", str(tmp / "deployment.yaml"), "--requests", str(light), "--energy-j",
        str(e_light), "--holdout", str(busy), "--holdout-energy-j", str(e_busy),
        "--out", str(tmp / "out")])
    assert res.exit_code == 0, res.output
    out = tmp / "out"
    return {"tmp": tmp, "out": out, "output": res.output,
            "record": json.loads((out / "calibration.json").read_text())}


def test_a_known_perturbation_is_recovered_within_2_percent(calibrated):
    got = calibrated["record"]["correction"]
    for name, want in TRUTH.to_dict().items():
        assert got[name] == pytest.approx(want, rel=0.02), (name, got)
    assert "decode x1.150" in calibrated["output"]  # the terminal says what was fitted


def test_the_fit_reproduces_its_measurement_and_carries_to_another_load(calibrated):
    rec = calibrated["record"]
    before, after = rec["fit"]["errors_before_pct"], rec["fit"]["errors_after_pct"]
    assert set(after) == {f"{m} p{q}" for m in ("ttft_s", "tpot_s", "e2e_s")
                          for q in (50, 90, 99)} | {"energy_per_request_j"}
    assert max(abs(v) for v in before.values()) > 10  # the profile alone is well off
    assert max(abs(v) for v in after.values()) < 0.5
    held_before = rec["holdout"]["errors_before_pct"]
    held_after = rec["holdout"]["errors_after_pct"]
    # queueing at 8x the load: what the light load taught carries over
    assert max(abs(v) for v in held_after.values()) < 2
    assert sum(map(abs, held_after.values())) < sum(map(abs, held_before.values())) / 5
    table = pd.read_parquet(calibrated["out"] / "comparison.parquet")
    assert set(table["set"]) == {"fit", "holdout"}


def test_the_written_profile_says_what_the_fit_says_and_keeps_the_physics(calibrated, catalog):
    out = calibrated["out"]
    rows = read_profile_csv(out / "profile.csv")  # the store's table shape, checked
    assert (rows["source"] == "calibrated").all()
    assert set(rows["phase"]) == {"prefill", "decode"}
    gpu = catalog.gpu("H200-SXM")
    assert (rows["latency_ms"] > 0).all()
    assert (rows["avg_power_w"] <= gpu.tdp_w * (1 + 1e-9)).all()
    assert (rows["avg_power_w"] >= gpu.idle_power_w * (1 - 1e-9)).all()
    assert rows["basis"].str.contains("decode x1.150").all()
    # its spread, from the hold-out's errors, is what profile uncertainty draws from
    from dcsim.profiles.store import ProfileStore
    from dcsim.profiles.uncertainty import SPREADS, quantile_factors

    spread = calibrated["record"]["spread"]
    assert spread["latency_sigma"] >= SPREADS["interpolated"][0]
    assert (rows["spread_latency"] == spread["latency_sigma"]).all()
    store = ProfileStore.from_files(catalog, [out / "profile.csv"]).at_quantile(0.9)
    cost = store.resolve("H200-SXM", "llama-3.1-8b", "decode", 1)
    assert cost.source == "calibrated"
    assert cost.factors == pytest.approx(quantile_factors(
        0.9, (spread["latency_sigma"], spread["energy_sigma"])))
    # replayed through a store built from profile.csv, as a scenario naming it gets it
    profile = calibrated["record"]["fit"]["errors_profile_pct"]
    assert max(abs(v) for v in profile.values()) < 3


def test_a_scenario_naming_the_profile_runs_on_calibrated_answers(calibrated):
    tmp, out = calibrated["tmp"], calibrated["out"]
    d = _scenario(2.0, 20, 9) | {"profiles": [str(out / "profile.csv")]}
    (tmp / "uses.yaml").write_text(yaml.safe_dump(d))
    res = CliRunner().invoke(app, ["run", str(tmp / "uses.yaml"), "--out", str(tmp / "run"),
                                   "-q"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    prov = summary["services"]["chat"]["profile_provenance"]
    assert prov["decode_steps"]["calibrated"] > 0 and prov["decode_steps"]["measured"] == 0
    assert prov["prefill_iterations"]["calibrated"] > 0


BAD_ROWS = [
    ("finish before first token", {"finish_s": 0.5}, "row 3.finish_s"),
    ("first token before arrival", {"first_token_s": 0.5}, "row 3.first_token_s"),
    ("negative tokens", {"prompt_tokens": -4}, "row 3.prompt_tokens"),
    ("unsorted arrivals", {"arrival_s": 2.5, "first_token_s": 2.6, "finish_s": 2.8},
     "row 4.arrival_s"),
]


@pytest.mark.parametrize(("case", "change", "names"), BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
def test_bad_measured_rows_are_refused_naming_the_row(tmp_path, case, change, names):
    rows = pd.DataFrame({"arrival_s": [0.0, 1.0, 2.0], "first_token_s": [0.1, 1.1, 2.1],
                         "finish_s": [0.3, 1.3, 2.3], "prompt_tokens": [10, 10, 10],
                         "output_tokens": [3, 3, 3]})
    for col, v in change.items():
        rows.loc[1, col] = v
    rows.to_csv(tmp_path / "m.csv", index=False)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_scenario(1.0, 10, 1)))
    res = CliRunner().invoke(app, ["calibrate", str(tmp_path / "s.yaml"), "--requests",
                                   str(tmp_path / "m.csv"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    lines = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and names in lines[0], res.output
    assert not (tmp_path / "o").exists()


def test_energy_must_be_positive(tmp_path):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_scenario(1.0, 10, 1)))
    res = CliRunner().invoke(app, ["calibrate", str(tmp_path / "s.yaml"), "--requests",
                                   str(tmp_path / "m.csv"), "--energy-j", "-5",
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "--energy-j" in res.output and "> 0" in res.output


def _power_log(path: Path, rows: list[tuple[str, int, float]]) -> Path:
    lines = ["timestamp, index, power.draw [W]"]
    lines += [f"2026/11/30 10:00:{sec}, {gpu}, {w:.2f} W" for sec, gpu, w in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_power_log_integrates_per_gpu_by_trapezoids(tmp_path):
    log = _power_log(tmp_path / "p.csv", [
        ("00.000", 0, 100.0), ("00.000", 1, 300.0), ("01.000", 0, 200.0),
        ("01.000", 1, 300.0), ("03.000", 0, 200.0), ("03.000", 1, 100.0)])
    # GPU 0: (100+200)/2 x 1 + 200 x 2 = 550 J; GPU 1: 300 x 1 + (300+100)/2 x 2 = 700 J
    assert energy_from_power_log(log) == pytest.approx(1250.0)


def test_a_power_log_with_a_gap_is_refused_naming_the_row(tmp_path):
    log = _power_log(tmp_path / "p.csv", [("00.000", 0, 100.0), ("01.000", 0, 100.0),
                                          ("59.000", 0, 100.0)])
    with pytest.raises(Exception, match=r"row 4\.timestamp.*at most 5 s apart"):
        energy_from_power_log(log)


def test_vllm_and_sglang_benchmark_results_read_as_requests(tmp_path):
    # the per-request lists of `vllm bench serve --save-result --save-detailed`
    vllm = {"start_times": [10.0, 10.5, 11.0], "ttfts": [0.05, 0.04, 0.2],
            "itls": [[0.01, 0.01], [0.02], []], "input_lens": [100, 50, 70],
            "output_lens": [3, 2, 1], "errors": ["", "", "timeout"]}
    (tmp_path / "v.json").write_text(json.dumps(vllm))
    t = read_requests(tmp_path / "v.json", "vllm")
    assert len(t) == 2  # the failed request is left out
    assert t["arrival_s"].tolist() == [0.0, 0.5]
    assert t["first_token_s"].tolist() == pytest.approx([0.05, 0.54])
    assert t["finish_s"].tolist() == pytest.approx([0.07, 0.56])
    assert t["prompt_tokens"].tolist() == [100, 50]
    # sglang.bench_serving --output-details appends one JSON line per run: the last counts
    sg = {"request_rate": "inf", "ttfts": [0.1, 0.3], "itls": [[0.02], [0.01, 0.01]],
          "input_lens": [10, 20], "output_lens": [2, 3], "errors": ["", ""]}
    (tmp_path / "s.jsonl").write_text(json.dumps({"ttfts": []}) + "\n" + json.dumps(sg) + "\n")
    t = read_requests(tmp_path / "s.jsonl", "sglang")
    assert t["finish_s"].tolist() == pytest.approx([0.12, 0.32])
    paced = sg | {"request_rate": 4.0}
    (tmp_path / "p.jsonl").write_text(json.dumps(paced) + "\n")
    with pytest.raises(Exception, match="no send times"):
        read_requests(tmp_path / "p.jsonl", "sglang")


def test_the_energy_window_is_the_served_span_and_the_power_scale_fits_it(tmp_path,
                                                                            catalog):
    """Two requests 40 s apart in a 100 s run: the energy from the first arrival to the
    last finish is their iteration energy plus idle power over the gap between them."""
    s = scenario_from_data(_scenario(0.02, 100, 5))
    ctx = Context.load(s, tmp_path)
    req = pd.DataFrame({"arrival_s": [3.0, 43.0], "first_token_s": [3.1, 43.1],
                        "finish_s": [3.5, 43.5], "prompt_tokens": [500, 500],
                        "output_tokens": [20, 20]})
    rep = F.replay_of(s, ctx, req, tmp_path / "two")
    served = F.run_with(rep, Correction())
    done = served.requests
    gap_s = done["arrival_s"].iloc[1] - done["finish_s"].iloc[0]
    idle_w = catalog.gpu("H200-SXM").idle_power_w
    assert served.idle_j == pytest.approx(idle_w * gap_s, rel=1e-9)
    sim = simulate(rep.scenario, context=ctx).requests
    assert served.energy_j == pytest.approx(float(sim["energy_j"].sum()) + idle_w * gap_s,
                                            rel=1e-9)
    with pytest.raises(DcsimError, match="draw idle"):
        F.fit_energy(rep, Correction(), served.idle_j * 0.9)
    with pytest.raises(DcsimError, match="power limit"):  # the iterations at idle power
        F.fit_energy(rep, Correction(), served.idle_j + 1e-3 * (served.energy_j - served.idle_j))
    with pytest.raises(DcsimError, match="power limit"):  # more than the limit can draw
        F.fit_energy(rep, Correction(), 1e9)
    want = served.idle_j + 1.3 * (served.energy_j - served.idle_j)
    scale = F.fit_energy(rep, Correction(), want).energy_scale
    assert F.run_with(rep, Correction(energy_scale=scale)).energy_j == pytest.approx(
        want, rel=1e-5)
