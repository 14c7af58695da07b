"""GPU clock and power under a power cap (dynamic voltage and frequency scaling).

Model (per GPU, with x = SM clock / highest clock):

    P(x) = P_floor + (P_1 - P_floor) * s(x) / s(1),   s(x) = x * max(x, x_knee)^2

Dynamic power is switching activity x clock x voltage^2. Above the voltage knee
the voltage falls with the clock, so power falls like x^3; below it the voltage
is at its floor and power falls like x. P_floor is what does not scale with the
SM clock (static power, memory). A cap C below the phase's power picks the clock
with P(x) = C (never below x_min; there the cap cannot be held).

Time of a phase with a clock-sensitive share beta (compute-bound work; memory
and launch time do not scale with the SM clock):

    T(x) = T_1 * (beta / x + 1 - beta)

Every function works on floats and numpy arrays. Parameters are calibrated on the
Zeus power-limit sweeps (see dcsim.hardware.calibration).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcsim.catalog.specs import GpuSpec

GRID = 4001  # clock points used to invert P(x)
# For GPUs without a sweep of their own: the mean of the V100 and A40 calibrations
# (floor 27.5 W of 250 W, knee 0.875; floor 75 W of 300 W, knee 0.85; tests re-derive
# them) and the lowest clock fraction measured on the H200 (345 / 1980 MHz).
DERIVED_FLOOR_RATIO = 0.18
DERIVED_KNEE = 0.8625
DERIVED_MIN_CLOCK = 0.174


@dataclass(frozen=True)
class Dvfs:
    """DVFS parameters of one GPU type."""

    floor_w: float  # power that does not scale with the SM clock, W
    knee: float  # clock fraction below which voltage stops falling
    min_clock: float  # lowest clock fraction


def dvfs_of(g: GpuSpec) -> Dvfs:
    """The GPU's DVFS parameters; missing ones derived from the calibrated GPUs."""
    floor = g.dvfs_floor_w or max(g.idle_power_w, DERIVED_FLOOR_RATIO * g.tdp_w)
    return Dvfs(floor_w=floor, knee=g.dvfs_knee or DERIVED_KNEE,
                min_clock=g.dvfs_min_clock or DERIVED_MIN_CLOCK)


def shape(x: np.ndarray | float, knee: float) -> np.ndarray | float:
    """Clock x voltage^2 relative to the top clock: x * max(x, knee)^2."""
    return x * np.maximum(x, knee) ** 2


def power_at_clock(x: np.ndarray | float, ref_power_w: np.ndarray | float,
                   ref_clock: np.ndarray | float, d: Dvfs) -> np.ndarray:
    """Power at clock x of a phase that draws ref_power_w at clock ref_clock, W."""
    scale = (np.asarray(ref_power_w) - d.floor_w) / shape(ref_clock, d.knee)
    return d.floor_w + scale * shape(x, d.knee)


def clock_under_cap(cap_w: float | np.ndarray, ref_power_w: np.ndarray | float,
                    ref_clock: np.ndarray | float, d: Dvfs) -> np.ndarray:
    """Highest clock at which the phase draws at most cap_w (or the lowest clock)."""
    p, x_ref, cap = np.broadcast_arrays(np.atleast_1d(np.asarray(ref_power_w, dtype=float)),
                                        np.asarray(ref_clock, dtype=float),
                                        np.asarray(cap_w, dtype=float))
    xs = np.linspace(d.min_clock, 1.0, GRID)
    s = shape(xs, d.knee)
    dyn = (p - d.floor_w) / shape(x_ref, d.knee)  # dynamic power at clock 1
    with np.errstate(divide="ignore", invalid="ignore"):
        target = np.where(dyn > 0, (cap - d.floor_w) / dyn, np.inf)
    x = np.interp(np.maximum(target, s[0]), s, xs)
    return np.where(p > cap, np.minimum(x, x_ref), x_ref)


def time_at_clock(x: np.ndarray | float, ref_time_s: np.ndarray | float,
                  ref_clock: np.ndarray | float, beta: np.ndarray | float) -> np.ndarray:
    """Time at clock x of a phase that takes ref_time_s at ref_clock; beta = clock-bound share."""
    def rel(c: np.ndarray | float) -> np.ndarray:
        """Time at clock c relative to the clock-bound share running at full speed."""
        return np.asarray(beta) / c + 1 - np.asarray(beta)

    return np.asarray(ref_time_s) * rel(x) / rel(ref_clock)


def apply_cap(cap_w: float | None, time_s: np.ndarray, power_w: np.ndarray,
              clock: np.ndarray, beta: np.ndarray, d: Dvfs) -> tuple[np.ndarray, np.ndarray]:
    """Time and power of phases measured at (time_s, power_w, clock) under a cap.

    A cap at or above the phase's power changes nothing.
    """
    if cap_w is None:
        return np.asarray(time_s, dtype=float), np.asarray(power_w, dtype=float)
    x = clock_under_cap(cap_w, power_w, clock, d)
    return time_at_clock(x, time_s, clock, beta), power_at_clock(x, power_w, clock, d)
