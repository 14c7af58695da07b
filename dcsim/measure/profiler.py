"""`dcsim profile`: measure a model's phases on the local device into a profile folder.

The folder holds `points.csv` (the profile store's schema, one row per point),
`models.csv` (the measured shape, as in the shipped H200 set) and `machine.json`
(device, driver, power-limit range, idle power, software). `points.csv` is rewritten
atomically after every point, so an interrupted or over-budget run keeps what it
measured, and a rerun into the same folder measures only the points still missing.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import pandas as pd
import torch

from dcsim import yamlfile
from dcsim.catalog import Catalog, ModelSpec
from dcsim.catalog.shapes import total_params
from dcsim.errors import DcsimError, Interrupted, Problem
from dcsim.measure.device_spec import gpu_entry
from dcsim.measure.points import Point, ceiling_points, measure, row
from dcsim.measure.timing import Target, open_target
from dcsim.measure.torch_model import Decoder, build
from dcsim.output import atomic_file
from dcsim.profiles.table import CEILING_PHASES

PHASES = ("prefill", "decode", "train")
# (batch sizes, lengths) per phase; `standard` is the grid of the shipped H200 set
GRIDS: dict[str, dict[str, tuple[tuple[int, ...], tuple[int, ...]]]] = {
    "quick": {"prefill": ((1, 4), (128, 512)), "decode": ((1, 4, 16), (512, 2048)),
              "train": ((2,), (512,))},
    "standard": {"prefill": ((1, 4, 16), (128, 512, 2048, 8192)),
                 "decode": ((1, 4, 16, 64, 256), (512, 2048, 8192)),
                 "train": ((2, 4, 8), (2048,))},
}
IDLE_SAMPLE_S = 2.0
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ProfileRequest:
    """What to measure: a catalog model (or slice `NAME/<n>L`) over a grid of points."""

    model: str
    device: str = "cuda"
    grid: str = "standard"
    phases: tuple[str, ...] = PHASES
    batches: tuple[int, ...] = ()  # overrides the grid's batch sizes for every phase
    seqs: tuple[int, ...] = ()  # overrides the grid's lengths for every phase
    max_tokens: int = 32768  # largest batch x length of one prefill or train run
    min_time_s: float = 0.6
    budget_s: float | None = None
    seed: int = 0
    graphs: bool = True  # CUDA graphs for inference points (the replay loop runs eagerly)


@dataclass
class ProfileOutcome:
    """What a profile run did: points measured, already there, not reached (time budget),
    failed (out of memory), and whether it was interrupted."""

    measured: list[Point] = field(default_factory=list)
    already: int = 0
    not_reached: list[Point] = field(default_factory=list)  # the time budget ran out
    failed: list[tuple[Point, str]] = field(default_factory=list)  # out of memory
    interrupted: bool = False


def check_request(req: ProfileRequest) -> None:
    """Reject a bad grid or phase before anything is measured or written."""
    if req.grid not in GRIDS:
        raise DcsimError(Problem("--grid", req.grid, f"one of {sorted(GRIDS)}"))
    bad = [p for p in req.phases if p not in PHASES]
    if bad or not req.phases:
        raise DcsimError(Problem("--phases", ",".join(bad), f"some of {PHASES}"))


def plan_points(req: ProfileRequest, target: Target) -> list[Point]:
    """Ceilings first, then the phases in turn, cheapest points first in each phase, so a
    time budget that runs out leaves every phase with its small points."""
    check_request(req)
    per_phase = []
    for phase in req.phases:
        batches, seqs = GRIDS[req.grid][phase]
        pts = [Point(phase, b, s) for b, s in product(req.batches or batches, req.seqs or seqs)
               if phase == "decode" or b * s <= req.max_tokens]
        per_phase.append(sorted(pts, key=lambda p: (p.tokens * p.seq_len, p.batch_size)))
    ordered = [p for group in _round_robin(per_phase) for p in group]
    return ceiling_points(target) + ordered


def _round_robin(groups: list[list[Point]]) -> list[list[Point]]:
    longest = max((len(g) for g in groups), default=0)
    return [[g[i] for g in groups if i < len(g)] for i in range(longest)]


def run_profile(req: ProfileRequest, out: Path, catalog: Catalog,
                progress: Progress | None = None) -> ProfileOutcome:
    """Measure every planned point not yet in `out/points.csv`; see the module docstring."""
    spec = catalog.model(req.model)
    check_request(req)
    target = open_target(req.device)
    out.mkdir(parents=True, exist_ok=True)
    now = target.meter.facts()
    facts = _machine(target, req, out, now)
    # the limit in force now (read, never set): a non-default one is recorded per row
    cap = now.get("power_limit_w") if now.get("power_limit_w") != now.get(
        "power_limit_default_w") else None
    rows = _existing_rows(out)
    done = {_key(r["model"], r["phase"], r["batch_size"], r["seq_len"], r["power_cap_w"])
            for r in rows}
    _write_models(out, req.model, spec, catalog)
    todo = [p for p in plan_points(req, target)
            if _key(_row_model(p, req.model), p.phase, p.batch_size, p.seq_len, cap) not in done]
    outcome = ProfileOutcome(already=len(done))
    models = _Models(spec, target)
    start = time.monotonic()
    for i, point in enumerate(todo):
        if req.budget_s is not None and time.monotonic() - start >= req.budget_s:
            outcome.not_reached = todo[i:]
            break
        try:
            if progress:
                progress(i, len(todo), f"{point.phase} b={point.batch_size} s={point.seq_len}")
            timed, mode = measure(point, models.get(point.phase), target, req.min_time_s,
                                  req.seed + i, req.graphs)
        except (KeyboardInterrupt, Interrupted):  # keep what is written; the point in
            # progress is lost
            outcome.interrupted = True
            outcome.not_reached = todo[i:]
            break
        except torch.OutOfMemoryError as exc:
            outcome.failed.append((point, f"out of memory: {str(exc).splitlines()[0]}"))
            models.release()
            continue
        rows.append(row(point, timed, mode, facts["gpu"], _row_model(point, req.model), cap,
                        str(target.dtype).removeprefix("torch."), target.meter.method))
        _write_points(out, rows)
        outcome.measured.append(point)
    _write_catalog_entry(out, facts, rows, catalog)
    if progress and not outcome.interrupted:
        progress(len(todo), len(todo), "done")
    return outcome


def _key(model: str, phase: str, batch: int, seq: int, cap: float | None
         ) -> tuple[str, str, int, int, float | None]:
    """What makes a point: a rerun at another power limit measures it again."""
    return model, phase, int(batch), int(seq), None if cap is None or cap != cap else float(cap)


def _row_model(point: Point, model: str) -> str:
    return point.phase if point.phase in CEILING_PHASES else model


class _Models:
    """The inference model (device number format) and the training model (fp32), built on
    first use; dropped after an out-of-memory error so the next point starts clean."""

    def __init__(self, spec: ModelSpec, target: Target) -> None:
        self.spec, self.target = spec, target
        self._built: dict[str, Decoder] = {}

    def get(self, phase: str) -> Decoder | None:
        """The model for a phase (None for the gemm and copy ceilings), built on first use."""
        if phase in CEILING_PHASES:
            return None
        kind = "train" if phase == "train" else "infer"
        if kind not in self._built:
            self.release()
            torch.manual_seed(0)  # weight values do not matter; fixed for repeatability
            dtype = torch.float32 if kind == "train" else self.target.dtype  # fp32 master weights
            self._built[kind] = build(self.spec, self.target.device, dtype).train(kind == "train")
        return self._built[kind]

    def release(self) -> None:
        """Drop the built models and free the device's cached memory."""
        self._built.clear()
        if self.target.cuda:
            torch.cuda.empty_cache()


def _machine(target: Target, req: ProfileRequest, out: Path, facts: dict) -> dict:
    """Machine facts, measured idle power included; kept from an earlier run if present."""
    path = out / "machine.json"
    facts = dict(facts)
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("gpu") != facts["gpu"]:
            raise DcsimError(Problem(str(path), old.get("gpu"), f"a folder profiled on this "
                                     f"device ({facts['gpu']}); choose another --out"))
        return old
    facts |= target.meter.idle(IDLE_SAMPLE_S)  # a CPU meter returns at once, with nothing
    facts |= {"torch": torch.__version__, "python": platform.python_version(),
              "dtype": str(target.dtype).removeprefix("torch."), "torch_threads":
              torch.get_num_threads(), "date": dt.date.today().isoformat(),
              "energy_method": target.meter.method, "min_time_s": req.min_time_s}
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(facts, indent=1) + "\n")
    return facts


def _existing_rows(out: Path) -> list[dict]:
    path = out / "points.csv"
    if not path.is_file():
        return []
    return pd.read_csv(path).to_dict("records")


def _write_points(out: Path, rows: list[dict]) -> None:
    with atomic_file(out / "points.csv") as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def _write_models(out: Path, name: str, m: ModelSpec, catalog: Catalog) -> None:
    """The measured shape, as in the shipped set's models.csv (one row per model)."""
    full = catalog.model(name.split("/")[0])
    path = out / "models.csv"
    old = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    new = pd.DataFrame([{
        "model": name, "layers_measured": m.layers, "layers_full": full.layers,
        "hidden": full.hidden, "heads": full.heads, "kv_heads": full.kv_heads,
        "head_dim": full.head_dim, "ffn": full.ffn, "vocab": full.vocab,
        "params_measured": total_params(m), "params_full": total_params(full),
        "includes_embedding_and_head": "/" not in name}])
    merged = pd.concat([old[old["model"] != name] if not old.empty else old, new])
    with atomic_file(path) as tmp:
        merged.to_csv(tmp, index=False)


def _write_catalog_entry(out: Path, facts: dict, rows: list[dict], catalog: Catalog) -> None:
    """`catalog.yaml`: the device as a catalog GPU for scenarios, when the catalog lacks it
    (needs the gemm and copy ceilings; see dcsim.measure.device_spec)."""
    try:
        catalog.gpu(facts["gpu"])
        return  # a known GPU: scenarios use its catalog id
    except DcsimError:
        pass
    points = pd.DataFrame(rows)
    if points.empty or not {"gemm", "copy"} <= set(points["phase"]):
        return
    entry = gpu_entry(facts, points, catalog)
    text = ("# This device as a catalog GPU, derived by dcsim profile: put the entry under\n"
            "# `catalog: gpus:` in a scenario to deploy replicas on it.\n"
            + yamlfile.dump({"gpus": [entry]}))
    with atomic_file(out / "catalog.yaml") as tmp:
        tmp.write_text(text)
