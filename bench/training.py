"""Training simulation at scale.

Run: python bench/training.py
1. Llama-3.1-405B on 16,384 H100 (TP 8, PP 16, DP 128), per-GPU MTBF set so the job
   fails about every 3 hours, checkpoints every 30 minutes, 54 simulated days; failed
   servers go for a 4-hour repair and 8 hot spares stand in. Prints wall time, SimPy
   events processed, and the job's goodput and failures.
2. A synthetic queue of 1,000 jobs (8 to 512 GPUs, log-normal run times, Poisson
   submissions at about 90 % of capacity) on 2,048 H100, under FIFO and EASY
   backfill: wall time, mean wait, GPU allocation.
"""

from __future__ import annotations

import time

import numpy as np
import simpy

from dcsim.engine.simulation import simulate
from dcsim.scenario import scenario_from_data

GPUS = 16384


def scenario() -> dict:
    return {
        "name": "bench-training",
        "fleet": {"racks": [{"name": "pod", "count": GPUS // 32 + 2, "power_budget_kw": 50,
                             "servers": [{"type": "dgx-h100", "count": 4}]}],
                  "network": {"oversubscription": 1.0, "servers_per_leaf": 32},
                  "training_scheduler": {"spare_servers": 8}},
        "workloads": [{
            "kind": "training", "name": "llama-405b", "model": "llama-3.1-405b",
            "gpu": "H100-SXM", "gpus": GPUS, "parallelism": {"tp": 8, "pp": 16, "dp": 128},
            "steps": 10**7, "global_batch_tokens": 16 * 2**20, "seq_len": 8192,
            "micro_batches": 16, "dp_overlap": 0.5,
            "checkpoint": {"interval_s": 1800},
            "failures": {"gpu_mtbf_hours": 3.0 * GPUS, "restart_s": 900,
                         "repair_s": 4 * 3600},
        }],
        "simulation": {"duration_s": 54 * 86400, "seed": 1, "time_bucket_s": 86400},
    }


def queue_scenario(policy: str, n_jobs: int = 1000, gpus: int = 2048) -> dict:
    """A seeded synthetic job mix (not a published trace): sizes and run times as
    cluster studies describe them, many small jobs and a few large ones."""
    rng = np.random.default_rng(7)
    sizes = rng.choice([8, 16, 32, 64, 128, 256, 512], size=n_jobs,
                       p=[0.35, 0.2, 0.15, 0.12, 0.1, 0.05, 0.03])
    hours = np.minimum(rng.lognormal(np.log(2.0), 1.0, n_jobs), 48.0)
    step_s = 2.6  # Llama-3.1-8B, 8 x 8192 tokens per GPU-server and step (profile-derived)
    load = float((sizes * hours).sum()) / gpus  # GPU-hours over capacity, in hours
    submit = np.sort(rng.uniform(0, load / 0.9, n_jobs)) * 3600
    jobs = [{"kind": "training", "name": f"j{k}", "model": "llama-3.1-8b", "gpu": "H100-SXM",
             "gpus": int(g), "parallelism": {"tp": 8, "dp": int(g) // 8},
             "steps": max(1, int(h * 3600 / step_s)), "global_batch_tokens": int(g) * 8192,
             "seq_len": 8192, "start_s": float(t)}
            for k, (g, h, t) in enumerate(zip(sizes, hours, submit, strict=True))]
    return {"name": f"bench-queue-{policy}",
            "fleet": {"racks": [{"name": "r", "count": gpus // 32, "power_budget_kw": 50,
                                 "servers": [{"type": "dgx-h100", "count": 4}]}],
                      "training_scheduler": {"policy": policy}},
            "workloads": jobs,
            "simulation": {"duration_s": float(submit[-1]) + 30 * 86400, "seed": 1,
                           "time_bucket_s": 3600}}


def queue_bench() -> None:
    for policy in ("fifo", "easy_backfill"):
        t0 = time.perf_counter()
        r = simulate(scenario_from_data(queue_scenario(policy)))
        wall = time.perf_counter() - t0
        j = r.jobs
        c = r.cluster
        busy = c.loc[c["t_start_s"] < j["end_s"].max(), "gpu_allocation"]  # until the last ends
        print(f"1,000 jobs on 2,048 GPUs, {policy}: {wall:.1f} s wall; finished "
              f"{int(j['finished'].sum())}; mean wait {j['queue_wait_s'].mean() / 3600:.1f} h; "
              f"GPU allocation while busy {busy.mean():.2f}; makespan "
              f"{j['end_s'].max() / 86400:.1f} days")


def main() -> None:
    events = 0
    original = simpy.Environment.step

    def counting_step(self: simpy.Environment) -> None:
        nonlocal events
        events += 1
        original(self)

    simpy.Environment.step = counting_step  # count events without touching the engine
    t0 = time.perf_counter()
    r = simulate(scenario_from_data(scenario()))
    wall = time.perf_counter() - t0
    simpy.Environment.step = original
    j = r.jobs.iloc[0]
    print(f"{GPUS:,} GPUs, 54 days simulated in {wall:.1f} s wall, {events:,} SimPy events")
    print(f"step {j['step_s']:.2f} s ({j['tokens_per_s']:,.0f} tokens/s); goodput "
          f"{j['goodput']:.3f}; {j['restarts']} failures (expected {54 * 24 / 3:.0f}); "
          f"{j['checkpoints']} checkpoints of {j['checkpoint_write_s']:.0f} s; lost "
          f"{j['lost_gpu_hours']:,.0f} GPU-hours; GPU energy {j['energy_j'] / 3.6e9:,.0f} MWh")
    queue_bench()


if __name__ == "__main__":
    main()
