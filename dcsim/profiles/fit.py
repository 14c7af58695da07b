"""Fit latency and energy of one measured group to the work features.

Method (chosen by leave-one-out error on the shipped H200 grid, see
bench/profile_accuracy.py):

1. Latency: non-negative least squares of latency on the five work features
   (overheads, linear FLOPs, attention FLOPs, bytes). Non-negativity keeps every
   coefficient physical (seconds per FLOP, per byte, per launch).
2. Energy: non-negative least squares of energy on ``[latency, linear_flops,
   attention_flops, bytes]``: static power x time plus energy per FLOP and per byte.
3. The fits leave a residual at each measured point. The ratio measured / fit is
   interpolated in (log2 batch, log2 seq) by inverse-distance weighting, so the
   answer equals the measurement on a measured point and blends neighbours between.
4. Power = energy / latency, held within [idle power, power ceiling].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

IDW_POWER = 2.0


def nnls_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares with columns scaled to 1 for conditioning."""
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls(x / scale, y)
    return coef / scale


def idw(points: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Inverse-distance-weighted interpolation; exact at the points. query: (n, 2)."""
    d = np.sqrt(((query[:, None, :] - points[None, :, :]) ** 2).sum(axis=2))
    hit = d < 1e-9
    w = 1.0 / np.where(hit, 1.0, d) ** IDW_POWER
    out = (w * values).sum(axis=1) / w.sum(axis=1)
    exact = hit.any(axis=1)
    out[exact] = values[hit[exact].argmax(axis=1)]
    return out


def log_coords(batch: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """The plane the residuals are interpolated in: (log2 batch, log2 seq)."""
    return np.column_stack([np.log2(batch), np.log2(seq)])


@dataclass(frozen=True)
class GroupFit:
    """Latency and energy model of one (gpu, model, phase, tp, cap) group."""

    lat_coef: np.ndarray  # seconds per feature unit
    energy_coef: np.ndarray  # [W, J/FLOP, J/FLOP, J/byte]
    points: np.ndarray  # (n, 2) log coords of the measured runs
    lat_log_ratio: np.ndarray
    energy_log_ratio: np.ndarray
    clock: np.ndarray | None = None  # SM clock / highest clock at the measured points

    def clock_at(self, coords: np.ndarray) -> np.ndarray:
        """Clock fraction the runs had under the default limit (1 where unknown)."""
        if self.clock is None:
            return np.ones(coords.shape[0])
        return idw(self.points, self.clock, coords)

    def residual_ratios(self, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Measured / fitted ratios of latency and energy interpolated at coords."""
        return (np.exp(idw(self.points, self.lat_log_ratio, coords)),
                np.exp(idw(self.points, self.energy_log_ratio, coords)))


def fit_coefficients(
    feats: np.ndarray, latency_s: np.ndarray, energy_j: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Latency coefficients (s per feature unit) and energy ones ([W, J/FLOP, J/FLOP, J/B])."""
    lat_coef = nnls_fit(feats, latency_s)
    energy_coef = nnls_fit(np.column_stack([latency_s, feats[:, 2:]]), energy_j)
    return lat_coef, energy_coef


def with_residuals(
    lat_coef: np.ndarray, energy_coef: np.ndarray, feats: np.ndarray, batch: np.ndarray,
    seq: np.ndarray, latency_s: np.ndarray, energy_j: np.ndarray,
    clock: np.ndarray | None = None,
) -> GroupFit:
    """A GroupFit of given coefficients with residuals taken at measured runs."""
    base_lat = feats @ lat_coef
    base_e = np.column_stack([latency_s, feats[:, 2:]]) @ energy_coef
    return GroupFit(
        lat_coef=lat_coef,
        energy_coef=energy_coef,
        points=log_coords(batch, seq),
        lat_log_ratio=np.log(latency_s / np.maximum(base_lat, 1e-12)),
        energy_log_ratio=np.log(np.maximum(energy_j, 1e-12) / np.maximum(base_e, 1e-12)),
        clock=clock,
    )
