"""Iteration costs of one serving deployment, tabulated from the profile store.

The store answers (batch, length) points; the engine needs millions of them, so
each deployment evaluates decode cost for every batch size 1..max_num_seqs on a
dense geometric grid of KV context (and prefill cost for 1..64 prompts over prompt
lengths), then keeps per batch size only the nodes that linear interpolation needs
to stay within TOLERANCE of the store (a few 1e-5 in practice, measured lengths
always kept). Between nodes costs are linear in length, which also gives a decode
block of many steps a closed form (see Table.block).

A mixed iteration (prefill chunks and decode tokens together) reads the weights
once: its time is prefill time + decode time - one weight read (weights / measured
memory ceiling), and its energy is credited the same interval at decode power.
"""

from __future__ import annotations

from bisect import bisect_right
from math import ceil, sqrt

import numpy as np

from dcsim.catalog import shapes
from dcsim.profiles.cost import PhaseCost
from dcsim.profiles.store import ProfileStore

MAX_PREFILL_ROWS = 64  # prefill tables cover 1..64 prompts in one iteration
DENSE_NODES = 1500  # geometric lengths evaluated before thinning
TOLERANCE = 1e-5  # relative error allowed by linear interpolation between kept nodes


def context_nodes(max_ctx: int, extra: tuple[int, ...] = ()) -> np.ndarray:
    """Dense geometric grid 1..max_ctx with every power of two and `extra` values included."""
    geo = np.rint(np.geomspace(1, max(max_ctx, 2), DENSE_NODES))
    pow2 = 2.0 ** np.arange(0, int(np.log2(max(max_ctx, 2))) + 1)
    keep = [x for x in extra if x <= max_ctx]
    return np.unique(np.concatenate([geo, pow2, keep, [max_ctx]]))


def adaptive_nodes(x: np.ndarray, ys: list[np.ndarray], pinned: np.ndarray) -> np.ndarray:
    """Indices of the dense nodes to keep so linear interpolation stays within TOLERANCE.

    Linear interpolation over a gap h errs by about |f''| h^2 / 8, so the node density
    must be sqrt(|f''| / (8 tol |f|)); nodes go where the cumulative density crosses
    an integer. Pinned nodes (measured lengths, ends) are always kept.
    """
    density = np.zeros(x.size)
    for y in ys:
        d1 = np.diff(y) / np.diff(x)
        d2 = np.zeros(x.size)
        d2[1:-1] = 2 * np.diff(d1) / (x[2:] - x[:-2])
        density = np.maximum(density, np.sqrt(np.abs(d2) / (8 * TOLERANCE * np.abs(y))))
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (density[1:] + density[:-1]) * np.diff(x))])
    marks = np.searchsorted(cum, np.arange(1, int(cum[-1]) + 1))
    return np.unique(np.concatenate([[0, x.size - 1], marks, pinned]).astype(int))


class Table:
    """Costs for batch sizes 1..rows over lengths; linear between per-row adaptive nodes."""

    def __init__(self, cost: PhaseCost, rows: int, dense: np.ndarray) -> None:
        b = np.repeat(np.arange(1, rows + 1, dtype=float), dense.size)
        out = cost.evaluate(b, np.tile(dense, rows))
        lat = out.latency_s.reshape(rows, dense.size)
        en = out.energy_j.reshape(rows, dense.size)
        grid = {s for _, s in cost.grid} if cost.grid else set()
        pinned = np.flatnonzero(np.isin(dense, list(grid)))
        self.rows: list[tuple[list[float], list[float], list[float], list[float], list[float]]] = []
        for r in range(rows):
            keep = adaptive_nodes(dense, [lat[r], en[r]], pinned)
            x, lt, e = dense[keep], lat[r, keep], en[r, keep]
            dx = np.diff(x)
            self.rows.append((x.tolist(), lt.tolist(), e.tolist(), (np.diff(lt) / dx).tolist(),
                              (np.diff(e) / dx).tolist()))

    def at(self, batch: int, length: float) -> tuple[float, float]:
        """Latency and energy of one run (batch in 1..rows; length clamped to the grid)."""
        x, lat, en, dl, de = self.rows[batch - 1]
        last = len(x) - 1
        if length >= x[last]:
            return lat[last], en[last]
        i = bisect_right(x, length) - 1
        if i < 0:
            return lat[0], en[0]
        f = length - x[i]
        return lat[i] + f * dl[i], en[i] + f * de[i]

    def block(self, batch: int, ctx_sum: int, k: int) -> DecodeBlock:
        """k decode steps of `batch` sequences whose contexts sum to ctx_sum at step 0.

        The mean context grows by one token per step and costs are linear between
        nodes, so each stretch of steps inside one segment has a closed form.
        """
        x, lat, en, dl, de = self.rows[batch - 1]
        last = len(x) - 1
        x0 = ctx_sum / batch
        i = max(bisect_right(x, x0) - 1, 0)
        segs: list[tuple[int, int, float, float, float, float, float, float]] = []
        j, t, e = 0, 0.0, 0.0
        while j < k:
            xj = x0 + j
            while i < last and x[i + 1] <= xj:
                i += 1
            if i >= last:  # past the grid: constant at the last node
                n, a, da, b, db = k - j, lat[last], 0.0, en[last], 0.0
            else:
                f = xj - x[i] if xj > x[i] else 0.0
                da, db = dl[i], de[i]
                a, b = lat[i] + f * da, en[i] + f * db
                n = ceil(x[i + 1] - xj)
                n = 1 if n < 1 else (k - j if n > k - j else n)
            segs.append((j, n, a, da, b, db, t, e))
            half = n * (n - 1) / 2
            t += n * a + da * half
            e += n * b + db * half
            j += n
        return DecodeBlock(segs, k, t, e)


class DecodeBlock:
    """Cumulative time and energy of a run of decode steps (see Table.block)."""

    __slots__ = ("energy_j", "k", "segs", "time_s")

    def __init__(self, segs: list, k: int, time_s: float, energy_j: float) -> None:
        self.segs, self.k, self.time_s, self.energy_j = segs, k, time_s, energy_j

    def steps_done(self, elapsed: float) -> int:
        """How many steps have ended `elapsed` seconds into the block."""
        for j0, n, a, da, _, _, t0, _ in self.segs:
            t_end = t0 + n * a + da * n * (n - 1) / 2
            if t_end <= elapsed:
                continue
            rem = elapsed - t0
            # largest m with m a + da m (m - 1) / 2 <= rem
            if da > 0:
                m = int((-(a - da / 2) + sqrt((a - da / 2) ** 2 + 2 * da * rem)) / da)
            else:
                m = int(rem / a) if a > 0 else n
            m = min(max(m, 0), n)
            while m > 0 and m * a + da * m * (m - 1) / 2 > rem:
                m -= 1
            while m < n and (m + 1) * a + da * (m + 1) * m / 2 <= rem:
                m += 1
            return j0 + m
        return self.k

    def time_after(self, steps: int) -> float:
        """Seconds from the block's start to the end of step `steps` (1-based count)."""
        return self._cum(steps, 2, 3, 6)

    def energy_after(self, steps: int) -> float:
        """Energy of the first `steps` steps, J."""
        return self._cum(steps, 4, 5, 7)

    def _cum(self, steps: int, ia: int, id_: int, i0: int) -> float:
        if steps >= self.k:
            return self.time_s if ia == 2 else self.energy_j
        for seg in self.segs:
            j0, n = seg[0], seg[1]
            if steps <= j0 + n:
                m = steps - j0
                return seg[i0] + m * seg[ia] + seg[id_] * m * (m - 1) / 2
        return self.time_s if ia == 2 else self.energy_j


class IterationCosts:
    """Prefill, decode and mixed iteration costs of one (gpu, model, tp) deployment."""

    def __init__(self, store: ProfileStore, gpu: str, model: str, tp: int, max_num_seqs: int,
                 max_prompt: int, max_ctx: int, power_cap_w: float | None = None) -> None:
        self.decode_cost = store.resolve(gpu, model, "decode", tp, power_cap_w)
        self.prefill_cost = store.resolve(gpu, model, "prefill", tp, power_cap_w)
        self.decode = Table(self.decode_cost, max_num_seqs, context_nodes(max_ctx, _lengths(
            self.decode_cost)))
        rows = min(max_num_seqs, MAX_PREFILL_ROWS)
        self.prefill = Table(self.prefill_cost, rows, context_nodes(max_prompt, _lengths(
            self.prefill_cost)))
        self.prefill_rows = rows
        self._inside = {"decode": _inside_bounds(self.decode_cost, max_num_seqs),
                        "prefill": _inside_bounds(self.prefill_cost, rows)}
        per_gpu_weights = shapes.weight_bytes(self.decode_cost.model) / tp
        self.weight_read_s = per_gpu_weights / self.decode_cost.ceilings.bytes_s
        self.idle_power_w = self.decode_cost.gpu.idle_power_w * tp

    def prefill_at(self, n: int, mean_len: float) -> tuple[float, float]:
        if n <= self.prefill_rows:
            return self.prefill.at(n, mean_len)
        out = self.prefill_cost.evaluate(np.array([float(n)]), np.array([mean_len]))
        return float(out.latency_s[0]), float(out.energy_j[0])

    def mixed(self, n_prefill: int, mean_chunk: float, n_decode: int, mean_ctx: float
              ) -> tuple[float, float]:
        """Time and energy of an iteration with prefill chunks and (maybe) decode tokens."""
        t, e = self.prefill_at(n_prefill, mean_chunk)
        if n_decode == 0:
            return t, e
        td, ed = self.decode.at(n_decode, mean_ctx)
        overlap = min(self.weight_read_s, t, td)
        return t + td - overlap, e + ed - overlap * ed / td

    def provenance(self, phase: str, batch: int, length: float) -> str:
        """measured / interpolated / derived class of a lookup."""
        bounds = self._inside[phase]
        if batch >= len(bounds) or bounds[batch] is None:
            return "derived"
        lo, hi = bounds[batch]
        if not lo <= length <= hi:
            return "derived"
        grid = (self.decode_cost if phase == "decode" else self.prefill_cost).grid
        if grid and float(length).is_integer() and (batch, int(length)) in grid:
            return "measured"
        return "interpolated"


def _lengths(cost: PhaseCost) -> tuple[int, ...]:
    return tuple(sorted({s for _, s in cost.grid})) if cost.grid else ()


def _inside_bounds(cost: PhaseCost, rows: int) -> list[tuple[float, float] | None]:
    """Per batch size, the length interval inside the measured ranges (None: none).

    Under a power cap every answer is counted as derived (the DVFS model shaped it),
    which errs on the side of less trust where the cap does not bind.
    """
    out: list[tuple[float, float] | None] = [None] * (rows + 1)
    if cost.ranges is None or cost.power_cap_w is not None:
        return out
    bmin, bmax, smin, smax, tmax = cost.ranges
    for b in range(max(bmin, 1), min(bmax, rows) + 1):
        hi = min(smax, tmax / b)
        out[b] = (smin, hi) if hi >= smin else None
    return out
