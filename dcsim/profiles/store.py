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

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dcsim.catalog import Catalog, GpuSpec, ModelSpec, shapes
from dcsim.errors import DcsimError, Problem
from dcsim.profiles.cost import PhaseCost, Scaling, ceilings_for
from dcsim.profiles.fit import GroupFit, fit_coefficients, with_residuals
from dcsim.profiles.table import PHASES, builtin_dir, normalize, read_profile_csv
from dcsim.profiles.work import work_features


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

    def to_dict(self) -> dict[str, object]:
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
        self.table = table
        self._fits: dict[tuple[str, ...], GroupFit] = {}
        self._pooled: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}

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
    def measured(self) -> pd.DataFrame:
        """One row per measured group: gpu, model, tp, phase, points and ranges."""
        rows = self.table[self.table["phase"].isin(PHASES) & self.table["power_cap_w"].isna()]
        rows = rows.assign(tokens=rows["batch_size"] * rows["seq_len"])
        return (
            rows.groupby(["gpu", "model", "tp", "phase"], sort=True)
            .agg(points=("latency_ms", "size"), source=("source", "first"),
                 batch_min=("batch_size", "min"), batch_max=("batch_size", "max"),
                 seq_min=("seq_len", "min"), seq_max=("seq_len", "max"),
                 tokens_max=("tokens", "max"))
            .reset_index()
        )

    def group_rows(self, gpu: str, model: str, phase: str, tp: int) -> pd.DataFrame:
        t = self.table
        sel = (t["gpu"] == gpu) & (t["model"] == model) & (t["phase"] == phase) & (t["tp"] == tp)
        return t[sel & t["power_cap_w"].isna()]

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
            t = self.table
            rows = t[(t["gpu"] == gpu) & (t["phase"] == phase) & (t["tp"] == 1)
                     & t["power_cap_w"].isna()]
            feats, _, _, lat, energy = self._group_data(rows)
            self._pooled[(gpu, phase)] = fit_coefficients(feats, lat, energy)
        return self._pooled[(gpu, phase)]

    def group_fit(self, gpu: str, model: str, phase: str, tp: int, pooled: bool = False
                  ) -> GroupFit:
        """Fit of one measured group: its own coefficients, or the GPU's pooled ones."""
        key = (gpu, model, phase, str(tp), str(pooled))
        if key not in self._fits:
            feats, b, s, lat, energy = self._group_data(self.group_rows(gpu, model, phase, tp))
            coefs = self.pooled_coefficients(gpu, phase) if pooled else fit_coefficients(
                feats, lat, energy)
            self._fits[key] = with_residuals(*coefs, feats, b, s, lat, energy)
        return self._fits[key]

    # -- resolution -------------------------------------------------------
    def resolve(self, gpu: str, model: str, phase: str, tp: int = 1) -> PhaseCost:
        """The cost model for (gpu, model, phase, tp), measured or derived."""
        if phase not in PHASES:
            raise DcsimError(Problem("phase", phase, f"one of {PHASES}"))
        if tp < 1:
            raise DcsimError(Problem("tp", tp, "a tensor-parallel degree >= 1"))
        g, m = self.catalog.gpu(gpu), self.catalog.model(model)
        groups = self.measured()
        groups = groups[groups["phase"] == phase]
        if groups.empty:
            raise DcsimError(Problem("phase", phase, "a phase with measured profiles to derive from"))
        src_gpu = self._source_gpu(g, groups)
        on_gpu = groups[groups["gpu"] == src_gpu.id]
        src = self._source_group(m, tp, on_gpu)
        notes = self._notes(g, m, tp, src_gpu, src)
        scaling = Scaling.between(src_gpu, g)
        return PhaseCost(
            gpu=g, model=m, phase=phase, tp=tp,
            fit=self.group_fit(src_gpu.id, src["model"], phase, int(src["tp"]), pooled=bool(notes)),
            scaling=scaling,
            ceilings=ceilings_for(g, src_gpu, self.table),
            power_ceiling_w=self._power_ceiling(src_gpu) * g.tdp_w / src_gpu.tdp_w,
            ranges=None if notes else (src["batch_min"], src["batch_max"], src["seq_min"],
                                       src["seq_max"], src["tokens_max"]),
            grid=None if notes else self._grid(src_gpu.id, src["model"], phase, tp),
            basis=self._basis(src_gpu, src, notes),
        )

    def _source_gpu(self, g: GpuSpec, groups: pd.DataFrame) -> GpuSpec:
        if (groups["gpu"] == g.id).any():
            return g
        cands = [self.catalog.gpu(x) for x in groups["gpu"].unique()]
        return min(cands, key=lambda c: abs(np.log(c.bf16_dense_tflops / g.bf16_dense_tflops)))

    def _source_group(self, m: ModelSpec, tp: int, on_gpu: pd.DataFrame) -> pd.Series:
        def rank(row: pd.Series) -> tuple[int, int, float]:
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

    def _power_ceiling(self, g: GpuSpec) -> float:
        # NVML's energy counter can average above the limit over short runs because the
        # limiter acts on a longer window; the highest measured average is the true ceiling.
        t = self.table
        rows = t[(t["gpu"] == g.id) & t["phase"].isin(PHASES) & (t["tp"] == 1)]
        measured = rows["energy_j"] / (rows["latency_ms"] / 1e3)
        return max(g.tdp_w, float(measured.max()) if len(measured) else 0.0)

    def query(self, gpu: str, model: str, phase: str, batch_size: int, seq_len: int,
              tp: int = 1) -> ProfileAnswer:
        """Latency, energy and power of one run, with provenance."""
        for name, v in (("batch_size", batch_size), ("seq_len", seq_len)):
            if v < 1:
                raise DcsimError(Problem(name, v, "a positive whole number"))
        cost = self.resolve(gpu, model, phase, tp)
        cost.check_fits(batch_size, seq_len)
        out = cost.evaluate(np.array([batch_size]), np.array([seq_len]))
        return ProfileAnswer(
            gpu=cost.gpu.id, model=cost.model.id, phase=phase, tp=tp,
            batch_size=int(batch_size), seq_len=int(seq_len),
            latency_ms=float(out.latency_s[0] * 1e3), energy_j=float(out.energy_j[0]),
            power_w=float(out.power_w[0]), provenance=str(out.provenance[0]), basis=cost.basis,
        )
