"""Training simulation at scale: a 16,384-GPU job for 54 days.

Run: python bench/training.py
Llama-3.1-405B on 16,384 H100 (TP 8, PP 16, DP 128), per-GPU MTBF set so the job
fails about every 3 hours, checkpoints every 30 minutes, 54 simulated days.
Prints wall time, SimPy events processed, and the job's goodput and failures.
"""

from __future__ import annotations

import time

import simpy

from dcsim.engine.simulation import simulate
from dcsim.scenario import scenario_from_data

GPUS = 16384


def scenario() -> dict:
    return {
        "name": "bench-training",
        "fleet": {"racks": [{"name": "pod", "count": GPUS // 32, "power_budget_kw": 50,
                             "servers": [{"type": "dgx-h100", "count": 4}]}],
                  "network": {"oversubscription": 1.0, "servers_per_leaf": 32}},
        "workloads": [{
            "kind": "training", "name": "llama-405b", "model": "llama-3.1-405b",
            "gpu": "H100-SXM", "gpus": GPUS, "parallelism": {"tp": 8, "pp": 16, "dp": 128},
            "steps": 10**7, "global_batch_tokens": 16 * 2**20, "seq_len": 8192,
            "micro_batches": 16, "dp_overlap": 0.5,
            "checkpoint": {"interval_s": 1800},
            "failures": {"gpu_mtbf_hours": 3.0 * GPUS, "restart_s": 900},
        }],
        "simulation": {"duration_s": 54 * 86400, "seed": 1, "time_bucket_s": 86400},
    }


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


if __name__ == "__main__":
    main()
