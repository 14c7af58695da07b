"""Scenario builders shared by the engine tests."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

from dcsim.scenario import Scenario, scenario_from_data

FLAT_GPU = {
    "id": "FLAT-GPU", "memory_gb": 141, "memory_bandwidth_tbps": 4.8, "bf16_dense_tflops": 989,
    "tdp_w": 700, "idle_power_w": 80, "power_limit_min_w": 200, "power_limit_max_w": 700,
    "scaleup_bandwidth_gbyte_s": 900, "source": "derived: test device with a flat profile",
}


def flat_profile(path: Path, prefill_ms: float, decode_ms: float) -> Path:
    """A profile whose prefill and decode times do not depend on length: queueing theory fits."""
    rows = []
    for s in (1, 2, 4):
        rows.append(("prefill", 1, s, prefill_ms))
    for ctx in (1, 1024, 65536):
        rows.append(("decode", 1, ctx, decode_ms))
    df = pd.DataFrame(rows, columns=["phase", "batch_size", "seq_len", "latency_ms"])
    df = df.assign(gpu="FLAT-GPU", model="llama-3.2-1b", energy_j=df["latency_ms"] * 0.4)
    df.to_csv(path, index=False)
    return path


def queue_scenario(tmp: Path, arrival: dict, output: dict, replicas: int, duration_s: float,
                   seed: int = 11, prefill_ms: float = 1.0, decode_ms: float = 10.0) -> Scenario:
    profile = flat_profile(tmp / "flat.csv", prefill_ms, decode_ms)
    data = {
        "name": "queue-check",
        "catalog": {"gpus": [FLAT_GPU]},
        "profiles": [str(profile)],
        "workloads": [{
            "kind": "inference", "name": "q", "model": "llama-3.2-1b", "arrival": arrival,
            "prompt_tokens": {"kind": "constant", "tokens": 1}, "output_tokens": output,
            "deployment": {"gpu": "FLAT-GPU", "replicas": replicas, "max_num_seqs": 1},
            "routing": "central_queue",
        }],
        "simulation": {"duration_s": duration_s, "seed": seed, "time_bucket_s": duration_s / 10},
    }
    return scenario_from_data(data)


def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def chat_service(rate_per_s: float, replicas: int, prompt: tuple[int, float, int] = (800, 0.8, 6000),
                 output: tuple[int, float, int] = (150, 0.6, 1000), slo: dict | None = None
                 ) -> dict:
    """A Llama-3.1-8B chat service on H200 (TP 1) with Poisson arrivals and lognormal
    lengths (mean tokens, sigma, max tokens)."""
    def lengths(m: int, s: float, top: int) -> dict:
        return {"kind": "lognormal", "mean_tokens": m, "sigma": s, "max_tokens": top}

    return {"kind": "inference", "name": "chat", "model": "llama-3.1-8b",
            "arrival": {"kind": "poisson", "rate_per_s": rate_per_s},
            "prompt_tokens": lengths(*prompt), "output_tokens": lengths(*output),
            "slo": slo or {"ttft_p99_s": 2.0, "tpot_p99_s": 0.1},
            "deployment": {"gpu": "H200-SXM", "tp": 1, "replicas": replicas}}


def time_in_system_s(requests: pd.DataFrame, end_s: float) -> float:
    """Sum over routed requests of the time each spent in the system up to end_s (the
    left side of Little's law, against the replicas' integral of requests in system)."""
    q = requests[requests["replica"] >= 0]
    return float((q["finish_s"].fillna(end_s).clip(upper=end_s) - q["arrival_s"]).sum())


def even_trace(tmp: Path, n: int, prompt_tokens: int) -> Path:
    """A trace of n requests one second apart, each of one output token (done at its
    prefill, so never two at once)."""
    import numpy as np

    trace = tmp / "even.csv"
    t0 = np.datetime64("2023-11-16T18:00:00")
    rows = [f"{t0 + np.timedelta64(i, 's')},{prompt_tokens},1" for i in range(n)]
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    return trace


def utilization_for_blocks(blocks: int, block_tokens: int) -> float:
    """gpu_memory_utilization giving one Llama-3.1-8B replica on H200 exactly `blocks`
    KV blocks (weights + tokens x KV bytes, half a token to spare)."""
    from dcsim.catalog import load_catalog, shapes

    cat = load_catalog()
    m, g = cat.model("llama-3.1-8b"), cat.gpu("H200-SXM")
    need = shapes.weight_bytes(m) + (blocks * block_tokens + 0.5) * shapes.kv_bytes_per_token(m)
    return need / (g.memory_gb * 1e9)


def busy_cached(groups: int, **deployment: object) -> dict:
    """The default scenario at twice its rate on 2 tight replicas (a sixth of the memory)
    with prefix caching over `groups` system prompts of 2,000 tokens: evictions and
    preemptions happen. `deployment` adds or overrides settings."""
    d = load_yaml(Path(__file__).resolve().parents[1] / "scenarios" / "default.yaml")
    d["simulation"] = {"duration_s": 200, "warmup_s": 10, "seed": 6, "time_bucket_s": 20}
    w = d["workloads"][0]
    w["shared_prefix"] = {"tokens": 2000, "groups": groups}
    w["deployment"].update(replicas=2, max_num_seqs=48, prefix_caching=True,
                           gpu_memory_utilization=0.16, **deployment)
    w["arrival"]["rate_scale"] = 2.0
    return d


def random_chat_file(tmp: Path, duration_s: float = 30.0, seed: int = 5) -> Path:
    """The default scenario with Poisson arrivals (3 / s) and lognormal lengths, written to
    tmp/s.yaml: a run whose figures vary with the seed (replication tests)."""
    d = load_yaml(Path(__file__).resolve().parents[1] / "scenarios" / "default.yaml")
    d["workloads"][0]["arrival"] = {"kind": "poisson", "rate_per_s": 3.0}
    d["workloads"][0]["prompt_tokens"] = {"kind": "lognormal", "mean_tokens": 500, "sigma": 0.8}
    d["workloads"][0]["output_tokens"] = {"kind": "lognormal", "mean_tokens": 100, "sigma": 0.6}
    d["simulation"] = {"duration_s": duration_s, "seed": seed}
    f = tmp / "s.yaml"
    f.write_text(json.dumps(d))
    return f
