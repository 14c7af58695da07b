"""KV in host memory: evicted prefix blocks wait there and come back over PCIe (a second
LRU level under the GPU's), and preemption can swap a sequence's KV out and back in
instead of recomputing it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from engine_helpers import busy_cached, even_trace, load_yaml, time_in_system_s
from test_sessions import _sessions

from dcsim.catalog import load_catalog, shapes
from dcsim.engine.simulation import simulate
from dcsim.errors import DcsimError
from dcsim.scenario import scenario_from_data

ROOT = Path(__file__).resolve().parents[1]
BLOCK, PREFIX, OWN = 16, 1024, 16  # a prefix of 64 blocks
CAT = load_catalog()
MODEL, GPU = CAT.model("llama-3.1-8b"), CAT.gpu("H200-SXM")
BLOCK_BYTES = shapes.kv_bytes_per_token(MODEL) * BLOCK
BLOCK_S = BLOCK_BYTES / (GPU.pcie_gbyte_s * 1e9)  # tp 1


def _utilization_for(blocks: int) -> float:
    need = shapes.weight_bytes(MODEL) + (blocks + 0.5 / BLOCK) * BLOCK_BYTES
    return need / (GPU.memory_gb * 1e9)


def _prefixes(tmp: Path, n: int, groups: int, gpu_prefixes: int, host_prefixes: int):
    trace = even_trace(tmp, n, OWN)  # never two requests at once
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    w = d["workloads"][0]
    w["arrival"] = {"kind": "trace", "path": str(trace)}
    w["shared_prefix"] = {"tokens": PREFIX, "groups": groups}
    w["deployment"].update(
        replicas=1, prefix_caching=True, kv_block_tokens=BLOCK,
        gpu_memory_utilization=_utilization_for(gpu_prefixes * 64 + 1),
        host_kv_gb=(host_prefixes * 64 + 0.5) * BLOCK_BYTES / 1e9)
    d["simulation"] = {"duration_s": n + 5.0, "seed": 4, "time_bucket_s": 60}
    return simulate(scenario_from_data(d))


def _stack_distances(groups: list[int]) -> list[float]:
    """How many distinct prefixes came between a request and its prefix's last use."""
    out, stack = [], []
    for g in groups:
        out.append(stack[::-1].index(g) if g in stack else np.inf)
        if g in stack:
            stack.remove(g)
        stack.append(g)
    return out


def test_host_memory_is_a_second_lru_level_paid_at_pcie_speed(tmp_path):
    k, m, h, n = 12, 3, 4, 1500
    r = _prefixes(tmp_path, n, k, m, h)
    q = r.requests
    assert int(r.replicas["host_kv_tokens"].iloc[0]) == h * 64 * BLOCK
    dist = np.array(_stack_distances(q["prefix_group"].tolist()))
    # a hit wherever the prefix is among the m + h most recent: hit by hit
    assert ((q["cached_tokens"] == PREFIX).to_numpy() == (dist < m + h)).all()
    assert set(q["cached_tokens"]) == {0, PREFIX}
    # from host memory it costs exactly its 64 blocks over PCIe more than from the GPU
    gpu_hit = q["ttft_s"][dist < m].to_numpy()
    host_hit = q["ttft_s"][(dist >= m) & (dist < m + h)].to_numpy()
    assert gpu_hit.size > 100 and host_hit.size > 100
    np.testing.assert_allclose(host_hit - gpu_hit.mean(), 64 * BLOCK_S, rtol=1e-9)
    assert r.replicas["kv_transfer_s"].iloc[0] == pytest.approx(
        host_hit.size * 64 * BLOCK_S, rel=1e-9)
    # still far cheaper than computing the prefix again
    miss = q["ttft_s"][dist >= m + h].to_numpy()
    assert host_hit.mean() < 0.5 * miss.mean()


def _two(tmp: Path, preemption: str, routing_central: bool = False, **deployment: object):
    # 40 blocks; two sequences of 10 blocks grow by 25 each: one is preempted
    trace = tmp / "two.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     "2023-11-16 18:00:00,160,400\n2023-11-16 18:00:00.01,160,400\n")
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    w = d["workloads"][0]
    w["arrival"] = {"kind": "trace", "path": str(trace)}
    w["deployment"].update(replicas=1, kv_block_tokens=BLOCK, preemption=preemption,
                           gpu_memory_utilization=_utilization_for(40), **deployment)
    if routing_central:
        w["routing"] = "central_queue"
    d["simulation"] = {"duration_s": 60, "seed": 1}
    return simulate(scenario_from_data(d))


def test_swap_moves_the_victims_kv_out_and_back_instead_of_prefilling_it_again(tmp_path):
    swap = _two(tmp_path, "swap", host_kv_gb=1.0)
    again = _two(tmp_path, "recompute")
    for r in (swap, again):
        assert (r.requests["status"] == "finished").all()
        p = r.requests["preemptions"]
        assert p[0] == 0 and p[1] > 0  # the newest goes
    prefills = {k: sum(r.provenance["chat"]["prefill_iterations"].values())
                for k, r in (("swap", swap), ("again", again))}
    # recompute prefills the victim again after each preemption; swap never does
    assert prefills == {"swap": 2, "again": 2 + again.requests["preemptions"][1]}
    # out and back: twice the victim's whole blocks, at PCIe speed; none under recompute
    moved = swap.replicas["kv_transfer_s"].iloc[0] / BLOCK_S
    assert moved == pytest.approx(round(moved), abs=1e-6) and round(moved) % 2 == 0
    swaps = swap.requests["preemptions"][1]
    assert 2 * 11 * swaps <= round(moved) <= 2 * 40 * swaps
    assert again.replicas["kv_transfer_s"].iloc[0] == 0


@pytest.fixture(scope="module")
def crowded():
    s = scenario_from_data(busy_cached(24, host_kv_gb=4.0, preemption="swap"))
    return s, simulate(s)


def test_with_host_kv_energy_littles_law_and_step_by_step_hold(crowded):
    s, r = crowded
    q = r.requests
    assert q["preemptions"].sum() > 0 and (r.replicas["kv_transfer_s"] > 0).all()
    parts = q["energy_j"].sum() + r.replicas["idle_energy_j"].sum()
    assert parts == pytest.approx(r.replicas["energy_j"].sum(), rel=1e-12)
    assert r.replicas["in_system_x_s"].sum() == pytest.approx(
        time_in_system_s(q.assign(replica=0), s.simulation.duration_s), rel=1e-9)
    slow = simulate(s, coalesce=False).requests
    for col in ("replica", "preemptions", "status", "cached_tokens"):
        assert (q[col] == slow[col]).all(), col
    for col in ("first_token_s", "finish_s", "energy_j"):
        np.testing.assert_allclose(q[col], slow[col], rtol=1e-9, atol=1e-9, err_msg=col)


@pytest.mark.parametrize(("change", "message"), [
    ({"host_kv_gb": -1}, "greater than or equal to 0"),
    ({"preemption": "swap"}, "swap needs host memory"),
    ({"preemption": "offload"}, "'recompute' or 'swap'"),
])
def test_bad_host_settings_are_refused_in_one_line(change, message):
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    d["workloads"][0]["deployment"].update(change)
    with pytest.raises(DcsimError, match=message):
        scenario_from_data(d)


def test_host_kv_needs_the_gpus_pcie_bandwidth():
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    gpu = dict(GPU.model_dump(), id="NO-PCIE", pcie_gbyte_s=None)
    d["catalog"] = {"gpus": [gpu]}
    d["workloads"][0]["deployment"].update(gpu="NO-PCIE", host_kv_gb=8)
    from dcsim.references import check_references
    problems = check_references(scenario_from_data(d), ROOT)
    assert any(p.path.endswith("deployment.host_kv_gb") and "pcie_gbyte_s" in p.expected
               for p in problems)


def test_sessions_with_swap_keep_the_cache_consistent():
    # conversations under memory pressure, histories spilling to host, victims swapped:
    # every pin is released once (the cache asserts it) and energy is conserved
    d = _sessions(duration_s=150, replicas=2, routing="least_outstanding",
                  gpu_memory_utilization=0.14, max_num_seqs=64, host_kv_gb=2.0,
                  preemption="swap")
    # a load at which dozens of sequences are preempted (not a handful at the margin)
    d["workloads"][0]["arrival"] = {"kind": "poisson", "rate_per_s": 4.0}
    d["workloads"][0]["sessions"].update(mean_turns=6, think_time="exponential")
    s = scenario_from_data(d)
    r = simulate(s)
    q = r.requests
    assert q["preemptions"].sum() > 10 and (q["turn"] > 0).any()
    assert (r.replicas["kv_transfer_s"] > 0).all()
    parts = q["energy_j"].sum() + r.replicas["idle_energy_j"].sum()
    assert parts == pytest.approx(r.replicas["energy_j"].sum(), rel=1e-12)
    slow = simulate(s, coalesce=False).requests
    assert (q["cached_tokens"] == slow["cached_tokens"]).all()
    np.testing.assert_allclose(q["finish_s"], slow["finish_s"], rtol=1e-9, atol=1e-9)


def test_a_shared_queue_recomputes_instead_of_swapping(tmp_path):
    # another replica could take a swapped request from the queue, away from its KV
    shared = _two(tmp_path, "swap", host_kv_gb=1.0, routing_central=True)
    assert shared.requests["preemptions"][1] > 0
    assert shared.replicas["kv_transfer_s"].iloc[0] == 0
