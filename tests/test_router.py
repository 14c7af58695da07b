"""The least-loaded search of large services (a tree) picks exactly what a scan of the
loads picks, so routing does not grow with replicas x requests and stays the same."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dcsim.engine import router
from dcsim.engine.replica import Replica
from dcsim.engine.router import MinTree
from dcsim.engine.simulation import simulate
from dcsim.scenario import scenario_from_data


@settings(max_examples=200, deadline=None, derandomize=True)
@given(n=st.integers(1, 300), changes=st.lists(st.tuples(st.integers(0, 299),
                                                        st.integers(0, 5)), max_size=200))
def test_the_tree_finds_the_lowest_index_of_the_least_loaded(n, changes):
    tree, loads = MinTree(n), [0] * n
    for i, v in changes:
        tree[i % n] = v
        loads[i % n] = v
        assert tree.argmin() == loads.index(min(loads))


def _wide(routing: str, rate_per_s: float, max_num_seqs: int) -> dict:
    """160 replicas of Llama-3.1-8B on H200 behind one router, Poisson arrivals."""
    return {
        "name": "wide", "workloads": [{
            "kind": "inference", "name": "chat", "model": "llama-3.1-8b",
            "arrival": {"kind": "poisson", "rate_per_s": rate_per_s},
            "prompt_tokens": {"kind": "lognormal", "mean_tokens": 600, "sigma": 0.8},
            "output_tokens": {"kind": "lognormal", "mean_tokens": 200, "sigma": 0.8},
            "deployment": {"gpu": "H200-SXM", "replicas": 160, "max_num_seqs": max_num_seqs},
            "routing": routing}],
        "simulation": {"duration_s": 20, "seed": 5, "time_bucket_s": 10}}


def test_a_large_service_routes_the_same_with_the_tree_and_with_a_scan(monkeypatch):
    data = _wide("least_outstanding", 400.0, 16)
    tree = simulate(scenario_from_data(data)).requests
    monkeypatch.setattr(router, "TREE_FROM", 10**9)
    scan = simulate(scenario_from_data(data)).requests
    assert len(tree) > 5000 and tree.loc[tree["replica"] >= 0, "replica"].nunique() == 160
    assert tree["replica"].tolist() == scan["replica"].tolist()
    assert tree["finish_s"].equals(scan["finish_s"])


def test_a_large_central_queue_wakes_the_same_replicas_with_indexes_and_with_a_scan(
        monkeypatch):
    # 160 replicas pulling from one queue: the indexes (idle heap, cuttable tree) must pick
    # the replica the scan of every replica picks, arrival by arrival
    data = _wide("central_queue", 500.0, 8)
    calls = {"_cut": 0, "_woken": 0}
    for name in calls:  # count both ways an arrival gets work started
        def counted(self, *a, _f=getattr(Replica, name), _n=name):
            calls[_n] += 1
            return _f(self, *a)
        monkeypatch.setattr(Replica, name, counted)
    fast = simulate(scenario_from_data(data)).requests
    assert calls["_cut"] > 1000 and calls["_woken"] > 100, calls
    monkeypatch.setattr(router, "TREE_FROM", 10**9)
    scan = simulate(scenario_from_data(data)).requests
    assert len(fast) > 8000 and fast.loc[fast["replica"] >= 0, "replica"].nunique() == 160
    assert fast["replica"].tolist() == scan["replica"].tolist()
    assert fast["finish_s"].equals(scan["finish_s"])
