"""Iteration costs of one serving deployment, tabulated from the profile store.

The store answers (batch, length) points; the engine needs millions of them, so
each deployment evaluates decode cost for every batch size 1..max_num_seqs on a
dense geometric grid of KV context (and prefill cost for 1..64 prompts over prompt
lengths), then keeps per batch size only the nodes that linear interpolation needs
to stay within TOLERANCE of the store (a few 1e-5 in practice, measured lengths
always kept). Between nodes costs are linear in length; a decode block of many
steps then has a closed form (see Table).

A mixed iteration (prefill chunks and decode tokens together) reads the weights
once: its time is prefill time + decode time - one weight read (weights / measured
memory ceiling), and its energy is credited the same interval at decode power.
"""

from __future__ import annotations

from bisect import bisect_right
from math import sqrt

import numpy as np

from dcsim.profiles.cost import PhaseCost
from dcsim.profiles.store import ProfileStore
from dcsim.profiles.work import BF16, Layout, weight_bytes_per_gpu

# classes of a cost look-up, as runs count them (profile_provenance); calibrated only
# where a deployment's profile came from dcsim calibrate
PROVENANCE = ("measured", "interpolated", "derived", "power_limited")
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


class _Row:
    """One batch size: nodes, values, slopes and prefix integrals of latency and energy."""

    __slots__ = ("el", "gl", "ll", "sl", "x")

    def __init__(self, x: np.ndarray, lat: np.ndarray, en: np.ndarray) -> None:
        dx = np.diff(x)
        self.x = x.tolist()
        self.ll = (lat.tolist(), en.tolist())  # values at the nodes
        self.sl = ((np.diff(lat) / dx).tolist(), (np.diff(en) / dx).tolist())  # slopes
        # prefix integrals from the first node (trapezoids are exact for linear pieces)
        self.gl = tuple(np.concatenate([[0.0], np.cumsum((v[1:] + v[:-1]) / 2 * dx)]).tolist()
                        for v in (lat, en))
        self.el = len(self.x) - 1

    def value(self, q: int, length: float) -> float:
        """Linear interpolation (held flat outside the nodes) of quantity q (0 time, 1 energy)."""
        x, last = self.x, self.el
        if length >= x[last]:
            return self.ll[q][last]
        i = bisect_right(x, length) - 1
        if i < 0:
            return self.ll[q][0]
        return self.ll[q][i] + (length - x[i]) * self.sl[q][i]

    def integrals(self, upto: float) -> tuple[float, float]:
        """Both integrals (time, energy) from the first node to `upto`: one search."""
        x, last, y, g, sl = self.x, self.el, self.ll, self.gl, self.sl
        if upto <= x[0]:
            d = upto - x[0]
            return d * y[0][0], d * y[1][0]
        if upto >= x[last]:
            d = upto - x[last]
            return g[0][last] + d * y[0][last], g[1][last] + d * y[1][last]
        i = bisect_right(x, upto) - 1
        d = upto - x[i]
        h = 0.5 * d * d
        return (g[0][i] + d * y[0][i] + sl[0][i] * h, g[1][i] + d * y[1][i] + sl[1][i] * h)

    def integral(self, q: int, upto: float) -> float:
        """Integral of quantity q from the first node to `upto` (negative below it)."""
        x, last, y = self.x, self.el, self.ll[q]
        if upto <= x[0]:
            return (upto - x[0]) * y[0]
        if upto >= x[last]:
            return self.gl[q][last] + (upto - x[last]) * y[last]
        i = bisect_right(x, upto) - 1
        d = upto - x[i]
        return self.gl[q][i] + d * y[i] + 0.5 * self.sl[q][i] * d * d

    def solve(self, q: int, target: float) -> float:
        """The length at which integral(q, .) reaches target (the integral only grows)."""
        x, last, y, g = self.x, self.el, self.ll[q], self.gl[q]
        if target <= 0.0:
            return x[0] + target / y[0]
        if target >= g[last]:
            return x[last] + (target - g[last]) / y[last]
        i = bisect_right(g, target) - 1
        a, b, c = 0.5 * self.sl[q][i], y[i], g[i] - target  # a d^2 + b d + c = 0
        d = -c / b if abs(a) < 1e-300 else (-b + sqrt(b * b - 4 * a * c)) / (2 * a)
        return x[i] + d


class Table:
    """Costs for batch sizes 1..rows over lengths; linear between per-row adaptive nodes.

    One run at length x costs the mean of the linear pieces over [x - 1/2, x + 1/2]:
    as exact as the pieces themselves, and a run of decode steps, whose mean context
    grows by one token per step, then telescopes to a difference of prefix integrals.
    """

    def __init__(self, cost: PhaseCost, rows: int, dense: np.ndarray) -> None:
        b = np.repeat(np.arange(1, rows + 1, dtype=float), dense.size)
        out = cost.evaluate(b, np.tile(dense, rows))
        lat = out.latency_s.reshape(rows, dense.size)
        en = out.energy_j.reshape(rows, dense.size)
        grid = {s for _, s in cost.grid} if cost.grid else set()
        pinned = np.flatnonzero(np.isin(dense, list(grid)))
        self.rows: list[_Row] = []
        # per batch size (index 1..rows): the length span where power was held at the limit
        self.limited: list[tuple[float, float] | None] = [None] * (rows + 1)
        held = out.limited.reshape(rows, dense.size)
        for r in np.flatnonzero(held.any(axis=1)):
            at = dense[held[r]]
            self.limited[r + 1] = (float(at.min()), float(at.max()))
        for r in range(rows):
            keep = adaptive_nodes(dense, [lat[r], en[r]], pinned)
            self.rows.append(_Row(dense[keep], lat[r, keep], en[r, keep]))

    def point(self, batch: int, length: float) -> tuple[float, float]:
        """Latency and energy of one run, read off the linear pieces (exact on nodes)."""
        row = self.rows[batch - 1]
        return row.value(0, length), row.value(1, length)

    def at(self, batch: int, length: float) -> tuple[float, float]:
        """Latency and energy of one decode step (its unit interval's mean; batch in 1..rows)."""
        row = self.rows[batch - 1]
        t0, e0 = row.integrals(length - 0.5)
        t1, e1 = row.integrals(length + 0.5)
        return t1 - t0, e1 - e0

    def block(self, batch: int, ctx_sum: int, k: int) -> DecodeBlock:
        """k decode steps of `batch` sequences whose contexts sum to ctx_sum at step 0."""
        return DecodeBlock(self.rows[batch - 1], ctx_sum / batch - 0.5, k)


class DecodeBlock:
    """Cumulative time and energy of a run of k decode steps (see Table)."""

    __slots__ = ("e0", "energy_j", "k", "lo", "row", "t0", "time_s")

    def __init__(self, row: _Row, lo: float, k: int) -> None:
        self.row, self.lo, self.k = row, lo, k
        self.t0, self.e0 = row.integrals(lo)
        t1, e1 = row.integrals(lo + k)
        self.time_s, self.energy_j = t1 - self.t0, e1 - self.e0

    def time_after(self, steps: int) -> float:
        """Seconds from the block's start to the end of step `steps` (1-based count)."""
        return self.time_s if steps >= self.k else self.row.integral(0, self.lo + steps) - self.t0

    def energy_after(self, steps: int) -> float:
        """Energy of the first `steps` steps, J."""
        return self.energy_j if steps >= self.k else (
            self.row.integral(1, self.lo + steps) - self.e0)

    def steps_done(self, elapsed: float) -> int:
        """How many steps have ended `elapsed` seconds into the block."""
        m = int(self.row.solve(0, self.t0 + elapsed) - self.lo)
        m = min(max(m, 0), self.k)
        while m < self.k and self.time_after(m + 1) <= elapsed:
            m += 1
        while m > 0 and self.time_after(m) > elapsed:
            m -= 1
        return m


class IterationCosts:
    """Prefill, decode and mixed iteration costs of one (gpu, model, tp) deployment."""

    def __init__(self, store: ProfileStore, gpu: str, model: str, tp: int, max_num_seqs: int,
                 max_prompt: int, max_ctx: int, power_cap_w: float | None = None,
                 layout: Layout = BF16) -> None:
        self.decode_cost = store.resolve(gpu, model, "decode", tp, power_cap_w, layout)
        self.prefill_cost = store.resolve(gpu, model, "prefill", tp, power_cap_w, layout)
        self.decode = Table(self.decode_cost, max_num_seqs, context_nodes(max_ctx, _lengths(
            self.decode_cost)))
        rows = min(max_num_seqs, MAX_PREFILL_ROWS)
        self.prefill = Table(self.prefill_cost, rows, context_nodes(max_prompt, _lengths(
            self.prefill_cost)))
        self.prefill_rows = rows
        # per phase: batch size -> the length span held at the power limit (most: none)
        self._held = {ph: {b: span for b, span in enumerate(t.limited) if span is not None}
                      for ph, t in (("decode", self.decode), ("prefill", self.prefill))}
        self._calibrated = {"decode": self.decode_cost.source == "calibrated",
                            "prefill": self.prefill_cost.source == "calibrated"}
        self.classes = PROVENANCE + (("calibrated",) if any(self._calibrated.values()) else ())
        self._inside = {"decode": _inside_bounds(self.decode_cost, max_num_seqs),
                        "prefill": _inside_bounds(self.prefill_cost, rows)}
        self._measured: dict[str, dict[int, set[int]]] = {}  # per phase: batch -> lengths
        for phase, cost in (("decode", self.decode_cost), ("prefill", self.prefill_cost)):
            grid: dict[int, set[int]] = {}
            for b, length in cost.grid or ():
                grid.setdefault(int(b), set()).add(int(length))
            self._measured[phase] = grid
        per_gpu_weights = weight_bytes_per_gpu(self.decode_cost.model, tp, layout)
        self.weight_read_s = per_gpu_weights / self.decode_cost.ceilings.bytes_s
        self.idle_power_w = self.decode_cost.gpu.idle_power_w * tp * layout.ep

    def prefill_at(self, n: int, mean_len: float) -> tuple[float, float]:
        """Latency (s) and energy (J) of prefilling n prompts of mean length mean_len in one
        run."""
        if n <= self.prefill_rows:
            return self.prefill.point(n, mean_len)
        out = self.prefill_cost.evaluate(np.array([float(n)]), np.array([mean_len]))
        return float(out.latency_s[0]), float(out.energy_j[0])

    def over_context(self, done: int, chunk: int) -> tuple[float, float]:
        """Extra time (s) and energy (J) of prefilling `chunk` tokens that follow `done`
        tokens already in the KV cache (cached, or an earlier chunk), over prefilling
        them as a prompt of their own: the attention of the new tokens over the old.

        With prefill cost P(L) = fixed + linear x L + attention x L^2 / 2 (the work
        model), P(d + c) - P(d) - P(c) + P(0) = attention x d x c: read off the one-
        prompt table, so the measured points shape it; P(0) is taken at one token."""
        if done <= 0:
            return 0.0, 0.0
        p = self.prefill.point
        (t1, e1), (t2, e2), (t3, e3), (t0, e0) = (
            p(1, done + chunk), p(1, done), p(1, chunk), p(1, 1))
        return max(t1 - t2 - t3 + t0, 0.0), max(e1 - e2 - e3 + e0, 0.0)

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
        """measured / interpolated / derived class of a lookup (calibrated inside a
        calibrated profile's ranges); power_limited where the power controller held the
        run at the limit (its time is the DVFS model's)."""
        span = self._held[phase].get(batch)
        if span is not None and span[0] <= length <= span[1]:
            return "power_limited"
        bounds = self._inside[phase]
        if batch >= len(bounds):
            return "derived"
        bound = bounds[batch]
        if bound is None or not bound[0] <= length <= bound[1]:
            return "derived"
        if self._calibrated[phase]:
            return "calibrated"
        # a float length equal to a measured whole one hashes alike
        return "measured" if length in self._measured[phase].get(batch, ()) else "interpolated"


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
