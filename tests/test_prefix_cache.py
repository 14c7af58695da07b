"""Prefix caching against independent truths: an LRU cache of M prefixes over K equally
likely ones hits exactly when a 10-line LRU on the same request sequence does (M/K on
average); Zipf popularity against Che's approximation; conservation laws with it on."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import busy_cached, even_trace, load_yaml, time_in_system_s, utilization_for_blocks

from dcsim.engine.simulation import simulate
from dcsim.errors import DcsimError
from dcsim.scenario import scenario_from_data

ROOT = Path(__file__).resolve().parents[1]
BLOCK, PREFIX, OWN = 16, 1024, 16  # a prefix of 64 blocks, one block of the request's own


def _utilization_for(blocks: int) -> float:
    return utilization_for_blocks(blocks, BLOCK)


def _run(tmp: Path, n: int, groups: int, zipf_s: float, resident: int):
    trace = even_trace(tmp, n, OWN)  # never two requests at once
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    w = d["workloads"][0]
    w["arrival"] = {"kind": "trace", "path": str(trace)}
    w["shared_prefix"] = {"tokens": PREFIX, "groups": groups, "zipf_s": zipf_s}
    # room for `resident` prefixes and the one block a finished request leaves behind:
    # each miss then evicts exactly one whole prefix, the least recently used
    w["deployment"].update(replicas=1, prefix_caching=True, kv_block_tokens=BLOCK,
                           gpu_memory_utilization=_utilization_for(resident * 64 + 1))
    d["simulation"] = {"duration_s": n + 5.0, "seed": 4, "time_bucket_s": 60}
    return simulate(scenario_from_data(d))


def _lru_hits(groups: list[int], size: int) -> list[bool]:
    cache: OrderedDict[int, None] = OrderedDict()
    hits = []
    for g in groups:
        hits.append(g in cache)
        cache[g] = None
        cache.move_to_end(g)
        if len(cache) > size:
            cache.popitem(last=False)
    return hits


def test_uniform_prefixes_hit_exactly_as_an_lru_cache_of_m_of_k(tmp_path):
    k, m, n = 10, 4, 3000
    r = _run(tmp_path, n, k, 0.0, m)
    q = r.requests
    assert int(r.replicas["kv_capacity_tokens"].iloc[0]) // BLOCK == m * 64 + 1
    assert (q["status"] == "finished").all() and set(q["cached_tokens"]) == {0, PREFIX}
    hits = _lru_hits(q["prefix_group"].tolist(), m)
    assert (q["cached_tokens"] == PREFIX).tolist() == hits  # request by request
    assert np.mean(hits) == pytest.approx(m / k, abs=0.03)  # M/K; 3 sigma at n = 3000
    # a hit prefills only the request's own tokens
    prefill = q["ttft_s"].groupby(q["cached_tokens"]).mean()
    assert prefill[PREFIX] < 0.2 * prefill[0]


def _che(p: np.ndarray, m: int) -> float:
    """Che's approximation of an LRU cache of m items: the characteristic time T solves
    sum_i (1 - exp(-p_i T)) = m; the hit rate is sum_i p_i (1 - exp(-p_i T))."""
    lo, hi = 0.0, 1.0
    while np.sum(1 - np.exp(-p * hi)) < m:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.sum(1 - np.exp(-p * mid)) < m else (lo, mid)
    return float(np.sum(p * (1 - np.exp(-p * lo))))


def test_zipf_prefixes_hit_as_ches_approximation_says(tmp_path):
    k, m, n, s = 60, 12, 12000, 0.8
    q = _run(tmp_path, n, k, s, m).requests
    p = np.arange(1, k + 1, dtype=float) ** -s
    expected = _che(p / p.sum(), m)
    assert 0.3 < expected < 0.8
    assert float((q["cached_tokens"] == PREFIX).mean()) == pytest.approx(expected, rel=0.02)


@pytest.fixture(scope="module")
def cached_busy():
    s = scenario_from_data(busy_cached(8))  # tight: evictions and preemptions
    return s, simulate(s)


def test_with_caching_energy_is_conserved_and_fast_path_equals_step_by_step(cached_busy):
    s, r = cached_busy
    q = r.requests
    assert (q["cached_tokens"] > 0).mean() > 0.5 and q["preemptions"].sum() > 0
    device = r.replicas["energy_j"].sum()
    parts = q["energy_j"].sum() + r.replicas["idle_energy_j"].sum()
    assert parts == pytest.approx(device, rel=1e-12)
    slow = simulate(s, coalesce=False).requests
    for col in ("replica", "preemptions", "status", "cached_tokens"):
        assert (q[col] == slow[col]).all(), col
    for col in ("first_token_s", "finish_s", "energy_j"):
        np.testing.assert_allclose(q[col], slow[col], rtol=1e-9, atol=1e-9, err_msg=col)


def test_cache_never_holds_more_than_the_kv_blocks_and_reports_hits(cached_busy):
    _, r = cached_busy
    ts = r.timeseries
    cap = r.replicas.set_index("replica")["kv_capacity_tokens"]
    used = ts["kv_tokens"] + ts["cache_tokens"]  # the requests' own blocks and the cache's
    assert (used <= ts["replica"].map(cap) + 1e-6).all()
    assert ts["cache_tokens"].max() > 0
    rate = ts["prefix_hit_rate"].dropna()
    assert len(rate) > 0 and rate.between(0, 1).all() and rate.mean() > 0.3


def test_little_law_holds_with_caching(cached_busy):
    s, r = cached_busy
    in_system = time_in_system_s(r.requests, s.simulation.duration_s)
    assert r.replicas["in_system_x_s"].sum() == pytest.approx(in_system, rel=1e-9)


def test_prefix_caching_needs_a_shared_prefix():
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    d["workloads"][0]["deployment"]["prefix_caching"] = True
    from dcsim.references import check_references

    problems = check_references(scenario_from_data(d), ROOT / "scenarios")
    assert any("prefix_caching" in p.path and "shared_prefix" in p.expected for p in problems)
    with pytest.raises(DcsimError, match="groups"):
        d["workloads"][0]["shared_prefix"] = {"tokens": 10, "groups": 0}
        scenario_from_data(d)
    assert math.isfinite(_utilization_for(10))


def _affinity_run(routing: str, slack: int):
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    d["simulation"] = {"duration_s": 150, "warmup_s": 10, "seed": 8, "time_bucket_s": 30}
    w = d["workloads"][0]
    w["shared_prefix"] = {"tokens": 3000, "groups": 24}
    w["routing"], w["affinity_slack_requests"] = routing, slack
    # each replica's cache holds a few of the 24 prefixes: where a prefix goes matters
    w["deployment"].update(replicas=4, prefix_caching=True,
                           gpu_memory_utilization=_utilization_for(6 * 3000 // BLOCK + 800))
    return simulate(scenario_from_data(d)).requests


def test_prefix_affinity_keeps_prefixes_on_their_replica_and_hits_more():
    spread = _affinity_run("least_outstanding", 0)
    sticky = _affinity_run("prefix_affinity", 10**6)  # never moves: one replica a prefix
    assert (sticky.groupby("prefix_group")["replica"].nunique() == 1).all()
    bounded = _affinity_run("prefix_affinity", 4)
    assert bounded.groupby("prefix_group")["replica"].nunique().max() > 1  # moves when loaded
    rate = {name: float((q["cached_tokens"] > 0).mean())
            for name, q in (("spread", spread), ("bounded", bounded))}
    assert rate["bounded"] > rate["spread"] + 0.1, rate
    # the bound pays: never moving a prefix queues requests behind a busy replica
    ttft = {name: q.loc[q["status"] == "finished", "ttft_s"].mean()
            for name, q in (("spread", spread), ("bounded", bounded), ("sticky", sticky))}
    assert ttft["bounded"] < ttft["spread"] and ttft["bounded"] < ttft["sticky"], ttft
