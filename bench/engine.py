"""Engine speed: simulated requests per wall-clock second against bare SimPy.

Run: python bench/engine.py [--requests N] [--replicas R] [--repeat K] [--sessions]
     [--disaggregated]

Simulates the Azure conversation trace (2023), rate-scaled to about N requests
in its hour, on R replicas of Llama-3.1-8B on H200; then, in the same process,
a bare SimPy M/M/c model (c = R) of the same request count and load. Prints
both rates, their ratio and the peak memory of each; with --repeat K, K such pairs
and the median ratio (wall-clock rates on a shared machine vary by several percent).

--sessions: multi-turn chat instead of the trace: sessions start at Poisson times,
five turns on average, 30 s of thought between an answer and the next prompt, the
conversation trace's lengths for each turn's new tokens and answer, a 1,000-token
system prompt, prefix caching and prefix-affinity routing; the session rate is set so
that about N requests are planned in the hour (turns due after its end are never sent,
so somewhat fewer arrive: 874,000 of a million).

--disaggregated: the trace on R // 4 prefill replicas and R - R // 4 decode replicas
(the same GPUs), each request's KV cache moved from its prefill replica to its decode
replica as a flow on the fabric (NVLink within a server, NICs between servers).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import simpy

from dcsim.engine.simulation import simulate
from dcsim.scenario import scenario_from_data

TRACE_REQUESTS = 19366  # rows of the conversation trace


def sessions_service(n: int, replicas: int) -> dict:
    """Multi-turn chat with prefix caching (see the module docstring)."""
    lengths = {"kind": "empirical", "trace": "builtin:azure-conv-2023"}
    return {"kind": "inference", "name": "chat", "model": "llama-3.1-8b",
            "arrival": {"kind": "poisson", "rate_per_s": n / 5 / 3600},
            "prompt_tokens": lengths, "output_tokens": lengths,
            "shared_prefix": {"tokens": 1000},
            "sessions": {"mean_turns": 5, "mean_think_time_s": 30},
            "deployment": {"gpu": "H200-SXM", "replicas": replicas, "max_num_seqs": 256,
                           "prefix_caching": True},
            "routing": "prefix_affinity"}


def disaggregated(replicas: int) -> dict:
    """Prefill and decode pools over the same GPUs (see the module docstring)."""
    pre = max(replicas // 4, 1)
    return {"prefill": {"gpu": "H200-SXM", "replicas": pre, "max_num_seqs": 256},
            "decode": {"gpu": "H200-SXM", "replicas": max(replicas - pre, 1),
                       "max_num_seqs": 256}}


def dcsim_run(n: int, replicas: int, sessions: bool = False, split: bool = False
              ) -> tuple[int, float, float, int]:
    data = {
        "name": "bench-engine",
        "workloads": [{
            "kind": "inference", "name": "chat", "model": "llama-3.1-8b",
            "arrival": {"kind": "trace", "path": "builtin:azure-conv-2023",
                        "rate_scale": n / TRACE_REQUESTS},
            "deployment": {"gpu": "H200-SXM", "replicas": replicas, "max_num_seqs": 256},
            "routing": "least_outstanding",
        }],
        "simulation": {"duration_s": 3600, "seed": 1, "time_bucket_s": 60},
    }
    if sessions:
        data["workloads"] = [sessions_service(n, replicas)]
    if split:
        data["workloads"][0]["deployment"] = disaggregated(replicas)
    s = scenario_from_data(data)
    before = _peak_rss_mib()
    t0 = time.perf_counter()
    r = simulate(s)
    wall = time.perf_counter() - t0
    return len(r.requests), wall, _peak_rss_mib() - before, r.events


def bare_mmc(n: int, servers: int, mean_service_s: float, seed: int = 1) -> tuple[int, float, float]:
    rng = np.random.default_rng(seed)
    lam = 0.7 * servers / mean_service_s
    gaps = rng.exponential(1 / lam, n).tolist()
    services = rng.exponential(mean_service_s, n).tolist()

    def customer(env, res, s):
        with res.request() as req:
            yield req
            yield env.timeout(s)

    def source(env, res):
        for g, s in zip(gaps, services, strict=True):
            yield env.timeout(g)
            env.process(customer(env, res, s))

    before = _peak_rss_mib()
    t0 = time.perf_counter()
    env = simpy.Environment()
    res = simpy.Resource(env, capacity=servers)
    env.process(source(env, res))
    env.run()
    wall = time.perf_counter() - t0
    return n, wall, _peak_rss_mib() - before


def _peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--replicas", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--sessions", action="store_true",
                    help="multi-turn chat with prefix caching instead of the trace")
    ap.add_argument("--disaggregated", action="store_true",
                    help="prefill and decode pools, KV moved between them")
    a = ap.parse_args()
    ratios = []
    for _ in range(a.repeat):
        # the baseline runs first, so each peak-memory growth is its own (first pair)
        m, wall_b, mem_b = bare_mmc(a.requests, a.replicas, 2.0)
        print(f"bare SimPy M/M/c: {m:>9,} requests in {wall_b:7.1f} s = {m / wall_b:9,.0f} "
              f"req/s, peak memory growth {mem_b:7.1f} MiB")
        n, wall, mem, events = dcsim_run(a.requests, a.replicas, a.sessions,
                                         a.disaggregated)
        print(f"dcsim engine:     {n:>9,} requests in {wall:7.1f} s = {n / wall:9,.0f} req/s, "
              f"peak memory growth {mem:7.1f} MiB (setup and results tables included), "
              f"{events / n:.2f} SimPy events per request")
        ratios.append((n / wall) / (m / wall_b))
        print(f"ratio dcsim / bare SimPy: {ratios[-1]:.3f}", flush=True)
    if a.repeat > 1:
        print(f"median ratio of {a.repeat}: {float(np.median(ratios)):.3f} "
              f"(range {min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
