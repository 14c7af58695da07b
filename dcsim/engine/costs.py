"""Iteration costs of one serving deployment, tabulated from the profile store.

The store answers (batch, length) points; the engine needs millions of them, so
each deployment tabulates decode cost for every batch size 1..max_num_seqs over a
dense geometric grid of KV context (nodes about 1.5 % apart, plus every power of
two so measured points are nodes), and prefill cost for 1..K prompts over a grid
of prompt lengths. Between nodes costs are linear in context, as the decode
physics is; the tabulation error is far below the store's own error.

A mixed iteration (prefill chunks and decode tokens together) reads the weights
once: its time is prefill time + decode time - one weight read (weights / measured
memory ceiling), and its energy is credited the same interval at decode power.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from dcsim.catalog import shapes
from dcsim.profiles.cost import PhaseCost
from dcsim.profiles.store import ProfileStore

MAX_PREFILL_ROWS = 64  # prefill tables cover 1..64 prompts in one iteration


def context_nodes(max_ctx: int) -> np.ndarray:
    """Geometric grid 1..max_ctx with every power of two included."""
    geo = np.rint(np.geomspace(1, max(max_ctx, 2), 700))
    pow2 = 2.0 ** np.arange(0, int(np.log2(max(max_ctx, 2))) + 1)
    return np.unique(np.concatenate([geo, pow2, [max_ctx]]))


@dataclass
class Table:
    """Costs on rows (batch size) x nodes (length); linear between nodes."""

    nodes: np.ndarray
    node_list: list[float]
    latency_s: np.ndarray  # (rows, nodes)
    energy_j: np.ndarray

    def __post_init__(self) -> None:
        # plain lists: scalar lookups in the hot loop are ~5x faster than numpy indexing
        self._lat_rows = self.latency_s.tolist()
        self._en_rows = self.energy_j.tolist()

    @classmethod
    def build(cls, cost: PhaseCost, rows: int, nodes: np.ndarray) -> Table:
        b = np.repeat(np.arange(1, rows + 1, dtype=float), nodes.size)
        s = np.tile(nodes, rows)
        out = cost.evaluate(b, s)
        shape = (rows, nodes.size)
        return cls(nodes, nodes.tolist(), out.latency_s.reshape(shape), out.energy_j.reshape(shape))

    def at(self, batch: int, length: float) -> tuple[float, float]:
        """Latency and energy of one run (batch in 1..rows, length clamped to the grid)."""
        nl = self.node_list
        i = min(max(bisect_right(nl, length) - 1, 0), len(nl) - 2)
        x0, x1 = nl[i], nl[i + 1]
        f = min(max((length - x0) / (x1 - x0), 0.0), 1.0)
        lat, en = self._lat_rows[batch - 1], self._en_rows[batch - 1]
        return lat[i] + f * (lat[i + 1] - lat[i]), en[i] + f * (en[i + 1] - en[i])

    def series(self, batch: int, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Latency and energy for many lengths at one batch size (vectorised)."""
        return (np.interp(lengths, self.nodes, self.latency_s[batch - 1]),
                np.interp(lengths, self.nodes, self.energy_j[batch - 1]))


class IterationCosts:
    """Prefill, decode and mixed iteration costs of one (gpu, model, tp) deployment."""

    def __init__(self, store: ProfileStore, gpu: str, model: str, tp: int, max_num_seqs: int,
                 max_prompt: int, max_ctx: int) -> None:
        self.decode_cost = store.resolve(gpu, model, "decode", tp)
        self.prefill_cost = store.resolve(gpu, model, "prefill", tp)
        self.decode = Table.build(self.decode_cost, max_num_seqs, context_nodes(max_ctx))
        rows = min(max_num_seqs, MAX_PREFILL_ROWS)
        self.prefill = Table.build(self.prefill_cost, rows, context_nodes(max_prompt))
        self.prefill_rows = rows
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
        """measured-grid / interpolated / derived class of a lookup."""
        cost = self.decode_cost if phase == "decode" else self.prefill_cost
        if cost.ranges is None:
            return "derived"
        bmin, bmax, smin, smax, tmax = cost.ranges
        inside = bmin <= batch <= bmax and smin <= length <= smax and batch * length <= tmax
        if not inside:
            return "derived"
        exact = cost.grid is not None and float(length).is_integer() and (
            (batch, int(length)) in cost.grid)
        return "measured" if exact else "interpolated"
