"""Iteration policies by hand: a prefill-only iteration (prefill_first) stalls every
running decode by exactly the profile's prefill time; a mixed iteration (mixed) only by
what the prefill adds to the decode step it rides on."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_helpers import chat_service, load_yaml

from dcsim.engine.simulation import Context, build, simulate
from dcsim.scenario import scenario_from_data

ROOT = Path(__file__).resolve().parents[1]
P1, O1 = 1024, 200  # request 1: decoding when request 2 arrives
P2 = 2048  # request 2: one output token, so its whole life is its prefill (measured length)


def _scenario(tmp: Path, rows: list[tuple[float, int, int]], scheduler: str) -> object:
    trace = tmp / f"t{len(rows)}.csv"
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    lines += [f"2023-11-16 18:00:{t:09.6f},{p},{o}" for t, p, o in rows]
    trace.write_text("\n".join(lines) + "\n")
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    d["workloads"][0]["arrival"] = {"kind": "trace", "path": str(trace)}
    d["workloads"][0]["deployment"].update(replicas=1, scheduler=scheduler)
    d["simulation"] = {"duration_s": 60, "seed": 1}
    return scenario_from_data(d)


def _finish(tmp: Path, rows: list[tuple[float, int, int]], scheduler: str) -> list[float]:
    return simulate(_scenario(tmp, rows, scheduler)).requests["finish_s"].tolist()


@pytest.mark.parametrize("scheduler", ["mixed", "prefill_first"])
def test_a_prefill_stalls_the_running_decode_as_the_policy_says(tmp_path, store, scheduler):
    # "alone": request 2 comes after request 1 is done (same lengths: the same cost tables)
    alone = _finish(tmp_path, [(0.0, P1, O1), (30.0, P2, 1)], scheduler)[0]
    f1, f2 = _finish(tmp_path, [(0.0, P1, O1), (0.5, P2, 1)], scheduler)
    assert 0.5 < f2 < alone  # request 2 arrived and was served while request 1 decoded
    prefill_s = store.query("H200-SXM", "llama-3.1-8b", "prefill", 1, P2).latency_ms / 1e3
    stall = f1 - alone
    if scheduler == "prefill_first":
        # the decode waits for the whole prefill-only iteration, and only for it
        assert stall == pytest.approx(prefill_s, rel=1e-9)
    else:
        # the prefill rides on one decode step of request 1, whose weight read it shares:
        # the stall is the prefill time less that read (weights / measured memory ceiling)
        s = _scenario(tmp_path, [(0.0, P1, O1), (0.5, P2, 1)], scheduler)
        costs = build(s, Context.load(s, ROOT)).replicas[0].costs
        assert 0 < stall < prefill_s
        assert stall == pytest.approx(prefill_s - costs.weight_read_s, rel=1e-9)


def test_under_load_prefill_first_serves_first_tokens_sooner_and_decodes_slower():
    # long prompts at a load one replica holds: many prefills while others decode. The
    # trade-off each policy is chosen for: prefill-only iterations give prompts the whole
    # budget (sooner first tokens) and give running sequences no token (slower decode)
    out = {}
    for policy in ("mixed", "prefill_first"):
        svc = chat_service(6.0, 1, (3000, 0.6, 8000), (150, 0.6, 1000))
        svc["deployment"].update(scheduler=policy, max_num_seqs=64)
        d = {"name": "load", "workloads": [svc],
             "simulation": {"duration_s": 300, "warmup_s": 20, "seed": 3, "time_bucket_s": 30}}
        q = simulate(scenario_from_data(d)).requests
        out[policy] = q[(q["status"] == "finished") & ~q["in_warmup"]]
    m, p = out["mixed"], out["prefill_first"]
    assert len(m) == len(p) > 1000
    assert p["ttft_s"].mean() < 0.95 * m["ttft_s"].mean()
    assert p["tpot_s"].mean() > 1.03 * m["tpot_s"].mean()
    assert p["e2e_s"].mean() > m["e2e_s"].mean()


def test_the_policy_is_checked(tmp_path):
    from dcsim.errors import DcsimError

    with pytest.raises(DcsimError, match=r"deployment\.scheduler"):
        _scenario(tmp_path, [(0.0, P1, O1)], "decode_everything")


def test_the_optimizer_capacity_model_knows_the_policy(store, catalog):
    # prefill-only iterations give a prompt the GPU alone: the queueing model's TTFT drops
    # by the decode steps that mixed iterations add to each chunk (as the simulator's does)
    from dcsim.optimize.capacity import Config, ReplicaModel, service_lengths
    from dcsim.workloads.spec import InferenceService

    perf = {}
    for policy in ("mixed", "prefill_first"):
        svc = chat_service(6.0, 1, (3000, 0.6, 8000), (150, 0.6, 1000))
        svc["deployment"].update(scheduler=policy, max_num_seqs=64)
        s = InferenceService.model_validate(svc)
        m = ReplicaModel(store, catalog, s, Config("H200-SXM", 1, None, 64),
                         service_lengths(s, 1, None))
        perf[policy] = m.perf(6.0)
    m, p = perf["mixed"], perf["prefill_first"]
    assert m.ok and p.ok
    assert p.ttft_p99_s < 0.95 * m.ttft_p99_s
    assert p.gpu_power_w == pytest.approx(m.gpu_power_w)  # the same work either way
