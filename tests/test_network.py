"""Max-min fair sharing of the scale-out network between training jobs and transfers."""

from __future__ import annotations

import numpy as np
import pytest

from dcsim.engine.simulation import simulate
from dcsim.hardware.network import max_min_rates, water_fill
from dcsim.scenario import scenario_from_data


def test_two_equal_flows_on_one_link_each_get_half():
    assert max_min_rates([[0], [0]], np.array([10.0])).tolist() == [5.0, 5.0]


def test_progressive_filling_textbook_case():
    # f0 on A (10), f1 on A and B, f2 on B (4): B saturates first at 2 each; f0 takes the rest
    assert max_min_rates([[0], [0, 1], [1]], np.array([10.0, 4.0])).tolist() == [8.0, 2.0, 2.0]
    # a flow capped by its own demand leaves the rest to the others
    assert max_min_rates([[0], [0]], np.array([10.0]), np.array([2.0, 100.0])).tolist() == [
        2.0, 8.0]


def test_water_filling_on_one_link_equals_progressive_filling():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 8))
        demand = rng.uniform(0, 10, n)
        cap = float(rng.uniform(1, 40))
        assert water_fill(cap, demand.tolist()) == pytest.approx(
            max_min_rates([[0]] * n, np.array([cap]), demand).tolist())


def _two_jobs(both: bool, placement: str = "first_fit") -> dict:
    job = {"kind": "training", "model": "llama-3.1-8b", "gpu": "H100-SXM", "gpus": 56,
           "parallelism": {"tp": 8, "pp": 1, "dp": 7}, "steps": 200,
           "global_batch_tokens": 7 * 8 * 8192, "seq_len": 8192, "micro_batches": 8}
    jobs = [{**job, "name": "a"}] + ([{**job, "name": "b"}] if both else [])
    return {"name": "contention",
            "fleet": {"racks": [{"name": "r", "count": 4, "power_budget_kw": 60,
                                 "servers": [{"type": "dgx-h100", "count": 4}]}],
                      "network": {"servers_per_leaf": 4, "oversubscription": 4.0},
                      "training_scheduler": {"placement": placement}},
            "workloads": jobs,
            "simulation": {"duration_s": 7200, "seed": 1, "time_bucket_s": 60}}


def test_two_jobs_on_one_oversubscribed_uplink_slow_each_other():
    # leaves of 4 servers, uplinks at a quarter of their NICs. Job a: servers 0-6 (4 on
    # leaf 0, 3 on leaf 1); job b: servers 7-13 (1 on leaf 1, ...). Alone, a's 24 GPUs on
    # leaf 1 get its whole uplink; shared, max-min halves it and leaf 1 paces a's ring
    alone = simulate(scenario_from_data(_two_jobs(False)))
    shared = simulate(scenario_from_data(_two_jobs(True)))
    a_alone = alone.jobs.set_index("job").loc["a"]
    a_shared = shared.jobs.set_index("job").loc["a"]
    # per-GPU bandwidth on the bottleneck: 1/4 of the NIC alone, 1/6 shared (x 1.5 time)
    assert a_shared["exposed_dp_s"] / a_alone["exposed_dp_s"] == pytest.approx(1.5, rel=0.02)
    assert a_shared["runtime_s"] > a_alone["runtime_s"]
    links = shared.links
    busy = links[(links["link"] == "leaf-1/uplink") & (links["t_start_s"] < 60)]
    assert busy["utilization"].iloc[0] == pytest.approx(1.0)


def test_topology_placement_keeps_the_second_job_off_the_shared_leaf():
    # the same two jobs placed by leaf: a takes leaf 0 and 3 servers of leaf 1, b the
    # fullest leaves 2 and 3, so no uplink is shared and a runs as fast as alone
    alone = simulate(scenario_from_data(_two_jobs(False, "topology")))
    shared = simulate(scenario_from_data(_two_jobs(True, "topology")))
    jobs = shared.jobs.set_index("job")
    assert jobs["leaves"].tolist() == [2, 2]
    assert jobs.loc["a", "exposed_dp_s"] == pytest.approx(
        alone.jobs.set_index("job").loc["a", "exposed_dp_s"], rel=1e-9)


def test_a_kv_transfer_and_a_training_job_share_the_uplinks_max_min():
    from dcsim.hardware.network import Fabric

    now = [0.0]
    fab = Fabric(np.array([400e9, 400e9]), lambda: now[0], 1.0, 10.0,
                 links=[("p/nic-out", 50e9), ("d/nic-in", 50e9)])
    fab.start(0, {0: 8, 1: 8}, 50e9)  # a job on two leaves: line rate fills both uplinks
    assert fab.per_gpu[0] == pytest.approx(50e9)
    # 2 GB from leaf 0 to leaf 1: its NIC ports cap it at 50 GB/s, the job keeps the rest
    fab.send(7, [2, 3, 0, 1], np.inf, 2e9)
    assert fab.flows[7][3] == pytest.approx(50e9)
    assert fab.per_gpu[0] == pytest.approx(350e9 / 8)
    assert fab.next_done_s() == pytest.approx(0.04)
    now[0] = 0.04
    assert fab.finished() == [7]
    assert fab.per_gpu[0] == pytest.approx(50e9)  # the job has its uplinks back
    # uplink 0 stayed full: the job's 350 GB/s and the transfer's 50 while both ran
    now[0] = 1.0
    load = fab.mean_load()
    assert load[0, 0] == pytest.approx(400e9, rel=1e-12)
    assert load[2, 0] == pytest.approx(2e9, rel=1e-12)  # the port moved its 2 GB
