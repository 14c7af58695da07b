"""`dcsim calibrate`: the whole command, from measured files to the calibrated profile.

Steps: read the measured requests (and energy); replay them through the scenario's
deployment uncorrected ("before"); fit the correction (dcsim.calibration.fit); replay
with it ("after"); tabulate it as profile rows (dcsim.calibration.correction) and
replay once more through a store built from those rows exactly as a scenario naming
the written profile.csv gets it ("profile": the file says what the fit says); with a
hold-out file, replay that before and after too. Every figure set is compared with its
measurement in `comparison` (one row per set and metric).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dcsim.calibration.correction import Correction, corrected_rows, grid
from dcsim.calibration.fit import (
    Replay,
    Served,
    errors,
    figures,
    fit_energy,
    fit_latency,
    replay_of,
    run_with,
)
from dcsim.calibration.measured import energy_from_power_log, read_requests
from dcsim.engine.context import Context, profile_paths
from dcsim.errors import DcsimError, Problem
from dcsim.profiles.store import ProfileStore
from dcsim.profiles.uncertainty import from_errors, sigmas
from dcsim.scenario import Scenario
from dcsim.workloads.spec import InferenceService


@dataclass(frozen=True)
class MeasuredRun:
    """One measured file and its energy source (a total in J, or a power log)."""

    requests: Path
    energy_j: float | None = None
    power_log: Path | None = None

    def load(self, fmt: str, option: str) -> Served:
        """The requests as served and the energy over them (None: not measured)."""
        if self.energy_j is not None and self.power_log is not None:
            raise DcsimError(Problem(option, "both a total and a power log", "one of them"))
        if self.energy_j is not None and not self.energy_j > 0:
            raise DcsimError(Problem(option, self.energy_j, "a GPU energy in J, > 0"))
        energy = (energy_from_power_log(self.power_log) if self.power_log is not None
                  else self.energy_j)
        if energy is not None and not energy > 0:
            raise DcsimError(Problem(str(self.power_log), energy, "a log whose energy is > 0"))
        return Served(read_requests(self.requests, fmt), energy)


@dataclass(frozen=True)
class Calibration:
    """What the command found: the correction, the profile rows it writes, the
    comparison table and calibration.json's record."""

    correction: Correction
    profile: pd.DataFrame
    comparison: pd.DataFrame
    record: dict[str, object]


def calibrate(s: Scenario, base_dir: Path, fit_on: MeasuredRun, fmt: str = "dcsim",
              holdout: MeasuredRun | None = None) -> Calibration:
    """Fit, tabulate and check a correction (module docstring)."""
    for w in s.workloads:  # a measured run of one serving engine per service
        if isinstance(w, InferenceService):
            w.colocated("dcsim calibrate")
    ctx = Context.load(s, base_dir)
    measured = fit_on.load(fmt, "--energy-j / --power-log")
    held = holdout.load(fmt, "--holdout-energy-j / --holdout-power-log") if holdout else None
    with tempfile.TemporaryDirectory(prefix="dcsim-calibrate-") as tmp:
        rep = replay_of(s, ctx, measured.requests, Path(tmp) / "fit")
        before = run_with(rep, Correction())
        corr = fit_latency(rep, measured.requests)
        if measured.energy_j is not None:
            corr = fit_energy(rep, corr, measured.energy_j)
        rows = profile_rows(rep, corr, measured.requests, str(fit_on.requests))
        sets = {"fit": (measured, before, run_with(rep, corr),
                        run_with(_on_profile(rep, s, base_dir, rows, Path(tmp)), Correction()))}
        if held is not None:
            rep2 = replay_of(s, ctx, held.requests, Path(tmp) / "holdout")
            sets["holdout"] = (held, run_with(rep2, Correction()), run_with(rep2, corr), None)
    comparison = _comparison(sets)
    spread = _spreads(comparison, rep, measured, held)
    rows = rows.assign(spread_latency=spread[0], spread_energy=spread[1])
    record = {"deployment": dict(zip(("gpu", "model", "tp"), rep.key, strict=True)),
              "correction": corr.to_dict(), "correction_text": corr.describe(),
              "requests": {k: len(v[0].requests) for k, v in sets.items()},
              "energy_measured": measured.energy_j is not None,
              "spread": {"latency_sigma": spread[0], "energy_sigma": spread[1],
                         "method": "median |log error| / 0.6745 of the hold-out after the "
                         "fit (else the fit through the written profile), never below the "
                         "interpolated class; what --profile-uncertainty draws from"},
              **{k: _errors_block(comparison, k) for k in sets}}
    return Calibration(corr, rows, comparison, record)


def _spreads(table: pd.DataFrame, rep: Replay, measured: Served, held: Served | None
             ) -> tuple[float, float]:
    """The written profile's latency and energy sigmas (dcsim.profiles.uncertainty):
    from the hold-out's errors after the fit where there is one, else from the fit's
    through the written file; energy from where it was measured, else the sigma of the
    profile underneath."""
    def errs(name: str, col: str, energy: bool) -> list[float]:
        t = table[(table["set"] == name) & ((table["metric"] == "energy_per_request_j")
                                            == energy)]
        return t[col].dropna().tolist() if col in t else []

    fit_col = ("fit", "error_profile_pct")
    lat = errs("holdout", "error_after_pct", False) if held is not None else []
    en = errs("holdout", "error_after_pct", True) if held is not None else []
    store = rep.context.store
    base = store.resolve(rep.key[0], rep.key[1], "decode", rep.key[2])
    floor_en = sigmas("interpolated" if measured.energy_j is not None
                      else store.spread_of(base))[1]
    return from_errors(lat or errs(*fit_col, False), en or errs(*fit_col, True),
                       (sigmas("interpolated")[0], floor_en))


def profile_rows(rep: Replay, corr: Correction, measured: pd.DataFrame, origin: str
                 ) -> pd.DataFrame:
    """The correction tabulated over what the deployment can run (module doc of
    dcsim.calibration.correction), its basis naming the fit."""
    d = rep.service.deployment
    longest = int((measured["prompt_tokens"] + measured["output_tokens"]).max()) + 1
    points = grid(d.max_num_seqs, max(d.max_batched_tokens, int(measured["prompt_tokens"].max())),
                  longest)
    basis = f"calibrated: {corr.describe()}; fitted to {len(measured)} requests of {origin}"
    return corrected_rows(rep.context.store, rep.key, corr, points, basis)


def _on_profile(rep: Replay, s: Scenario, base_dir: Path, rows: pd.DataFrame, tmp: Path
                ) -> Replay:
    """The replay with the store a scenario naming the written profile.csv would get."""
    path = tmp / "profile.csv"
    rows.to_csv(path, index=False)
    store = ProfileStore.from_files(rep.context.catalog, [*profile_paths(s, base_dir), path])
    return Replay(rep.scenario, rep.service, rep.context.with_store(store), rep.key)


def _comparison(sets: dict[str, tuple[Served, Served, Served, Served | None]]) -> pd.DataFrame:
    """One row per (set, metric): measured, before, after (and the written profile's)."""
    rows = []
    for name, (real, before, after, written) in sets.items():
        want = figures(real)
        runs = {"before": figures(before), "after": figures(after)}
        if written is not None:
            runs["profile"] = figures(written)
        for metric, value in want.items():
            row = {"set": name, "metric": metric, "measured": value}
            for label, got in runs.items():
                row[label] = got.get(metric)
                row[f"error_{label}_pct"] = errors(got, {metric: value}).get(metric)
            rows.append(row)
    return pd.DataFrame(rows)


def _errors_block(table: pd.DataFrame, name: str) -> dict[str, dict[str, float]]:
    """calibration.json's errors of one set: per figure set, metric -> signed error %."""
    t = table[table["set"] == name].set_index("metric")
    return {f"errors_{label}_pct": t[f"error_{label}_pct"].dropna().to_dict()
            for label in ("before", "after", "profile")
            if f"error_{label}_pct" in t and t[f"error_{label}_pct"].notna().any()}
