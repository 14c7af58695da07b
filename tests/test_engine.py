"""The serving engine against queueing theory, the profiles and conservation laws."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from engine_helpers import load_yaml, queue_scenario, time_in_system_s

from dcsim.engine.simulation import simulate
from dcsim.errors import DcsimError
from dcsim.scenario import scenario_from_data

ROOT = Path(__file__).resolve().parents[1]
PREFILL_S, DECODE_S = 0.001, 0.010


def _erlang_c_wait(lam: float, mean_s: float, c: int) -> float:
    """Mean wait in queue of M/M/c (Erlang C)."""
    a = lam * mean_s
    rho = a / c
    terms = sum(a**k / math.factorial(k) for k in range(c))
    top = a**c / math.factorial(c) / (1 - rho)
    p_wait = top / (terms + top)
    return p_wait * mean_s / (c * (1 - rho))


def _mean_wait(scenario) -> float:
    q = simulate(scenario).requests
    q = q[q["status"] == "finished"]
    return float((q["ttft_s"] - PREFILL_S).mean())  # TTFT = wait + the 1 ms prefill


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_md1_waiting_time_matches_pollaczek_khinchine(tmp_path, rho):
    service = PREFILL_S + 10 * DECODE_S  # 1 prompt token, 11 output tokens: deterministic
    lam = rho / service
    sc = queue_scenario(tmp_path, {"kind": "poisson", "rate_per_s": lam},
                        {"kind": "constant", "tokens": 11}, 1, 40000 / lam)
    theory = rho * service / (2 * (1 - rho))
    assert _mean_wait(sc) == pytest.approx(theory, rel=0.03)


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_mmc_waiting_time_matches_erlang_c(tmp_path, rho):
    # geometric output lengths with a constant per-token time: service ~ exponential
    mean_tokens, c = 200, 4
    service = PREFILL_S + (mean_tokens - 1) * DECODE_S
    lam = rho * c / service
    sc = queue_scenario(tmp_path, {"kind": "poisson", "rate_per_s": lam},
                        {"kind": "geometric", "mean_tokens": mean_tokens}, c, 60000 / lam)
    assert _mean_wait(sc) == pytest.approx(_erlang_c_wait(lam, service, c), rel=0.03)


def _one_request_scenario(tmp_path: Path, prompt: int, output: int) -> object:
    trace = tmp_path / "one.csv"
    trace.write_text(f"TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00.0,{prompt},"
                     f"{output}\n")
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    d["workloads"][0]["arrival"] = {"kind": "trace", "path": str(trace)}
    d["simulation"] = {"duration_s": 60, "seed": 1}
    return scenario_from_data(d)


def test_single_request_takes_profile_prefill_plus_decode(tmp_path, store):
    prompt, output = 2048, 64
    r = simulate(_one_request_scenario(tmp_path, prompt, output)).requests.iloc[0]
    pre = store.query("H200-SXM", "llama-3.1-8b", "prefill", 1, prompt)
    dec = [store.query("H200-SXM", "llama-3.1-8b", "decode", 1, prompt + j).latency_ms
           for j in range(output - 1)]
    assert pre.provenance == "measured"
    assert r["ttft_s"] == pytest.approx(pre.latency_ms / 1e3, rel=1e-9)
    # decode steps between table nodes are interpolated linearly: far below 0.1 %
    assert r["e2e_s"] - r["ttft_s"] == pytest.approx(sum(dec) / 1e3, rel=1e-4)


@pytest.fixture(scope="module", params=["mixed", "prefill_first"])
def busy_run(request):
    # every check on it holds for each iteration policy
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    d["workloads"][0]["deployment"]["scheduler"] = request.param
    d["simulation"] = {"duration_s": 400, "warmup_s": 20, "seed": 5, "time_bucket_s": 30}
    d["workloads"][0]["deployment"]["replicas"] = 2
    d["workloads"][0]["arrival"]["rate_scale"] = 2.0  # 11 req/s on 2 replicas: real batching
    d["workloads"][0]["deployment"]["max_num_seqs"] = 48
    return scenario_from_data(d), simulate(scenario_from_data(d))


def test_coalesced_blocks_equal_step_by_step(busy_run):
    sc, fast = busy_run
    slow = simulate(sc, coalesce=False)
    a, b = fast.requests, slow.requests
    for col in ("replica", "prompt_tokens", "output_tokens", "preemptions", "status"):
        assert (a[col] == b[col]).all(), col
    for col in ("first_token_s", "finish_s", "energy_j"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-9, err_msg=col)
    assert fast.requests["output_tokens"].mean() > 100  # many decode steps were coalesced


def test_energy_is_conserved(busy_run):
    _, r = busy_run
    device = r.replicas["energy_j"].sum()
    parts = r.requests["energy_j"].sum() + r.replicas["idle_energy_j"].sum()
    assert parts == pytest.approx(device, rel=1e-12)
    assert r.timeseries["energy_j"].sum() == pytest.approx(device, rel=1e-12)
    # idle replicas draw the catalog idle power, busy ones more
    assert (r.timeseries["power_w"] >= 80.0).all()


def test_littles_law(busy_run):
    sc, r = busy_run
    q = r.requests[r.requests["replica"] >= 0]
    end = sc.simulation.duration_s
    in_system = time_in_system_s(r.requests, end)
    # the replicas' integral of requests in system equals the sum of time spent in it
    assert r.replicas["in_system_x_s"].sum() == pytest.approx(in_system, rel=1e-9)
    lam = len(q) / end
    done = q[q["status"] == "finished"]
    assert r.replicas["in_system_x_s"].sum() / end == pytest.approx(
        lam * done["e2e_s"].mean(), rel=0.05)


def test_batching_happens_and_kv_stays_within_capacity(busy_run):
    _, r = busy_run
    ts = r.timeseries
    assert ts["batch_size"].max() > 4
    assert (ts["kv_use"] <= 1.0 + 1e-9).all()


def test_deterministic_under_seed(tmp_path):
    d = load_yaml(ROOT / "scenarios" / "mixed_services.yaml")
    d["simulation"]["duration_s"] = 120
    a = simulate(scenario_from_data(d)).requests
    b = simulate(scenario_from_data(d)).requests
    pd.testing.assert_frame_equal(a, b)
    d["simulation"]["seed"] = 8
    c = simulate(scenario_from_data(d)).requests
    assert len(c) != len(a) or not np.array_equal(c["arrival_s"], a["arrival_s"])


def test_kv_pressure_preempts_and_still_finishes(tmp_path):
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    d["simulation"] = {"duration_s": 120, "seed": 2}
    dep = d["workloads"][0]["deployment"]
    dep.update(replicas=1, gpu_memory_utilization=0.135)  # ~2 GB of KV: a few requests
    d["workloads"][0]["arrival"]["rate_scale"] = 3.0
    r = simulate(scenario_from_data(d))
    q = r.requests
    assert q["preemptions"].sum() > 0
    assert (q["status"] == "finished").sum() > 100
    cap = r.replicas["kv_capacity_tokens"].iloc[0]
    assert (r.timeseries["kv_tokens"] <= cap + 1e-6).all()


def test_routing_policies_spread_load(tmp_path):
    for policy in ("round_robin", "least_outstanding", "power_of_two", "central_queue"):
        d = load_yaml(ROOT / "scenarios" / "default.yaml")
        d["simulation"] = {"duration_s": 120, "seed": 3}
        d["workloads"][0]["routing"] = policy
        q = simulate(scenario_from_data(d)).requests
        counts = q["replica"].value_counts()
        assert len(counts) == 4, policy
        assert counts.min() > 0.1 * len(q), policy


def test_every_inference_example_runs():
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "golden"))
    from make_golden import GOLDEN  # (those run in full, results pinned: test_golden)

    for path in sorted((ROOT / "scenarios").glob("*.yaml")):
        d = load_yaml(path)
        if any(w["kind"] != "inference" for w in d["workloads"]) or path.stem in GOLDEN:
            continue
        d["simulation"]["duration_s"] = 30
        d["simulation"]["warmup_s"] = 0
        r = simulate(scenario_from_data(d), base_dir=path.parent)
        assert (r.requests["status"] == "finished").sum() > 0, path.name


def test_bad_traces_are_rejected(tmp_path):
    cases = {
        "TIMESTAMP,ContextTokens\n2023-11-16 18:00:00,5\n": "GeneratedTokens",
        "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,5,5\n": "row 2.TIMESTAMP",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,-5,5\n":
            "row 2.ContextTokens",
    }
    for text, where in cases.items():
        path = tmp_path / "t.csv"
        path.write_text(text)
        d = load_yaml(ROOT / "scenarios" / "default.yaml")
        d["workloads"][0]["arrival"]["path"] = str(path)
        with pytest.raises(DcsimError, match=where.replace(".", r"\.")):
            simulate(scenario_from_data(d))
