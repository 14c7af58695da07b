"""A resolved, vectorised cost model of one (gpu, model, phase, tp)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dcsim.catalog import GpuSpec, ModelSpec, shapes
from dcsim.errors import DcsimError, Problem
from dcsim.hardware.collectives import alltoall_s, ring_allreduce_s
from dcsim.hardware.dvfs import Dvfs, apply_cap
from dcsim.profiles.fit import GroupFit, log_coords
from dcsim.profiles.work import (
    BF16,
    TRAIN_STATE_BYTES_PER_PARAM,
    Layout,
    allreduce_bytes,
    allreduces_per_run,
    alltoall_bytes,
    alltoalls_per_run,
    weight_bytes_per_gpu,
    work_features,
)

GB = 1e9
NO_ADJUST = (1.0, 0.0, 1.0)  # latency scale, overhead s, power scale: no correction
MEMO_MIN_SIZE = 64  # evaluations of fewer points (single look-ups) are not kept


@dataclass(frozen=True)
class Scaling:
    """Multipliers taking coefficients fitted on one GPU to another (1 on the same GPU)."""

    per_flop: float = 1.0  # seconds per FLOP: source peak / target peak
    per_byte: float = 1.0  # seconds per byte: source bandwidth / target bandwidth
    static_w: float = 1.0  # static power: target TDP / source TDP
    j_per_flop: float = 1.0  # energy per FLOP: (TDP / peak) target over source
    j_per_byte: float = 1.0  # energy per byte: (TDP / bandwidth) target over source

    @classmethod
    def between(cls, src: GpuSpec, dst: GpuSpec) -> Scaling:
        """The multipliers from GPU src to GPU dst (datasheet FLOP/s, bandwidth and TDP)."""
        if src.id == dst.id:
            return cls()
        flops = src.bf16_dense_tflops / dst.bf16_dense_tflops
        bw = src.memory_bandwidth_tbps / dst.memory_bandwidth_tbps
        tdp = dst.tdp_w / src.tdp_w
        return cls(flops, bw, tdp, tdp * flops, tdp * bw)

    def latency_vector(self) -> np.ndarray:
        """Multipliers of the latency coefficients (launch, per layer, matmul FLOPs,
        attention FLOPs, HBM bytes)."""
        return np.array([1.0, 1.0, self.per_flop, self.per_flop, self.per_byte])

    def energy_vector(self) -> np.ndarray:
        """Multipliers of the energy coefficients (static power, matmul and attention FLOPs,
        HBM bytes)."""
        return np.array([self.static_w, self.j_per_flop, self.j_per_flop, self.j_per_byte])


@dataclass(frozen=True)
class Ceilings:
    """Sustained compute (FLOP/s) and memory (byte/s) ceilings of one GPU."""

    flops: float
    bytes_s: float
    source: str


def ceilings_for(g: GpuSpec, src: GpuSpec, table: pd.DataFrame) -> Ceilings:
    """Measured gemm/copy ceilings of `g`; else the datasheet x the efficiency measured on `src`.

    gemm rows: 2 n^3 FLOPs per run (n = seq_len); copy rows: seq_len bytes read and written.
    """
    def measured(gpu_id: str) -> tuple[float, float] | None:
        """FLOP/s and bytes/s measured by the gemm and copy rows of a GPU (None without)."""
        rows = table[table["gpu"] == gpu_id]
        gemm, copy = rows[rows["phase"] == "gemm"], rows[rows["phase"] == "copy"]
        if gemm.empty or copy.empty:
            return None
        f = float((2 * gemm["seq_len"].astype(float) ** 3 / (gemm["latency_ms"] / 1e3)).max())
        b = float((2 * copy["seq_len"].astype(float) / (copy["latency_ms"] / 1e3)).max())
        return f, b

    peak_f, peak_b = g.bf16_dense_tflops * 1e12, g.memory_bandwidth_tbps * 1e12
    own = measured(g.id)
    if own:
        return Ceilings(*own, source=f"measured on {g.id}")
    ref = measured(src.id)
    if ref:
        eff_f = ref[0] / (src.bf16_dense_tflops * 1e12)
        eff_b = ref[1] / (src.memory_bandwidth_tbps * 1e12)
        return Ceilings(peak_f * eff_f, peak_b * eff_b, f"datasheet x efficiency measured on {src.id}")
    return Ceilings(peak_f, peak_b, "datasheet peaks")


@dataclass(frozen=True)
class CostArrays:
    """Latency and energy (and provenance) of many runs, as arrays."""

    latency_s: np.ndarray
    energy_j: np.ndarray  # all GPUs of the group
    power_w: np.ndarray  # average power of the whole group
    provenance: np.ndarray  # "measured" | "interpolated" | "derived"
    limited: np.ndarray  # True where power was held at the limit (the DVFS model slowed it)
    unlimited_latency_s: np.ndarray  # before the limit was applied (the raw measured or
    unlimited_power_w: np.ndarray  # fitted values; equal to the others where not limited)


@dataclass(frozen=True)
class PhaseCost:
    """Latency/energy of `phase` runs of `model` on a tp-group of `gpu`."""

    gpu: GpuSpec
    model: ModelSpec
    phase: str
    tp: int
    fit: GroupFit
    scaling: Scaling
    ceilings: Ceilings
    ranges: tuple[int, int, int, int, int] | None  # measured b/s/tokens ranges; None = derived
    grid: set[tuple[int, int]] | None
    basis: str
    dvfs: Dvfs
    compute_coef: np.ndarray  # the GPU's seconds per feature; FLOP terms are clock-bound
    power_cap_w: float | None = None
    layout: Layout = BF16
    factors: tuple[float, float] = (1.0, 1.0)  # latency, energy: a draw of the profile's
    # error (dcsim.profiles.uncertainty); 1, 1 outside --profile-uncertainty
    adjust: tuple[float, float, float] = NO_ADJUST  # latency scale, overhead s, power
    # scale: a calibration being fitted (dcsim.calibration); see `adjusted`
    source: str = "measured"  # of the group answers come from: measured, published,
    # calibrated (a profile dcsim calibrate wrote), derived (none of this group measured)
    # answers before `adjust` and `factors` kept for the store variants of a calibration's
    # trials, which evaluate the same tables again and again (None: not kept)
    memo: dict | None = field(default=None, compare=False, repr=False)

    @property
    def gpus(self) -> int:
        """GPUs of one replica: tp x ep."""
        return self.tp * self.layout.ep

    @property
    def limit_w(self) -> float:
        """Power limit in force per GPU, W: the cap, else the default limit (TDP)."""
        return self.gpu.tdp_w if self.power_cap_w is None else self.power_cap_w

    def evaluate(self, batch: np.ndarray, seq: np.ndarray) -> CostArrays:
        """Costs of runs with `batch` sequences of length (or context) `seq`."""
        b = np.asarray(batch, dtype=float)
        s = np.asarray(seq, dtype=float)
        keep = self.memo is not None and b.size >= MEMO_MIN_SIZE
        key = (b.shape, b.tobytes(), s.tobytes()) if keep else None
        base = self.memo.get(key) if keep else None
        if base is None:
            base = self._unadjusted(b, s)
            if keep:
                self.memo[key] = base
        held_s, power, prov, limited, latency, group_w = base
        if self.adjust != NO_ADJUST:
            held_s, power = self.adjusted(held_s, power)
        if self.factors != (1.0, 1.0):
            f_lat, f_en = self.factors
            held_s = held_s * f_lat
            power = np.minimum(power * f_en / f_lat, self.limit_w * self.gpus)
        return CostArrays(held_s.copy(), power * held_s, power.copy(), prov.copy(),
                          limited.copy(), latency.copy(), group_w.copy())

    def _unadjusted(self, b: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, ...]:
        """Latency, group power, provenance, limited, unlimited latency and group power
        of the fitted model held at the limit in force (before adjust and factors)."""
        feats = work_features(self.model, self.phase, b, s, self.tp, self.layout)
        coords = log_coords(b, s)
        lat_ratio, e_ratio = self.fit.residual_ratios(coords)
        compute_s = feats @ (self.fit.lat_coef * self.scaling.latency_vector()) * lat_ratio
        roof = np.maximum((feats[:, 2] + feats[:, 3]) / self.ceilings.flops,
                          feats[:, 4] / self.ceilings.bytes_s)
        compute_s = np.maximum(compute_s, roof)
        ecoef = self.fit.energy_coef * self.scaling.energy_vector()
        gpu_j = np.column_stack([compute_s, feats[:, 2:]]) @ ecoef * e_ratio
        comm_s = self._collective_s(b, s)
        latency = compute_s + comm_s
        # GPUs waiting in a collective draw about their static power
        gpu_w = np.maximum((gpu_j + ecoef[0] * comm_s) / latency, self.gpu.idle_power_w)
        flops_s = feats[:, 2:4] @ self.compute_coef[2:4]
        beta = np.clip(flops_s / np.maximum(feats @ self.compute_coef, 1e-15), 0, 1)
        beta = beta * compute_s / latency  # collectives do not speed up with the clock
        # The power controller holds the average at the limit in force: the fit (or a
        # measurement whose energy counter read above the limit) is slowed by DVFS.
        limited = gpu_w > self.limit_w
        held_s, held_w = latency.copy(), gpu_w.copy()
        if limited.any():  # the clocks' interpolation only where it is needed
            k = limited
            held_s[k], held_w[k] = apply_cap(self.limit_w, latency[k], gpu_w[k],
                                             self.fit.clock_at(coords[k]), beta[k], self.dvfs)
        prov = self._provenance(b, s)
        if self.power_cap_w is not None:
            prov[limited] = "derived"
        power = np.minimum(held_w, self.limit_w) * self.gpus
        return held_s, power, prov, limited, latency, gpu_w * self.gpus

    def adjusted(self, latency_s: np.ndarray, power_w: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """A calibration's correction: t' = k t + o (k > 0, o >= 0, so never negative) at
        power P' = clip(c P, idle, limit) x GPUs, so energy' = P' t': a slower engine at
        the same power costs energy in proportion, and no answer leaves the GPU's range."""
        k, o, c = self.adjust
        lo, hi = self.gpu.idle_power_w * self.gpus, self.limit_w * self.gpus
        return k * latency_s + o, np.clip(c * power_w, lo, hi)

    def _collective_s(self, b: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Tensor-parallel all-reduces (where tp is not measured) and expert-parallel
        all-to-alls over the scale-up link (alpha-beta model)."""
        out = np.zeros_like(b)
        bw, alpha = self.gpu.scaleup_bandwidth_gbyte_s * GB, self.gpu.link_latency_us * 1e-6
        m, ep = self.model, self.layout.ep
        if self.tp > 1 and self.ranges is None:
            per = ring_allreduce_s(allreduce_bytes(m, self.phase, b, s, ep), self.tp, bw, alpha)
            out = out + allreduces_per_run(m, self.phase) * per
        if ep > 1:
            per = alltoall_s(alltoall_bytes(m, self.phase, b, s, self.gpus), self.gpus, bw,
                             alpha)
            out = out + alltoalls_per_run(m, self.phase) * per
        return out

    def _provenance(self, b: np.ndarray, s: np.ndarray) -> np.ndarray:
        out = np.full(b.shape, "derived", dtype=object)
        if self.ranges is None:
            return out
        bmin, bmax, smin, smax, tmax = self.ranges
        inside = (b >= bmin) & (b <= bmax) & (s >= smin) & (s <= smax) & (b * s <= tmax)
        out[inside] = "interpolated"
        if self.grid:
            hit = np.array([(int(x), int(y)) in self.grid for x, y in zip(b, s, strict=True)])
            out[hit & inside] = "measured"
        return out

    def memory_needed_gb(self, batch: int, seq: int) -> float:
        """Per-GPU memory for weights (and training state) plus the KV cache, GB."""
        if self.phase == "train":
            return shapes.total_params(self.model) * TRAIN_STATE_BYTES_PER_PARAM / self.tp / GB
        kv = batch * float(shapes.kv_bytes(self.model, seq, self.layout.kv_bytes))
        return (weight_bytes_per_gpu(self.model, self.tp, self.layout) + kv / self.gpus) / GB

    def check_fits(self, batch: int, seq: int) -> None:
        """Refuse a run whose weights, KV cache and activations exceed the GPUs' memory."""
        need = self.memory_needed_gb(batch, seq)
        if need > self.gpu.memory_gb:
            raise DcsimError(Problem(
                "tp", self.tp,
                f"enough GPUs for {self.model.id} {self.phase} (batch {batch} x {seq}): needs "
                f"{need:.1f} GB per GPU, {self.gpu.id} has {self.gpu.memory_gb:g} GB",
            ))
