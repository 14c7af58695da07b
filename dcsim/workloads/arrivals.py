"""Arrival times of requests, all drawn from a numpy Generator given by the caller."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dcsim.workloads.spec import (
    DiurnalArrivals,
    GammaArrivals,
    PoissonArrivals,
    StepArrivals,
    TraceArrivals,
)

HOUR_S = 3600.0


def renewal_times(gaps_fn: Callable[[int], np.ndarray], mean_gap_s: float, duration_s: float
                  ) -> np.ndarray:
    """Cumulative sums of i.i.d. gaps until `duration_s` (drawn in vectorised chunks)."""
    chunks, t = [], 0.0
    n = int(duration_s / mean_gap_s * 1.1) + 16
    while t <= duration_s:
        times = t + np.cumsum(gaps_fn(n))
        chunks.append(times)
        t = float(times[-1])
    times = np.concatenate(chunks)
    return times[times < duration_s]


def poisson_times(spec: PoissonArrivals, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Exponential gaps with mean 1 / rate."""
    mean = 1.0 / spec.rate_per_s
    return renewal_times(lambda n: rng.exponential(mean, n), mean, duration_s)


def gamma_times(spec: GammaArrivals, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Gamma gaps with mean 1 / rate and coefficient of variation cv: shape 1/cv^2."""
    shape = 1.0 / spec.cv**2
    mean = 1.0 / spec.rate_per_s
    return renewal_times(lambda n: rng.gamma(shape, mean / shape, n), mean, duration_s)


def diurnal_rate(spec: DiurnalArrivals, t_s: np.ndarray) -> np.ndarray:
    """Arrival rate (req/s) at simulated times: hourly steps or a 24 h sinusoid."""
    hour = (spec.start_hour + np.asarray(t_s) / HOUR_S) % 24.0
    if spec.hourly_rate_per_s is not None:
        return np.asarray(spec.hourly_rate_per_s)[hour.astype(int) % 24]
    phase = 2 * np.pi * (hour - spec.peak_hour) / 24.0
    return spec.mean_rate_per_s * (1.0 + spec.amplitude * np.cos(phase))


def diurnal_times(spec: DiurnalArrivals, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Non-homogeneous Poisson process by thinning a process at the peak rate."""
    if spec.hourly_rate_per_s is not None:
        peak = max(spec.hourly_rate_per_s)
    else:
        peak = spec.mean_rate_per_s * (1.0 + spec.amplitude)
    if peak <= 0:
        return np.empty(0)
    cand = renewal_times(lambda n: rng.exponential(1.0 / peak, n), 1.0 / peak, duration_s)
    keep = rng.random(cand.size) * peak < diurnal_rate(spec, cand)
    return cand[keep]


def scale_trace(arrival_s: np.ndarray, spec: TraceArrivals, rng: np.random.Generator
                ) -> np.ndarray:
    """Indices of trace rows to emit and their new times, after time and rate scaling.

    Rate scaling r keeps the token-length distribution: every row is emitted
    floor(r) times plus once more with probability frac(r); copies are spread
    uniformly over one mean gap around the original time so bursts stay bursts.
    Returns an (n, 2)-shaped pair: row indices and times, sorted by time.
    """
    t = arrival_s * spec.time_scale
    r = spec.rate_scale
    copies = np.floor(r).astype(int) + (rng.random(t.size) < (r - np.floor(r)))
    idx = np.repeat(np.arange(t.size), copies)
    span = (t[-1] - t[0]) if t.size > 1 else 1.0
    mean_gap = span / max(t.size - 1, 1)
    jitter = rng.uniform(-0.5, 0.5, idx.size) * mean_gap
    times = t[idx] + np.where(copies[idx] > 1, jitter, 0.0)
    times = np.maximum(times, 0.0)
    order = np.argsort(times, kind="stable")
    return np.column_stack([idx[order], times[order]])


def step_rate(spec: StepArrivals, t_s: np.ndarray) -> np.ndarray:
    """Arrival rate (req/s) at simulated times: the rate of the step each falls in."""
    k = np.minimum((np.asarray(t_s) // spec.step_s).astype(int), len(spec.rates_per_s) - 1)
    return np.asarray(spec.rates_per_s)[k]


def step_times(spec: StepArrivals, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Piecewise-constant Poisson process by thinning a process at the highest rate."""
    peak = max(spec.rates_per_s)
    if peak <= 0:
        return np.empty(0)
    cand = renewal_times(lambda n: rng.exponential(1.0 / peak, n), 1.0 / peak, duration_s)
    return cand[rng.random(cand.size) * peak < step_rate(spec, cand)]
