"""How wrong a profile answer may be, by where it comes from, and draws of that error.

Spreads are the standard deviation of the log error, estimated from median absolute
relative errors the project measures (sigma = median / 0.6745, the normal's ratio):

- ``interpolated`` (and measured points, whose repeatability is not measured: the
  same spread, conservatively): leave-one-out over the shipped H200 points, 3.7 %
  latency and 5.6 % energy (`bench/profile_accuracy.py`);
- ``derived_model`` (a model not measured on a measured GPU): leave-one-model-out,
  13.4 % and 16.7 %;
- ``derived_gpu`` (a GPU not measured): the held-out half of the ML.ENERGY v2
  comparison with the engine's overhead fitted, 8.8 % TPOT and 13 % energy per token
  (`bench/derived_accuracy.py`; it carries the model derivation too).

`tests/test_uncertainty.py` recomputes the three medians from the shipped data, so the
constants cannot drift from what the code does. With `dcsim run --profile-uncertainty`
each replication multiplies, per (GPU, model, phase), latency by exp(sigma_l z1) and
energy by exp(sigma_e z2), z standard normal drawn from the replication's seed; power
stays under the limit in force (the energy is re-held there). `dcsim optimize
--quantile q` instead scales every answer by its q quantile (quantile_factors), so a
plan holds its SLOs if the profile errs that far.
"""

from __future__ import annotations

import zlib

import numpy as np

NORMAL_MAD = 0.6745  # median |z| of a standard normal
MEDIANS = {  # median |relative error|: latency, energy
    "interpolated": (0.037, 0.056),
    "derived_model": (0.134, 0.167),
    "derived_gpu": (0.088, 0.13),
}
SPREADS = {k: (lat / NORMAL_MAD, en / NORMAL_MAD) for k, (lat, en) in MEDIANS.items()}


def spread_class(derived: bool, gpu_measured: bool) -> str:
    """The spread an answer takes: derived or not (from a measured group of the same GPU,
    model and tp), and whether its GPU was measured at all."""
    if derived:
        return "derived_model" if gpu_measured else "derived_gpu"
    return "interpolated"


Spread = str | tuple[float, float]  # a class of SPREADS, or (latency, energy) sigmas


def sigmas(kind: Spread) -> tuple[float, float]:
    """Latency and energy sigma of a class, or the pair itself (a calibrated group's,
    from its profile rows)."""
    return SPREADS[kind] if isinstance(kind, str) else (float(kind[0]), float(kind[1]))


def from_errors(latency_pct: list[float], energy_pct: list[float],
                floor: tuple[float, float]) -> tuple[float, float]:
    """Sigmas of a calibrated profile from its errors against measurements (signed %):
    median |log(1 + e)| / 0.6745 as for the other classes, never below `floor`
    (latency, energy sigmas: what the written table's interpolation and, for an energy
    never measured, the profile underneath leave)."""
    lo_lat, lo_en = floor

    def sigma(errs: list[float], lo: float) -> float:
        if not errs:
            return lo
        med = float(np.median(np.abs(np.log1p(np.asarray(errs, float) / 100))))
        return max(med / NORMAL_MAD, lo)

    return sigma(latency_pct, lo_lat), sigma(energy_pct, lo_en)


def draw(seed: int, gpu: str, model: str, phase: str, kind: Spread) -> tuple[float, float]:
    """Latency and energy factors of one (GPU, model, phase) in one replication:
    deterministic in the seed and the key (crc32 of the key, not Python's salted hash)."""
    key = zlib.crc32(f"{gpu}|{model}|{phase}".encode())
    z = np.random.default_rng([int(seed), key]).standard_normal(2)
    s_lat, s_en = sigmas(kind)
    return float(np.exp(s_lat * z[0])), float(np.exp(s_en * z[1]))


def quantile_factors(q: float, kind: Spread) -> tuple[float, float]:
    """Latency and energy factors at quantile q of the answer's error: exp(sigma z_q),
    z_q the standard normal quantile (q = 0.9: 1.28 sigma slower and costlier)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(q)
    s_lat, s_en = sigmas(kind)
    return float(np.exp(s_lat * z)), float(np.exp(s_en * z))
