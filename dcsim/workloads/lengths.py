"""Prompt and output token lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dcsim.workloads.spec import (
    ConstantLength,
    EmpiricalLength,
    GeometricLength,
    LengthSpec,
    LognormalLength,
)
from dcsim.workloads.traces import load_trace, resolve_trace_path


def sample_lengths(spec: LengthSpec, n: int, rng: np.random.Generator, column: str,
                   base_dir: Path | None) -> np.ndarray:
    """`n` lengths >= 1 token. `column` picks the trace column for empirical lengths."""
    if isinstance(spec, ConstantLength):
        return np.full(n, spec.tokens, dtype=np.int64)
    if isinstance(spec, LognormalLength):
        # the underlying normal's mu such that the mean is mean_tokens
        mu = np.log(spec.mean_tokens) - spec.sigma**2 / 2
        x = np.rint(rng.lognormal(mu, spec.sigma, n))
        return np.clip(x, 1, spec.max_tokens).astype(np.int64)
    if isinstance(spec, GeometricLength):
        # memoryless lengths: P(L = k) = (1 - p)^(k-1) p, mean 1 / p
        return np.minimum(rng.geometric(1.0 / spec.mean_tokens, n), spec.max_tokens).astype(np.int64)
    if isinstance(spec, EmpiricalLength):
        pool = load_trace(resolve_trace_path(spec.trace, base_dir))[column].to_numpy()
        return np.maximum(rng.choice(pool, n, replace=True), 1).astype(np.int64)
    raise TypeError(f"unknown length spec {spec!r}")
