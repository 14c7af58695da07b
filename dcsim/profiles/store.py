"""The one query API for latency, energy and power of model phases on GPUs.

``ProfileStore.resolve`` picks the measured group an answer is built from and
returns a vectorised ``PhaseCost``; ``ProfileStore.query`` answers one point.
Resolution order, most to least trusted:

1. the same (gpu, model, tp) measured: *measured* on a grid point, *interpolated*
   inside the measured batch, length and token ranges, *derived* outside them;
2. the same GPU, another measured model: a layer slice of the same model
   (``llama-3.1-70b/8L`` for ``llama-3.1-70b``) or the nearest measured size, its
   fitted seconds per FLOP and per byte applied to the target's work: *derived*;
3. tensor parallelism not measured: work split over ``tp`` GPUs plus ring
   all-reduces over the scale-up link (alpha-beta model): *derived*;
4. a GPU not measured: the nearest measured GPU's coefficients scaled by the
   ratio of datasheet FLOP/s, bandwidth and TDP: *derived*.

Derived latencies never beat the roofline of the target GPU's ceilings.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from dcsim.catalog import Catalog, GpuSpec, ModelSpec, shapes
from dcsim.errors import DcsimError, Problem
from dcsim.hardware.dvfs import dvfs_of
from dcsim.profiles.cost import PhaseCost, Scaling, ceilings_for
from dcsim.profiles.fit import GroupFit, fit_coefficients, with_residuals
from dcsim.profiles.table import PHASES, builtin_dir, normalize, read_profile_csv
from dcsim.profiles.uncertainty import Spread, draw, quantile_factors, spread_class
from dcsim.profiles.work import BF16, Layout, layout_notes, work_features


@dataclass(frozen=True)
class ProfileAnswer:
    """One answer of the store, with where it came from."""

    gpu: str
    model: str
    phase: str
    tp: int
    batch_size: int
    seq_len: int
    latency_ms: float
    energy_j: float
    power_w: float
    provenance: str
    basis: str
    power_cap_w: float | None = None
    power_limit_w: float = 0.0  # the limit in force for the tp group (cap or TDP, x tp)
    limited: bool = False  # power held at the limit: latency slowed by the DVFS model
    unlimited_latency_ms: float = 0.0  # the answer before the limit was applied
    unlimited_power_w: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """The answer as a JSON-able dict."""
        return asdict(self)


class ProfileStore:
    """Profile tables from every source, keyed by catalog GPU ids."""

    def __init__(self, table: pd.DataFrame, catalog: Catalog) -> None:
        self.catalog = catalog
        table = table.copy()
        table["gpu"] = [self._gpu_id(g, i) for i, g in enumerate(table["gpu"])]
        for i, m in enumerate(table["model"]):
            if table.at[i, "phase"] in PHASES:
                self._model_ok(m, i)
        no_energy = table.index[table["energy_j"].isna()]
        if len(no_energy):
            raise DcsimError([Problem(f"row {i + 2}.energy_j", None, "a measured energy: this "
                                      "row has none (a CPU profile is for timing checks only)")
                              for i in no_energy[:10]])
        self.table = calibrated_first(table)
        self._all_rows = table  # calibrated groups' measured rows too: pooled coefficients
        self._fits: dict[tuple[str, ...], GroupFit] = {}
        self._resolved: dict[tuple[str, str, str, int, float | None, Layout], PhaseCost] = {}
        # unadjusted answers of adjusted costs, shared by with_adjustments variants
        self._memos: dict[tuple[str, str, str, int, float | None, Layout], dict] = {}
        self._pooled: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._measured: dict[float | None, pd.DataFrame] = {}
        self.uncertainty_seed: int | None = None  # set: answers carry a draw of their error
        self.uncertainty_quantile: float | None = None  # set: answers at that quantile of it
        # (gpu, model, phase, tp) -> latency scale, overhead s, power scale (a fit's trial)
        self.adjustments: dict[tuple[str, str, str, int], tuple[float, float, float]] = {}

    @classmethod
    def from_files(
        cls, catalog: Catalog, files: Iterable[str | Path] = (), builtin: bool = True
    ) -> ProfileStore:
        """Built-in H200 measurements plus user files; later files win on equal keys."""
        tables = [read_profile_csv(builtin_dir() / "points.csv")] if builtin else []
        tables += [read_profile_csv(f) for f in files]
        if not tables:
            raise DcsimError(Problem("profiles", [], "at least one profile table"))
        merged = pd.concat(tables, ignore_index=True)
        key = ["gpu", "model", "tp", "phase", "batch_size", "seq_len", "power_cap_w"]
        merged = merged.drop_duplicates(subset=key, keep="last").reset_index(drop=True)
        return cls(normalize(merged), catalog)

    def _gpu_id(self, name: str, row: int) -> str:
        try:
            return self.catalog.gpu(name).id
        except DcsimError:
            raise DcsimError(Problem(f"row {row + 2}.gpu", name, "a GPU in the catalog "
                                     f"(id or driver name): {', '.join(self.catalog.gpus)}")) from None

    def _model_ok(self, name: str, row: int) -> None:
        try:
            self.catalog.model(name)
        except DcsimError:
            raise DcsimError(Problem(f"row {row + 2}.model", name, "a model in the catalog "
                                     f"(or a slice NAME/<n>L): {', '.join(self.catalog.models)}")) from None

    # -- what is measured -------------------------------------------------
    def measured(self, cap: float | None = None) -> pd.DataFrame:
        """One row per measured group (at the default limit, or at `cap`): ranges and size."""
        if cap not in self._measured:
            self._measured[cap] = self._group_summary(cap)
        return self._measured[cap]

    def _group_summary(self, cap: float | None) -> pd.DataFrame:
        t = self.table
        rows = t[t["phase"].isin(PHASES) & _cap_mask(t, cap)]
        rows = rows.assign(tokens=rows["batch_size"] * rows["seq_len"])
        return (
            rows.groupby(["gpu", "model", "tp", "phase"], sort=True)
            .agg(points=("latency_ms", "size"), source=("source", "first"),
                 batch_min=("batch_size", "min"), batch_max=("batch_size", "max"),
                 seq_min=("seq_len", "min"), seq_max=("seq_len", "max"),
                 tokens_max=("tokens", "max"))
            .reset_index()
        )

    def group_rows(self, gpu: str, model: str, phase: str, tp: int, cap: float | None = None
                   ) -> pd.DataFrame:
        """The profile rows of one (gpu, model, phase, tp, power_cap_w) group."""
        t = self.table
        sel = (t["gpu"] == gpu) & (t["model"] == model) & (t["phase"] == phase) & (t["tp"] == tp)
        return t[sel & _cap_mask(t, cap)]

    def _clock_fraction(self, rows: pd.DataFrame) -> np.ndarray | None:
        """Measured SM clock over the highest clock seen on that GPU (None if not recorded)."""
        if "sm_clock_mhz" not in rows or rows["sm_clock_mhz"].isna().any() or rows.empty:
            return None
        t = self.table
        top = t.loc[t["gpu"] == rows["gpu"].iloc[0], "sm_clock_mhz"].max()
        return (rows["sm_clock_mhz"] / top).to_numpy(float)

    def _group_data(self, rows: pd.DataFrame) -> tuple[np.ndarray, ...]:
        b, s = rows["batch_size"].to_numpy(float), rows["seq_len"].to_numpy(float)
        feats = np.vstack([
            work_features(self.catalog.model(m), p, bb, ss, int(tp))
            for m, p, bb, ss, tp in zip(rows["model"], rows["phase"], b, s, rows["tp"],
                                        strict=True)
        ])
        return feats, b, s, rows["latency_ms"].to_numpy() / 1e3, rows["energy_j"].to_numpy()

    def pooled_coefficients(self, gpu: str, phase: str) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients fitted on every model measured on `gpu` at tp=1: the hardware's costs.

        Within one model the weight bytes are constant, so only several models together
        separate per-byte, per-FLOP and per-layer costs; derivations use these.
        """
        if (gpu, phase) not in self._pooled:
            t = self._all_rows
            rows = t[(t["gpu"] == gpu) & (t["phase"] == phase) & (t["tp"] == 1)
                     & t["power_cap_w"].isna()]
            if (rows["source"] != "calibrated").any():  # the hardware's costs: measured
                rows = rows[rows["source"] != "calibrated"]
            feats, _, _, lat, energy = self._group_data(rows)
            self._pooled[(gpu, phase)] = fit_coefficients(feats, lat, energy)
        return self._pooled[(gpu, phase)]

    def group_fit(self, gpu: str, model: str, phase: str, tp: int, pooled: bool = False,
                  cap: float | None = None) -> GroupFit:
        """Fit of one measured group: its own coefficients, or the GPU's pooled ones."""
        key = (gpu, model, phase, str(tp), str(pooled), str(cap))
        if key not in self._fits:
            rows = self.group_rows(gpu, model, phase, tp, cap)
            feats, b, s, lat, energy = self._group_data(rows)
            coefs = self.pooled_coefficients(gpu, phase) if pooled else fit_coefficients(
                feats, lat, energy)
            self._fits[key] = with_residuals(*coefs, feats, b, s, lat, energy,
                                             self._clock_fraction(rows))
        return self._fits[key]

    # -- resolution -------------------------------------------------------
    def resolve(self, gpu: str, model: str, phase: str, tp: int = 1,
                power_cap_w: float | None = None, layout: Layout = BF16) -> PhaseCost:
        """The cost model for (gpu, model, phase, tp) under a power cap (None: default limit)
        with the numerics and expert parallelism of `layout` (measured: BF16, ep 1).

        Points measured at that cap are used as they are; otherwise the default-limit
        answer goes through the DVFS model (dcsim.hardware.dvfs). Answers are cached:
        the store does not change once built.
        """
        key = (gpu, model, phase, tp, power_cap_w, layout)
        if key not in self._resolved:
            cost = self._resolve(gpu, model, phase, tp, power_cap_w, layout)
            adjust = self.adjustments.get((cost.gpu.id, cost.model.id, phase, tp))
            if adjust is not None:  # a calibration's trial: its variants share the answers
                cost = replace(cost, adjust=adjust, memo=self._memos.setdefault(key, {}))
            if self.uncertainty_seed is not None or self.uncertainty_quantile is not None:
                kind = self.spread_of(cost)
                factors = (quantile_factors(self.uncertainty_quantile, kind)
                           if self.uncertainty_quantile is not None else
                           draw(self.uncertainty_seed, cost.gpu.id, cost.model.id, phase, kind))
                cost = replace(cost, factors=factors)
            self._resolved[key] = cost
        return self._resolved[key]

    def spread_of(self, cost: PhaseCost) -> Spread:
        """How wrong an answer of `cost` may be (dcsim.profiles.uncertainty): a calibrated
        group's own sigmas, else the class of its provenance."""
        if cost.source == "calibrated":
            return self._calibrated_spread(cost)
        return spread_class(cost.ranges is None, cost.gpu.id in set(self.measured()["gpu"]))

    def _calibrated_spread(self, cost: PhaseCost) -> Spread:
        """A calibrated group's sigmas, as dcsim calibrate wrote them in its rows
        (spread_latency, spread_energy); a file without them takes the interpolated
        class."""
        rows = self.group_rows(cost.gpu.id, cost.model.id, cost.phase, cost.tp)
        cols = ("spread_latency", "spread_energy")
        if not all(c in rows for c in cols) or rows[list(cols)].isna().any(axis=None):
            return "interpolated"
        return float(rows[cols[0]].iloc[0]), float(rows[cols[1]].iloc[0])

    def with_uncertainty(self, seed: int) -> ProfileStore:
        """This store with every answer scaled by a draw of its error (seeded; see
        dcsim.profiles.uncertainty); the measurements and fits are shared."""
        other = copy.copy(self)
        other._resolved = {}
        other.uncertainty_seed, other.uncertainty_quantile = int(seed), None
        return other

    def with_adjustments(self, adjust: dict[tuple[str, str, str, int],
                                            tuple[float, float, float]]) -> ProfileStore:
        """This store with the answers of some (gpu id, model id, phase, tp) corrected by
        (latency scale, overhead s, power scale): PhaseCost.adjusted; fits shared."""
        other = copy.copy(self)
        other._resolved = {}
        other.adjustments = dict(adjust)
        return other

    def at_quantile(self, q: float) -> ProfileStore:
        """This store with every answer at quantile q of its error (robust planning)."""
        if not 0 < q < 1:
            raise DcsimError(Problem("--quantile", q, "a quantile between 0 and 1"))
        other = copy.copy(self)
        other._resolved = {}
        other.uncertainty_seed, other.uncertainty_quantile = None, float(q)
        return other

    def _resolve(self, gpu: str, model: str, phase: str, tp: int,
                 power_cap_w: float | None, layout: Layout) -> PhaseCost:
        if phase not in PHASES:
            raise DcsimError(Problem("phase", phase, f"one of {PHASES}"))
        if tp < 1:
            raise DcsimError(Problem("tp", tp, "a tensor-parallel degree >= 1"))
        g, m = self.catalog.gpu(gpu), self.catalog.model(model)
        layout = self._measured_scale(g, layout)
        if power_cap_w is not None:
            _check_cap(g, power_cap_w)
            at_cap = self.measured(power_cap_w)
            at_cap = at_cap[(at_cap["gpu"] == g.id) & (at_cap["model"] == m.id)
                            & (at_cap["phase"] == phase) & (at_cap["tp"] == tp)]
            if at_cap.empty or not layout.is_default:
                base = self.resolve(gpu, model, phase, tp, layout=layout)
                return replace(base, power_cap_w=power_cap_w, basis=f"{base.basis}; under a "
                               f"{power_cap_w:g} W cap by the DVFS model")
            return self._measured_at_cap(g, m, phase, tp, power_cap_w, at_cap.iloc[0])
        groups = self.measured()
        groups = groups[groups["phase"] == phase]
        if groups.empty:
            raise DcsimError(Problem("phase", phase, "a phase with measured profiles to derive from"))
        src_gpu = self._source_gpu(g, groups)
        on_gpu = groups[groups["gpu"] == src_gpu.id]
        src = self._source_group(m, tp, on_gpu)
        notes = self._notes(g, m, tp, src_gpu, src) + layout_notes(g, m, layout)
        scaling = Scaling.between(src_gpu, g)
        fit = self.group_fit(src_gpu.id, src["model"], phase, int(src["tp"]), pooled=bool(notes))
        if src_gpu.id != g.id:  # clocks measured on another GPU say nothing here
            fit = replace(fit, clock=None)
        return PhaseCost(
            gpu=g, model=m, phase=phase, tp=tp,
            fit=fit,
            scaling=scaling,
            dvfs=dvfs_of(g),
            compute_coef=self.pooled_coefficients(src_gpu.id, phase)[0]
            * scaling.latency_vector(),
            ceilings=ceilings_for(g, src_gpu, self.table),
            ranges=None if notes else (src["batch_min"], src["batch_max"], src["seq_min"],
                                       src["seq_max"], src["tokens_max"]),
            grid=None if notes else self._grid(src_gpu.id, src["model"], phase, tp),
            basis=self._basis(src_gpu, src, notes),
            layout=layout,
            source="derived" if notes else str(src["source"]),
        )

    def _measured_at_cap(self, g: GpuSpec, m: ModelSpec, phase: str, tp: int, cap: float,
                         src: pd.Series) -> PhaseCost:
        base = self.resolve(g.id, m.id, phase, tp)
        return replace(
            base, fit=self.group_fit(g.id, m.id, phase, tp, cap=cap), scaling=Scaling(),
            ranges=(src["batch_min"], src["batch_max"], src["seq_min"], src["seq_max"],
                    src["tokens_max"]),
            grid=set(zip(*(self.group_rows(g.id, m.id, phase, tp, cap)[c].tolist()
                           for c in ("batch_size", "seq_len")), strict=True)),
            basis=f"{src['source']} {g.id} {m.id} tp={tp} at a {cap:g} W "
                                       f"cap ({src['points']} points)")

    def _measured_scale(self, g: GpuSpec, lay: Layout) -> Layout:
        """FP8 matmuls at the measured gemm_fp8 / gemm ratio of `g` where both ceilings are
        measured (dcsim profile takes them), instead of the datasheet ratio."""
        if lay.weights_dtype != "fp8":
            return lay
        rows = self.table[self.table["gpu"] == g.id]
        rate = {ph: float((2 * r["seq_len"].astype(float) ** 3 / (r["latency_ms"] / 1e3)).max())
                for ph in ("gemm", "gemm_fp8") if len(r := rows[rows["phase"] == ph])}
        if len(rate) < 2:
            return lay
        return replace(lay, matmul_scale=rate["gemm"] / rate["gemm_fp8"], scale_basis="measured")

    def _source_gpu(self, g: GpuSpec, groups: pd.DataFrame) -> GpuSpec:
        if (groups["gpu"] == g.id).any():
            return g
        cands = [self.catalog.gpu(x) for x in groups["gpu"].unique()]
        return min(cands, key=lambda c: abs(np.log(c.bf16_dense_tflops / g.bf16_dense_tflops)))

    def _source_group(self, m: ModelSpec, tp: int, on_gpu: pd.DataFrame) -> pd.Series:
        def rank(row: pd.Series) -> tuple[int, int, float]:
            """Sort key: how close a measured group is to the one asked for."""
            ref = self.catalog.model(row["model"])
            same = row["model"] == m.id
            same_base = row["model"].partition("/")[0] == m.id.partition("/")[0]
            size = abs(np.log(shapes.layer_params(ref) / shapes.layer_params(m)))
            return (0 if same else 1 if same_base else 2, 0 if row["tp"] == tp else 1, size)

        best = min((r for _, r in on_gpu.iterrows()), key=rank)
        return best

    @staticmethod
    def _notes(g: GpuSpec, m: ModelSpec, tp: int, src_gpu: GpuSpec, src: pd.Series) -> list[str]:
        notes = []
        if src["model"] != m.id:
            notes.append(f"work of {m.id} at the per-FLOP/byte costs fitted on {src['model']}")
        if int(src["tp"]) != tp:
            notes.append(f"tp={tp} split with ring all-reduce over the scale-up link")
        if src_gpu.id != g.id:
            notes.append(f"scaled from {src_gpu.id} by datasheet FLOP/s, bandwidth and TDP")
        return notes

    @staticmethod
    def _basis(src_gpu: GpuSpec, src: pd.Series, notes: list[str]) -> str:
        base = f"{src['source']} {src_gpu.id} {src['model']} tp={src['tp']} ({src['points']} points)"
        return base + ("; derived: " + "; ".join(notes) if notes else "")

    def _grid(self, gpu: str, model: str, phase: str, tp: int) -> set[tuple[int, int]]:
        rows = self.group_rows(gpu, model, phase, tp)
        return set(zip(rows["batch_size"].tolist(), rows["seq_len"].tolist(), strict=True))

    def query(self, gpu: str, model: str, phase: str, batch_size: int, seq_len: int,
              tp: int = 1, power_cap_w: float | None = None, layout: Layout = BF16
              ) -> ProfileAnswer:
        """Latency, energy and power of one run, with provenance."""
        for name, v in (("batch_size", batch_size), ("seq_len", seq_len)):
            if v < 1:
                raise DcsimError(Problem(name, v, "a positive whole number"))
        cost = self.resolve(gpu, model, phase, tp, power_cap_w, layout)
        cost.check_fits(batch_size, seq_len)
        out = cost.evaluate(np.array([batch_size]), np.array([seq_len]))
        return ProfileAnswer(
            gpu=cost.gpu.id, model=cost.model.id, phase=phase, tp=tp,
            batch_size=int(batch_size), seq_len=int(seq_len),
            latency_ms=float(out.latency_s[0] * 1e3), energy_j=float(out.energy_j[0]),
            power_w=float(out.power_w[0]), provenance=str(out.provenance[0]), basis=cost.basis,
            power_cap_w=power_cap_w, power_limit_w=cost.limit_w * cost.gpus,
            limited=bool(out.limited[0]),
            unlimited_latency_ms=float(out.unlimited_latency_s[0] * 1e3),
            unlimited_power_w=float(out.unlimited_power_w[0]),
        )


def _cap_mask(t: pd.DataFrame, cap: float | None) -> pd.Series:
    return t["power_cap_w"].isna() if cap is None else t["power_cap_w"] == cap


def _check_cap(g: GpuSpec, cap: float) -> None:
    if not g.power_limit_min_w <= cap <= g.power_limit_max_w:
        raise DcsimError(Problem("power_cap_w", cap, f"a power limit within {g.id}'s range "
                                 f"{g.power_limit_min_w:g}-{g.power_limit_max_w:g} W"))


def calibrated_first(t: pd.DataFrame) -> pd.DataFrame:
    """A calibrated group (gpu, model, tp, phase, cap) shadows the other rows of that
    group: a calibration describes the whole deployment, not extra points. (Pooled
    hardware coefficients still come from measured rows where there are any.)"""
    cal = t["source"] == "calibrated"
    if not cal.any():
        return t
    key = ["gpu", "model", "tp", "phase", "power_cap_w"]
    keys = t[key].fillna({"power_cap_w": -1.0}).astype(str).agg("|".join, axis=1)
    shadowed = keys.isin(set(keys[cal])) & ~cal
    return t[~shadowed].reset_index(drop=True)
