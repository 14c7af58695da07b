"""Training jobs: step time by hand, checkpoints and failures, published runs."""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dcsim.catalog import shapes
from dcsim.engine.simulation import simulate
from dcsim.hardware.collectives import ring_allreduce_s, tree_allreduce_s
from dcsim.scenario import scenario_from_data
from dcsim.training.checkpoint import young_daly_s

ROOT = Path(__file__).resolve().parents[1]


def _job_scenario(**job) -> dict:
    d = yaml.safe_load((ROOT / "scenarios" / "training.yaml").read_text())
    d["fleet"]["racks"][0]["power_budget_kw"] = 60  # no throttling here
    if "steps" in job:
        d["workloads"][0].pop("total_tokens")
    d["workloads"][0].update(job)
    return d


def test_ring_allreduce_matches_the_alpha_beta_formula():
    # 8 ranks, 1 GB each, 50 GB/s, 5 us: 2*7 alpha + 2*7/8 * 1e9 / 50e9
    assert ring_allreduce_s(1e9, 8, 50e9, 5e-6) == pytest.approx(14 * 5e-6 + 1.75 / 50)
    assert ring_allreduce_s(1e9, 1, 50e9, 5e-6) == 0.0


def test_tree_allreduce_matches_its_formula_and_wins_only_for_small_messages():
    # binomial tree: 2 ceil(log2 p) steps of (alpha + n / beta); 8 ranks -> 6 steps
    assert tree_allreduce_s(1e9, 8, 50e9, 5e-6) == pytest.approx(6 * (5e-6 + 1e9 / 50e9))
    assert tree_allreduce_s(1e9, 1, 50e9, 5e-6) == 0.0
    # 1,024 ranks: 2,046 ring latency steps vs 20 tree steps
    assert tree_allreduce_s(1e3, 1024, 50e9, 5e-6) < ring_allreduce_s(1e3, 1024, 50e9, 5e-6)
    assert tree_allreduce_s(1e9, 1024, 50e9, 5e-6) > ring_allreduce_s(1e9, 1024, 50e9, 5e-6)


def test_a_job_with_tree_allreduce_exposes_the_tree_time(store):
    tree = simulate(scenario_from_data(_job_scenario(steps=5, dp_allreduce="tree"))).jobs.iloc[0]
    # the hand-calculated job below, its gradients (2 bytes a parameter of a 1/32 shard)
    # all-reduced over 8 ranks by a binomial tree at half the NIC rate (2:1 spine)
    shard = shapes.total_params(store.catalog.model("llama-3.1-70b")) / 32
    assert tree["exposed_dp_s"] == pytest.approx(
        tree_allreduce_s(2 * shard, 8, 8 * 400e9 / 8 / 8 / 2, 5e-6), rel=1e-9)


def test_single_job_runs_at_the_throughput_its_profile_implies(store):
    d = _job_scenario(total_tokens=4194304 * 40)
    d["simulation"] = {"duration_s": 86400, "seed": 1, "time_bucket_s": 600}
    r = simulate(scenario_from_data(d))
    job = r.jobs.iloc[0]
    # by hand: 4 sequences of 8192 per micro-batch on a 20-layer, TP-8 stage of Llama-70B
    micro = store.resolve("H100-SXM", "llama-3.1-70b/20L", "train", 8).evaluate(
        np.array([4.0]), np.array([8192.0])).latency_s[0]
    shard = shapes.total_params(store.catalog.model("llama-3.1-70b")) / 32
    # 8 NICs of 400 Gb/s for 8 GPUs; 32 servers span two leaves of 16: 2:1 spine
    dp = ring_allreduce_s(2 * shard, 8, 8 * 400e9 / 8 / 8 / 2, 5e-6)
    step = 16 * micro + 3 * micro + dp  # micro-batches, 1F1B bubble (pp - 1), exposed DP
    assert job["step_s"] == pytest.approx(step, rel=1e-9)
    assert job["finished"] and job["steps_done"] == 40
    assert job["runtime_s"] == pytest.approx(40 * step, rel=1e-9)
    assert job["tokens_per_s"] == pytest.approx(4194304 / step)


def test_job_energy_matches_its_gpus_in_the_power_table():
    d = _job_scenario(total_tokens=4194304 * 400, failures={"gpu_mtbf_hours": 256})
    d["simulation"] = {"duration_s": 6 * 3600, "seed": 2, "time_bucket_s": 600}
    r = simulate(scenario_from_data(d))
    assert r.jobs["restarts"].iloc[0] == len(r.failures) > 0
    assert r.failures["lost_gpu_hours"].sum() == pytest.approx(r.jobs["lost_gpu_hours"].iloc[0])
    p = r.power[r.power["domain"] == "gpu"]
    gpu_j = float((p["power_w"] * (p["t_end_s"] - p["t_start_s"])).sum())
    assert r.jobs["energy_j"].sum() == pytest.approx(gpu_j, rel=1e-9)


def _goodput(interval_s: float, seeds: range) -> float:
    out = []
    for seed in seeds:
        d = _job_scenario(steps=10**6, checkpoint={"interval_s": interval_s},
                          failures={"gpu_mtbf_hours": 256 * 3.0, "restart_s": 300,
                                    "repair_s": 0})  # the server is back at once
        d["simulation"] = {"duration_s": 40 * 86400, "seed": seed, "time_bucket_s": 3600}
        out.append(float(simulate(scenario_from_data(d)).jobs["goodput"].iloc[0]))
    return float(np.mean(out))


def test_goodput_is_best_near_the_young_daly_interval():
    # a 256-GPU job failing every 3 hours on average, 40 days, three seeds per interval
    d = _job_scenario(steps=10**6, failures={"gpu_mtbf_hours": 256 * 3.0})
    d["simulation"] = {"duration_s": 3600, "seed": 1}
    job = simulate(scenario_from_data(d)).jobs.iloc[0]
    yd = young_daly_s(job["checkpoint_write_s"], 3 * 3600)
    factors = [0.5, 0.85, 1.0, 1.2, 2.0]
    good = [_goodput(f * yd, range(3)) for f in factors]
    best = factors[int(np.argmax(good))]
    assert 0.8 <= best <= 1.2  # sqrt(2 x checkpoint time x MTBF), within 20 %
    assert good[0] < max(good) and good[-1] < max(good)


def test_published_training_energy_bookkeeping():
    ref = pd.read_csv(resources.files("dcsim").joinpath("data", "reference",
                                                         "training_energy.csv"))
    tpu = ref[ref["accelerator"] == "TPUv3"]
    for r in tpu.itertuples():
        mwh = r.accel_count * r.wall_days * 24 * r.power_per_accel_w * r.pue / 1e6
        assert mwh == pytest.approx(float(r.energy_mwh), rel=0.01), r.run
    bloom = ref[ref["run"] == "BLOOM-176B"].iloc[0]
    gpu_mwh = 1082990 * bloom["power_per_accel_w"] / 1e6  # GPU-hours x TDP
    assert gpu_mwh == pytest.approx(float(str(bloom["energy_mwh"]).split()[0]), rel=0.01)


def test_bloom_takes_the_published_118_days():
    # BLOOM: 176B parameters, 366B tokens on 384 A100s at ~99 TFLOP/s per GPU on average
    d = yaml.safe_load((ROOT / "scenarios" / "training.yaml").read_text())
    d["catalog"] = {"models": [{"id": "bloom-176b", "layers": 70, "hidden": 14336,
                                "heads": 112, "kv_heads": 112, "head_dim": 128,
                                "ffn": 57344 * 2 // 3, "vocab": 250880,
                                "source": "published: BigScience BLOOM config (MLP as SwiGLU)"}]}
    d["fleet"] = {"racks": [{"name": "a100", "count": 12, "power_budget_kw": 30,
                             "servers": [{"type": "dgx-a100", "count": 4}]}]}
    n = shapes.total_params(scenario_from_data(d).catalog.models[0])
    d["workloads"] = [{"kind": "training", "name": "bloom", "model": "bloom-176b",
                       "gpu": "A100-SXM4-80GB", "gpus": 384,
                       "parallelism": {"tp": 4, "pp": 12, "dp": 8},
                       "total_tokens": 366e9, "global_batch_tokens": 2048 * 2048,
                       "seq_len": 2048, "micro_batches": 16,
                       "achieved_tflops_per_gpu": 6 * 176.2e9 * 366e9 / (384 * 118 * 86400)
                       / 1e12 * n / 176.2e9}]
    d["simulation"] = {"duration_s": 130 * 86400, "seed": 1, "time_bucket_s": 86400}
    job = simulate(scenario_from_data(d)).jobs.iloc[0]
    assert job["finished"]
    assert job["runtime_s"] / 86400 == pytest.approx(118, rel=0.01)
    assert math.isclose(job["goodput"], 1.0, rel_tol=1e-9)


def test_a_jobs_end_is_reached_or_extrapolated_at_its_goodput_so_far():
    """summary.json's end_s: the end it reached when finished; otherwise now plus the
    steps left at the step time over the goodput seen so far."""
    from dcsim.results import _job_times

    done = {"start_s": 10.0, "finished": True, "end_s": 500.0}
    assert _job_times(done) == {"start_s": 10.0, "end_s": 500.0}
    running = {"start_s": 10.0, "finished": False, "runtime_s": 100.0, "steps_total": 50,
               "steps_done": 8, "steps_uncommitted": 2, "step_s": 9.0, "goodput": 0.9,
               "estimated_runtime_s": 450.0}
    assert _job_times(running)["end_s"] == pytest.approx(10 + 100 + 40 * 9.0 / 0.9)
    fresh = running | {"steps_done": 0, "steps_uncommitted": 0}
    assert _job_times(fresh)["end_s"] == pytest.approx(10 + 450.0)  # failure-free estimate
    assert _job_times({"start_s": float("nan")}) == {"start_s": None, "end_s": None}
