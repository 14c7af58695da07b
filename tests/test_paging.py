"""The paged KV cache: block counts kept from residues agree with counting every
sequence's blocks, admission counts whole blocks, and coalesced decode blocks still
equal a step-by-step run when blocks run out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from engine_helpers import load_yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dcsim.engine.paging import Pages
from dcsim.engine.simulation import simulate
from dcsim.errors import DcsimError
from dcsim.scenario import scenario_from_data

ROOT = Path(__file__).resolve().parents[1]


def _blocks(kv: list[int], b: int) -> int:
    return sum(-(-x // b) for x in kv)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(b=st.sampled_from([1, 2, 4, 16, 32]), start=st.integers(0, 1000),
       seqs=st.lists(st.tuples(st.integers(1, 300), st.integers(0, 40)), min_size=1,
                     max_size=12),
       reserved=st.lists(st.integers(1, 300), max_size=3), spare=st.integers(0, 60),
       want=st.integers(1, 500))
def test_block_counts_from_residues_equal_counting_each_sequence(b, start, seqs, reserved,
                                                                 spare, want):
    # sequences join decoding at different steps with different lengths; at step `now`
    # each holds kv0 + (now - joined) tokens
    now = start + max(j for _, j in seqs)
    kv = [k + now - (start + j) for k, j in seqs]
    held = _blocks(kv, b) + _blocks(reserved, b)
    p = Pages(b, (held + spare) * b)
    for k, j in seqs:
        p.join(k, start + j)
    p.pre_pad = sum(p.pad(r) for r in reserved)
    tokens = sum(kv) + sum(reserved)
    assert p.held(tokens, now) == held
    nd = len(kv)
    grow = sum(1 for x in kv if x % b == 0)  # a full last block: the next token needs one
    assert p.fits_next(tokens, now, nd) == (held + grow <= p.blocks)
    # the most steps (up to want) after which every block fits, by stepping
    steps, cur = 0, list(kv)
    while steps < want:
        nxt = [x + 1 for x in cur]
        if _blocks(nxt, b) + _blocks(reserved, b) > p.blocks:
            break
        cur, steps = nxt, steps + 1
    assert p.steps_fitting(tokens, now, nd, want) == steps


def _burst(tmp: Path, block: int, n: int, prompt: int, utilization: float) -> object:
    trace = tmp / "burst.csv"
    rows = [f"2023-11-16 18:00:00.0,{prompt},1" for _ in range(n)]
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    d["workloads"][0]["arrival"] = {"kind": "trace", "path": str(trace)}
    d["workloads"][0]["deployment"].update(replicas=1, kv_block_tokens=block,
                                           gpu_memory_utilization=utilization)
    d["simulation"] = {"duration_s": 60, "seed": 1}
    return simulate(scenario_from_data(d))


@pytest.mark.parametrize("block", [1, 16])
def test_admission_counts_whole_blocks(tmp_path, block):
    # 200 prompts of 17 tokens at once, one output token each (done at their prefill):
    # the first iteration takes as many as the free blocks allow, 2 blocks each with
    # 16-token blocks (15 tokens of padding), 17 tokens + 1 with 1-token blocks
    r = _burst(tmp_path, block, 200, 17, 0.1151)
    cap = int(r.replicas["kv_capacity_tokens"].iloc[0])
    assert 1000 < cap < 3000  # the cache, not the batch limit (256), binds
    q = r.requests
    first = int((q["first_token_s"] == q["first_token_s"].min()).sum())
    expected = (cap // 16) // 2 if block == 16 else (cap - 1) // 17
    assert first == expected
    assert (q["status"] == "finished").all()


def test_coalesced_decode_equals_step_by_step_when_blocks_run_out():
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    d["simulation"] = {"duration_s": 90, "seed": 2}
    d["workloads"][0]["deployment"].update(replicas=1, gpu_memory_utilization=0.135,
                                           kv_block_tokens=32)
    d["workloads"][0]["arrival"]["rate_scale"] = 3.0
    s = scenario_from_data(d)
    fast, slow = simulate(s), simulate(s, coalesce=False)
    a, b = fast.requests, slow.requests
    assert a["preemptions"].sum() > 0  # blocks ran out: preemption and KV-bound blocks
    for col in ("replica", "preemptions", "status"):
        assert (a[col] == b[col]).all(), col
    for col in ("first_token_s", "finish_s", "energy_j"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-9, err_msg=col)


def test_fp8_kv_doubles_the_tokens_that_fit(tmp_path):
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    d["simulation"] = {"duration_s": 5, "seed": 1}
    caps = {}
    for dtype in ("bf16", "fp8"):
        d["workloads"][0]["deployment"]["kv_cache_dtype"] = dtype
        caps[dtype] = simulate(scenario_from_data(d)).replicas["kv_capacity_tokens"].iloc[0]
    assert caps["fp8"] == pytest.approx(2 * caps["bf16"], abs=1)


@pytest.mark.parametrize("block", [0, 12, 2048])
def test_a_block_size_must_be_a_power_of_two_up_to_1024(block):
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    d["workloads"][0]["deployment"]["kv_block_tokens"] = block
    with pytest.raises(DcsimError, match="kv_block_tokens"):
        scenario_from_data(d)
