"""Fleet scale: wall time of a short run as the fleet grows.

Run: python bench/fleet_scale.py [--racks 1000,10000,100000] [--seconds 60]

A fleet of N racks (4 DGX H200 servers each, 40 kW budget each, 10 rows of N/10 racks)
serves a small chat service (4 replicas, a few requests a second) for `--seconds`
simulated seconds: almost all of the work is placement, budgets, power per domain and
the summary, which must grow about linearly with the fleet. Prints the wall time per
size and the time per rack.
"""

from __future__ import annotations

import argparse
import time

from dcsim.engine.simulation import simulate
from dcsim.results import summarize
from dcsim.scenario import scenario_from_data


def scenario(racks: int, seconds: float) -> dict:
    rows = max(1, min(10, racks))
    return {
        "name": f"fleet-{racks}",
        "fleet": {
            "racks": [{"name": f"r{i}", "row": f"row{i % rows}", "count": 1,
                       "power_budget_kw": 40.0, "servers": [{"type": "dgx-h200", "count": 4}]}
                      for i in range(racks)],
            "rows": [{"name": f"row{j}", "power_budget_kw": 40.0 * racks / rows}
                     for j in range(rows)],
        },
        "workloads": [{
            "kind": "inference", "name": "chat", "model": "llama-3.1-8b",
            "arrival": {"kind": "poisson", "rate_per_s": 0.5},
            "prompt_tokens": {"kind": "constant", "tokens": 512},
            "output_tokens": {"kind": "constant", "tokens": 128},
            "deployment": {"gpu": "H200-SXM", "replicas": 4},
        }],
        "simulation": {"duration_s": seconds, "seed": 1, "time_bucket_s": seconds},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--racks", default="1000,10000,100000")
    ap.add_argument("--seconds", type=float, default=60.0)
    a = ap.parse_args()
    for n in [int(x) for x in a.racks.split(",")]:
        s = scenario_from_data(scenario(n, a.seconds))
        t0 = time.perf_counter()
        r = simulate(s)
        t_sim = time.perf_counter() - t0
        summarize(s, r.requests, r.replicas, r.provenance, r.power, r.budgets)
        wall = time.perf_counter() - t0
        print(f"{n:>7,} racks ({4 * n:>7,} servers, {32 * n:>9,} GPUs): {wall:7.1f} s "
              f"(simulate {t_sim:.1f} s, summary {wall - t_sim:.1f} s), "
              f"{wall / n * 1e3:.2f} ms per rack, {len(r.requests)} requests", flush=True)


if __name__ == "__main__":
    main()
