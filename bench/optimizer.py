"""Optimizer at fleet scale: 10,000 GPUs of 4 types in 150 racks, 50 services, 5 power
limits, 24 hourly periods.

Run: python bench/optimizer.py
Services come in 10 classes (model x length distributions x SLO) with their own
diurnal demand curves, as fleets run many deployments of few models; the capacity
table is computed once per class. Prints the time to tabulate capacities, the MILP's
build and solve times, its size, status and gap. Cold starts (optimize.cold_starts, on
by default) link the periods into one MILP; without them (and without a
reconfiguration limit) dcsim solves one MILP per period (exact).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dcsim.engine.context import Context
from dcsim.optimize.plan import inputs_for
from dcsim.optimize.solver import solve_all
from dcsim.scenario import scenario_from_data

ROOT = Path(__file__).resolve().parents[1]
TYPES = [("dgx-h200", 38), ("dgx-h100", 38), ("dgx-a100", 37), ("dgx-b200", 37)]  # racks


def scenario() -> dict:
    racks = [{"name": f"{srv}-{k}", "power_budget_kw": 60, "row": f"row-{k % 10}",
              "servers": [{"type": srv, "count": 8 if k % 3 else 9}]}
             for srv, n in TYPES for k in range(n)]
    rng = np.random.default_rng(5)
    classes = []
    for model in ("llama-3.1-8b", "llama-3.1-70b", "qwen2.5-7b", "mistral-7b", "qwen2.5-72b"):
        for slo in ({"ttft_p99_s": 2.0, "tpot_p99_s": 0.1}, {"ttft_p99_s": 5.0,
                                                            "tpot_p99_s": 0.2}):
            classes.append((model, slo))
    services, demand = [], {}
    for i in range(50):
        model, slo = classes[i % len(classes)]
        name = f"svc-{i}"
        services.append({
            "kind": "inference", "name": name, "model": model,
            "arrival": {"kind": "poisson", "rate_per_s": 1.0},
            "prompt_tokens": {"kind": "lognormal", "mean_tokens": 1000, "sigma": 0.8,
                              "max_tokens": 8000},
            "output_tokens": {"kind": "lognormal", "mean_tokens": 200, "sigma": 0.7,
                              "max_tokens": 2000},
            "slo": slo, "deployment": {"gpu": "H100-SXM", "tp": 8, "replicas": 1}})
        mean = float(rng.uniform(5, 60)) if "7" not in model[-3:] else float(rng.uniform(1, 8))
        peak = float(rng.uniform(10, 18))
        hours = np.arange(24) + 0.5
        demand[name] = list(mean * (1 + 0.6 * np.cos(2 * np.pi * (hours - peak) / 24)))
    return {"name": "bench-optimizer", "facility": {"pue": 1.25, "power_budget_kw": 9000},
            "fleet": {"racks": racks}, "workloads": services,
            "optimize": {"periods": 24, "demand_per_s": demand,
                         "candidates": {"tp": [1, 2, 4, 8],
                                        "power_cap_fractions": [1.0, 0.9, 0.8, 0.7, 0.6],
                                        "max_num_seqs": [256]},
                         "time_limit_s": 600, "mip_gap": 0.01},
            "simulation": {"duration_s": 86400}}


def main() -> None:
    s = scenario_from_data(scenario())
    gpus = sum(8 * (8 if k % 3 else 9) for _, n in TYPES for k in range(n))
    t0 = time.perf_counter()
    x, table, opt, _, _ = inputs_for(s, Context.load(s, ROOT))
    tab_s = time.perf_counter() - t0
    solved, _, _ = solve_all(x, opt.time_limit_s, opt.mip_gap)
    build_s = solved.build_s
    print(f"{gpus:,} GPUs in {len(s.fleet.racks)} racks, {len(x.services)} services, "
          f"{len(table)} (service, configuration) rows ({len(x.table)} usable), 24 periods")
    how = ("one MILP: cold starts link the periods" if x.cold_starts
           else "one per period: nothing links them")
    print(f"capacity table {tab_s:.1f} s; MILP ({how}) build "
          f"{build_s:.1f} s, solve "
          f"{solved.solve_s:.1f} s (build + solve {build_s + solved.solve_s:.1f} s); "
          f"{solved.n_vars:,} variables, {solved.n_cons:,} constraints")
    print(f"status {solved.status}; objective {solved.objective:,.1f} kWh, bound "
          f"{solved.bound:,.1f}, gap {solved.gap:.2%}")


if __name__ == "__main__":
    main()
