"""Request tables of inference services: arrival time, prompt and output lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dcsim.workloads.arrivals import diurnal_times, gamma_times, poisson_times, scale_trace
from dcsim.workloads.lengths import sample_lengths
from dcsim.workloads.spec import (
    DiurnalArrivals,
    GammaArrivals,
    InferenceService,
    PoissonArrivals,
    SharedPrefix,
    TraceArrivals,
)
from dcsim.workloads.traces import load_trace, resolve_trace_path


def service_requests(svc: InferenceService, duration_s: float, seed_seq: np.random.SeedSequence,
                     base_dir: Path | None = None) -> pd.DataFrame:
    """Requests of one service over [0, duration_s): arrival_s, prompt_tokens (a shared
    prefix included), output_tokens, prefix_group (-1: none) and prefix_tokens."""
    # a fourth stream for prefixes: spawn(4) gives the first three spawn(3) gives
    arr_rng, prompt_rng, out_rng, prefix_rng = (np.random.default_rng(s)
                                                for s in seed_seq.spawn(4))
    a = svc.arrival
    prompts = outputs = None
    if isinstance(a, TraceArrivals):
        trace = load_trace(resolve_trace_path(a.path, base_dir))
        picked = scale_trace(trace["arrival_s"].to_numpy(), a, arr_rng)
        idx, times = picked[:, 0].astype(np.int64), picked[:, 1]
        keep = times < duration_s
        idx, times = idx[keep], times[keep]
        if a.use_token_lengths:
            prompts = np.maximum(trace["prompt_tokens"].to_numpy()[idx], 1)
            outputs = np.maximum(trace["output_tokens"].to_numpy()[idx], 1)
    elif isinstance(a, PoissonArrivals):
        times = poisson_times(a, duration_s, arr_rng)
    elif isinstance(a, GammaArrivals):
        times = gamma_times(a, duration_s, arr_rng)
    elif isinstance(a, DiurnalArrivals):
        times = diurnal_times(a, duration_s, arr_rng)
    else:
        raise TypeError(f"unknown arrival spec {a!r}")
    n = times.size
    if prompts is None:
        prompts = sample_lengths(svc.prompt_tokens, n, prompt_rng, "prompt_tokens", base_dir)
    if outputs is None:
        outputs = sample_lengths(svc.output_tokens, n, out_rng, "output_tokens", base_dir)
    groups, prefix = prefix_groups(svc.shared_prefix, n, prefix_rng)
    return pd.DataFrame({"arrival_s": times, "prompt_tokens": prompts.astype(np.int64) + prefix,
                         "output_tokens": outputs.astype(np.int64), "prefix_group": groups,
                         "prefix_tokens": prefix})


def prefix_groups(spec: SharedPrefix | None, n: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per request: the shared prefix it starts with (-1: none) and its tokens. Prefix k
    (0-based) is drawn with probability (k + 1)^-s / sum_j (j + 1)^-s."""
    if spec is None:
        return np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    weights = np.arange(1, spec.groups + 1, dtype=float) ** -spec.zipf_s
    groups = rng.choice(spec.groups, size=n, p=weights / weights.sum()).astype(np.int64)
    return groups, np.full(n, spec.tokens, dtype=np.int64)
