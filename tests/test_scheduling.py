"""Training jobs queueing for servers, sharing storage, losing servers to repair."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from dcsim.engine.simulation import simulate
from dcsim.errors import DcsimError
from dcsim.hardware.storage import SharedStorage
from dcsim.scenario import scenario_from_data


def _job(name: str, gpus: int, steps: int, start: float = 0.0, **kw: object) -> dict:
    return {"kind": "training", "name": name, "model": "llama-3.1-8b", "gpu": "H100-SXM",
            "gpus": gpus, "parallelism": {"tp": 8, "pp": 1, "dp": gpus // 8}, "steps": steps,
            "global_batch_tokens": gpus // 8 * 8 * 8192, "seq_len": 8192, "micro_batches": 8,
            "start_s": start, **kw}


def _scenario(jobs: list[dict], servers: int = 4, duration_s: float = 20000, **fleet: object
              ) -> dict:
    return {"name": "queue", "fleet": {"racks": [{"name": "r", "count": 1, "power_budget_kw": 60,
                                                  "servers": [{"type": "dgx-h100",
                                                               "count": servers}]}], **fleet},
            "workloads": jobs,
            "simulation": {"duration_s": duration_s, "seed": 1, "time_bucket_s": 60}}


def _run(d: dict) -> tuple:
    r = simulate(scenario_from_data(d))
    return r, r.jobs.set_index("job")


def _four_jobs() -> list[dict]:
    # 32 GPUs. a holds 24; b wants all 32 and blocks; c is short enough to finish before
    # a does; d is small but long, so starting it would delay b
    return [_job("a", 24, 100), _job("b", 32, 20, 1), _job("c", 8, 20, 2), _job("d", 8, 400, 3)]


def test_fifo_holds_the_line_behind_a_blocked_job():
    _, jobs = _run(_scenario(_four_jobs(), training_scheduler={"policy": "fifo"}))
    assert jobs.loc["b", "start_s"] == pytest.approx(jobs.loc["a", "end_s"])
    assert jobs.loc["c", "start_s"] == pytest.approx(jobs.loc["b", "end_s"])
    assert jobs.loc["c", "queue_wait_s"] == pytest.approx(jobs.loc["b", "end_s"] - 2)


def test_easy_backfill_starts_what_ends_before_the_reservation_only():
    _, jobs = _run(_scenario(_four_jobs(), training_scheduler={"policy": "easy_backfill"}))
    assert jobs.loc["c", "start_s"] == 2  # ends well before a, so it jumps ahead of b
    assert 2 + jobs.loc["c", "estimated_runtime_s"] < jobs.loc["a", "end_s"]
    # d would still run when a ends: it waits, and b starts exactly when a ends
    assert jobs.loc["b", "start_s"] == pytest.approx(jobs.loc["a", "end_s"])
    assert jobs.loc["d", "start_s"] >= jobs.loc["b", "end_s"] - 1e-9


def test_priority_lets_a_later_urgent_job_go_first():
    jobs = [_job("a", 32, 50), _job("low", 32, 10, 1), _job("high", 32, 10, 2, priority=5)]
    _, t = _run(_scenario(jobs, training_scheduler={"policy": "priority"}))
    assert t.loc["high", "start_s"] == pytest.approx(t.loc["a", "end_s"])
    assert t.loc["low", "start_s"] == pytest.approx(t.loc["high", "end_s"])


def test_idle_servers_and_jobs_add_up_to_the_gpu_energy():
    r, jobs = _run(_scenario(_four_jobs(), training_scheduler={"policy": "easy_backfill"}))
    gpu = r.power[r.power["domain"] == "gpu"]
    total = float((gpu["power_w"] * (gpu["t_end_s"] - gpu["t_start_s"])).sum())
    held = float((jobs["gpus"] * (jobs["end_s"] - jobs["start_s"])).sum())
    idle = (32 * 20000 - held) * 81.0  # free GPU-seconds at the H100's idle 81 W (catalog)
    assert total == pytest.approx(jobs["energy_j"].sum() + idle, rel=1e-9)


def test_fragmentation_is_free_capacity_outside_the_freest_leaf():
    # two leaves of two servers; a one-server job on leaf 0 leaves 8 + 16 free GPUs
    d = _scenario([_job("a", 8, 50)], network={"servers_per_leaf": 2}, duration_s=60)
    r, _ = _run(d)
    frag = r.cluster[r.cluster["workload"] == "training jobs"]["fragmentation"].iloc[0]
    assert frag == pytest.approx(1 - 16 / 24)


def test_jobs_checkpointing_together_share_the_file_system():
    # 4 servers each at 5 GB/s would write at 20 GB/s; the aggregate is 10 GB/s, so one
    # job writes at 10 alone and two jobs writing at once get 5 each: twice the time
    storage = {"write_bandwidth_gbyte_s": 10, "per_client_gbyte_s": 5}
    ck = {"interval_s": 60.0}
    _, ja = _run(_scenario([_job("a", 32, 100, checkpoint=ck)], servers=8,
                               storage=storage))
    both, jb = _run(_scenario([_job("a", 32, 100, checkpoint=ck),
                               _job("b", 32, 100, checkpoint=ck)], servers=8, storage=storage))
    per_alone = ja.loc["a", "checkpoint_overhead_s"] / ja.loc["a", "checkpoints"]
    per_both = jb.loc["a", "checkpoint_overhead_s"] / jb.loc["a", "checkpoints"]
    assert per_alone == pytest.approx(ja.loc["a", "checkpoint_write_s"], rel=1e-6)
    assert per_both == pytest.approx(2 * per_alone, rel=1e-6)
    write = both.links[both.links["link"] == "storage/write"]
    moved = float((write["load_byte_s"] * (write["t_end_s"] - write["t_start_s"])).sum())
    size = 8030261248 * 14  # Llama-3.1-8B parameters x 14 bytes (catalog, schema default)
    assert moved == pytest.approx(size * jb["checkpoints"].sum(), rel=0.01)


def test_transfers_share_bandwidth_max_min_fairly():
    # 10 B/s: A (100 B) alone for 5 s, then A and B (30 B) at 5 B/s each: B ends at
    # 11 s, A has 20 B left and ends at 13 s
    env = simpy.Environment()
    st = SharedStorage(env, write_byte_s=10.0, read_byte_s=10.0, per_client_byte_s=1e9,
                       bucket_s=1.0, buckets=20)
    done: dict[str, float] = {}

    def go(name: str, nbytes: float, at: float):
        yield env.timeout(at)
        _, ev = st.transfer(nbytes, 1, write=True)
        yield ev
        done[name] = env.now

    env.process(go("a", 100, 0))
    env.process(go("b", 30, 5))
    env.run()
    assert done == pytest.approx({"a": 13.0, "b": 11.0})


def _failing(spares: int, repair_s: float) -> tuple:
    job = _job("a", 24, 200, checkpoint={"interval_s": 100.0},
               failures={"times_s": [150.0], "restart_s": 30, "repair_s": repair_s})
    return _run(_scenario([job], training_scheduler={"spare_servers": spares}))


def test_a_spare_replaces_a_failed_server_at_once():
    r, jobs = _failing(spares=1, repair_s=3600)
    j = jobs.loc["a"]
    assert j["restarts"] == 1 and j["replacement_wait_s"] == 0 and j["finished"]
    series = r.cluster[r.cluster["workload"] == "training jobs"]
    down = series[(series["t_start_s"] >= 180) & (series["t_end_s"] <= 3600)]
    assert np.allclose(down["servers_down"], 1.0)  # out for the hour of repair


def test_without_a_spare_the_job_waits_for_the_repair():
    _, spare_free = _failing(spares=0, repair_s=3600)
    assert spare_free.loc["a", "replacement_wait_s"] == 0  # a free fourth server steps in
    job = _job("a", 32, 200, checkpoint={"interval_s": 100.0},
               failures={"times_s": [150.0], "restart_s": 30, "repair_s": 3600})
    _, full = _run(_scenario([job]))  # every server busy: wait for the repair
    a = full.loc["a"]
    assert a["replacement_wait_s"] == pytest.approx(3600)
    # by hand: the work since the checkpoint (it ended at per_ckpt steps + one write),
    # the wait, the restart, and the restore (4 servers read and write at 20 GB/s alike)
    per_ckpt = round(100.0 / a["step_s"])
    since = 150.0 - (per_ckpt * a["step_s"] + a["checkpoint_write_s"])
    lost_s = since + 3600 + 30 + a["checkpoint_write_s"]
    assert a["lost_gpu_hours"] == pytest.approx(32 * lost_s / 3600, rel=1e-9)


def test_a_job_larger_than_the_cluster_is_refused():
    with pytest.raises(DcsimError, match=r"workloads\[0\].gpus"):
        simulate(scenario_from_data(_scenario([_job("a", 40, 10)])))
