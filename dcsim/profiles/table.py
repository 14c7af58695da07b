"""Profile tables: one shape for every source (measured, published, derived, calibrated).

Columns (units in the names):

=============  ========================================================
gpu            catalog id or the driver's name (``NVIDIA H200``)
model          catalog model id; ``name/NL`` is an N-layer slice
tp             tensor-parallel degree of the measured group (default 1)
phase          ``prefill`` | ``decode`` | ``train`` (``gemm`` / ``copy``
               rows are the GPU's measured compute / memory ceilings)
batch_size     sequences per run
seq_len        prompt length (prefill, train) or KV context (decode);
               bytes copied for ``copy``; matrix size for ``gemm``
power_cap_w    power limit in force; empty = the GPU's default limit
latency_ms     mean wall time of one run (> 0)
energy_j       energy of one run, all GPUs of the group (>= 0); empty where the
               device has no energy counter (a CPU profile: timing only,
               ``energy_method`` = ``none``); the store refuses such rows
avg_power_w    energy / latency (filled in when missing)
source         ``measured`` | ``published`` | ``derived`` | ``calibrated`` (default
               measured; ``dcsim calibrate`` writes calibrated groups, which shadow
               the other rows of their gpu, model, tp, phase and cap)
=============  ========================================================

Other columns (``sm_clock_mhz``, ``n_iters``, ...) are kept as they are.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from dcsim.csvfiles import read_csv_with
from dcsim.errors import DcsimError, Problem

REQUIRED = ("gpu", "model", "phase", "batch_size", "seq_len", "latency_ms", "energy_j")
PHASES = ("prefill", "decode", "train")
CEILING_PHASES = ("gemm", "copy", "gemm_fp8")
SOURCES = ("measured", "published", "derived", "calibrated")
KEY = ("gpu", "model", "tp", "phase", "batch_size", "seq_len", "power_cap_w")


def builtin_dir(name: str = "h200") -> Path:
    """Folder of a profile set shipped inside the package."""
    return Path(str(resources.files("dcsim.profiles").joinpath("data", name)))


def read_profile_csv(path: str | Path) -> pd.DataFrame:
    """Read and validate one profile table; raise DcsimError naming every bad cell."""
    path = Path(path)
    return normalize(read_csv_with(path, (), "profile CSV file"), str(path))


def normalize(raw: pd.DataFrame, origin: str = "") -> pd.DataFrame:
    """Check columns and values, fill defaults, and return the canonical table."""
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise DcsimError(
            Problem("columns", sorted(raw.columns), f"also the columns {missing}", origin)
        )
    df = raw.copy()
    df["gpu"] = df["gpu"].astype(str)
    df["model"] = df["model"].astype(str)
    df["phase"] = df["phase"].astype(str)
    df["tp"] = df.get("tp", 1)
    df["power_cap_w"] = df.get("power_cap_w", np.nan)
    df["source"] = df["source"].fillna("measured") if "source" in df else "measured"
    problems = _cell_problems(df, origin)
    if problems:
        raise DcsimError(problems[:20])
    for col in ("batch_size", "seq_len", "tp"):
        df[col] = df[col].astype("int64")
    for col in ("latency_ms", "energy_j", "power_cap_w"):
        df[col] = df[col].astype("float64")
    if "avg_power_w" not in df:
        df["avg_power_w"] = np.nan
    df["avg_power_w"] = df["avg_power_w"].astype("float64").fillna(
        df["energy_j"] / (df["latency_ms"] / 1e3)
    )
    return df.reset_index(drop=True)


def _cell_problems(df: pd.DataFrame, origin: str) -> list[Problem]:
    problems: list[Problem] = []

    def check(col: str, ok: pd.Series, expected: str) -> None:
        """Record a Problem for every row of `col` where `ok` is false."""
        for idx in df.index[~ok.fillna(False).astype(bool)]:
            problems.append(Problem(f"row {idx + 2}.{col}", df.at[idx, col], expected, origin))

    numeric = {c: pd.to_numeric(df[c], errors="coerce") for c in
               ("batch_size", "seq_len", "tp", "latency_ms", "energy_j")}
    check("phase", df["phase"].isin(PHASES + CEILING_PHASES), f"one of {PHASES + CEILING_PHASES}")
    for col in ("batch_size", "seq_len", "tp"):
        v = numeric[col]
        check(col, (v > 0) & (v == v.round()), "a positive whole number")
    check("latency_ms", numeric["latency_ms"] > 0, "a latency > 0 ms")
    check("energy_j", df["energy_j"].isna() | (numeric["energy_j"] >= 0),
          "an energy >= 0 J (or empty: not measured)")
    cap = pd.to_numeric(df["power_cap_w"], errors="coerce")
    check("power_cap_w", df["power_cap_w"].isna() | (cap > 0), "empty or a power > 0 W")
    check("source", df["source"].isin(SOURCES), f"one of {SOURCES}")
    if not problems:
        dup = df.duplicated(subset=list(KEY), keep="first")
        check("batch_size", ~dup, "one row per (gpu, model, tp, phase, batch_size, seq_len, cap)")
    return problems
