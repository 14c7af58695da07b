"""A small correction of the profile for one deployment, and its profile table.

Parameters (``Correction``): a prefill latency scale k_p and fixed overhead o_p per
iteration that prefills, a decode latency scale k_d, and one power scale c. An answer
of latency t at group power P becomes t' = k t + o at P' = clip(c P, idle, limit),
energy P' t' (PhaseCost.adjusted: a slower engine at the same power costs energy in
proportion; no corrected point draws more than the limit in force, less than idle, or
takes negative time).

No decode overhead: a fixed time per decode step is indistinguishable from a decode
scale wherever the step time hardly varies with batch and context (weight reads
dominate it at the loads deployments run), so fitting both leaves them trading off
along a valley the measurements cannot resolve; the scale absorbs it.

The corrected answers are tabulated on a grid covering the deployment's batch sizes
and lengths (powers of two, their midpoints and the extremes) with ``source``
``calibrated``; the store fits and interpolates them as it does measurements, and they
shadow every other row of their (gpu, model, tp, phase) group.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from dcsim.profiles.store import ProfileStore

MAX_PREFILL_BATCH = 64  # as the engine's prefill tables (dcsim.engine.costs)


@dataclass(frozen=True)
class Correction:
    """Per-phase latency scales, a prefill overhead per iteration, a power scale."""

    prefill_scale: float = 1.0
    prefill_overhead_s: float = 0.0
    decode_scale: float = 1.0
    energy_scale: float = 1.0  # of power: energy follows power x corrected time

    def to_dict(self) -> dict[str, float]:
        """Plain values, for calibration.json."""
        return asdict(self)

    def adjust(self, phase: str) -> tuple[float, float, float]:
        """(latency scale, overhead s, power scale) of one phase: PhaseCost.adjust."""
        if phase == "prefill":
            return self.prefill_scale, self.prefill_overhead_s, self.energy_scale
        return self.decode_scale, 0.0, self.energy_scale

    def with_energy(self, scale: float) -> Correction:
        """This correction with another power scale."""
        return replace(self, energy_scale=float(scale))

    def describe(self) -> str:
        """One line: what the correction does."""
        return (f"prefill x{self.prefill_scale:.3f} + {self.prefill_overhead_s * 1e3:.2f} ms "
                f"per iteration, decode x{self.decode_scale:.3f}, power "
                f"x{self.energy_scale:.3f}")


def _lengths(lo: int, hi: int) -> np.ndarray:
    """Powers of two and their midpoints (x 1.5) from lo to hi, both ends included."""
    p = 2.0 ** np.arange(0, int(np.log2(max(hi, 2))) + 1)
    both = np.concatenate([p, 1.5 * p, [lo, hi]])
    return np.unique(both[(both >= lo) & (both <= hi)].round())


def grid(max_num_seqs: int, max_prompt: int, max_ctx: int) -> dict[str, tuple[np.ndarray, ...]]:
    """(batch, length) points per phase the corrected table holds."""
    out = {}
    for phase, batches, lengths in (
            ("prefill", _lengths(1, min(max_num_seqs, MAX_PREFILL_BATCH)), _lengths(1, max_prompt)),
            ("decode", _lengths(1, max_num_seqs), _lengths(1, max_ctx))):
        b, s = np.meshgrid(batches, lengths, indexing="ij")
        out[phase] = (b.ravel(), s.ravel())
    return out


def corrected_rows(store: ProfileStore, key: tuple[str, str, int], corr: Correction,
                   points: dict[str, tuple[np.ndarray, ...]], basis: str) -> pd.DataFrame:
    """The corrected answers of (gpu, model, tp) on `points`, as profile-table rows."""
    gpu, model, tp = key
    adjusted = store.with_adjustments({(gpu, model, ph, tp): corr.adjust(ph) for ph in points})
    frames = []
    for phase, (b, s) in points.items():
        out = adjusted.resolve(gpu, model, phase, tp).evaluate(b, s)
        frames.append(pd.DataFrame({
            "gpu": gpu, "model": model, "tp": tp, "phase": phase,
            "batch_size": b.astype(int), "seq_len": s.astype(int),
            "latency_ms": out.latency_s * 1e3, "energy_j": out.energy_j,
            "avg_power_w": out.power_w, "source": "calibrated", "basis": basis}))
    return pd.concat(frames, ignore_index=True)
