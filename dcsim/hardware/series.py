"""Hourly input series: weather, grid carbon intensity, electricity price.

A CSV has a `timestamp` column and one value column; rows are hourly, in order,
without gaps, and values must lie in the physical range of their unit.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd

from dcsim.csvfiles import read_csv_with
from dcsim.errors import DcsimError, Problem

RANGES = {"dry_bulb_c": (-60.0, 60.0), "g_per_kwh": (0.0, 2000.0), "usd_per_kwh": (-1.0, 10.0),
          "capacity_factor": (0.0, 1.0)}
HOUR = pd.Timedelta(hours=1)


def load_hourly(path: Path, column: str) -> pd.Series:
    """Values indexed by hourly timestamps; DcsimError names every bad row."""
    origin = str(path)
    raw = read_csv_with(path, ("timestamp", column), "hourly CSV file")
    ts = pd.to_datetime(raw["timestamp"], errors="coerce", format="mixed")
    v = pd.to_numeric(raw[column], errors="coerce")
    lo, hi = RANGES[column]
    problems = [Problem(f"row {i + 2}.timestamp", raw.at[i, "timestamp"], "a date-time", origin)
                for i in raw.index[ts.isna()][:10]]
    problems += [Problem(f"row {i + 2}.{column}", raw.at[i, column],
                         f"a number in [{lo:g}, {hi:g}]", origin)
                 for i in raw.index[~((v >= lo) & (v <= hi))][:10]]
    if problems:
        raise DcsimError(problems)
    steps = ts.diff().iloc[1:]
    bad = steps.index[steps != HOUR]
    if len(bad):
        i = int(bad[0])
        raise DcsimError(Problem(f"row {i + 2}.timestamp", raw.at[i, "timestamp"],
                                 f"one hour after the previous row ({raw.at[i - 1, 'timestamp']}):"
                                 " hourly rows in order, without gaps", origin))
    return pd.Series(v.to_numpy(float), index=pd.DatetimeIndex(ts))


def values_at(series: pd.Series, start: datetime, t_s: np.ndarray, what: str) -> np.ndarray:
    """The hourly value in force at simulated times t_s (seconds after `start`)."""
    when = pd.Timestamp(start) + pd.to_timedelta(t_s, unit="s")
    first, last = series.index[0], series.index[-1] + HOUR
    if when.min() < first or when.max() >= last:
        raise DcsimError(Problem(what, f"{first} to {last}",
                                 f"hourly values covering the run, {when.min()} to {when.max()}"))
    idx = ((when - first) // HOUR).astype(int)
    return series.to_numpy()[np.asarray(idx)]


class Sinusoids(Protocol):
    """A synthetic climate: annual mean, seasonal and daily amplitudes (degC), warmest day
    (the scenario's SyntheticWeather is one)."""

    mean_c: float
    seasonal_amplitude_c: float
    daily_amplitude_c: float
    warmest_day_of_year: int


def synthetic_temperature(w: Sinusoids, start: datetime, t_s: np.ndarray) -> np.ndarray:
    """Yearly sinusoid peaking on warmest_day_of_year plus a daily one peaking at 15:00, deg C."""
    when = pd.Timestamp(start) + pd.to_timedelta(np.atleast_1d(t_s), unit="s")
    hour = np.asarray(when.hour + when.minute / 60, dtype=float)
    doy = np.asarray(when.day_of_year, dtype=float) + hour / 24
    return (w.mean_c + w.seasonal_amplitude_c * np.cos(2 * np.pi * (doy - w.warmest_day_of_year)
                                                       / 365.25)
            + w.daily_amplitude_c * np.cos(2 * np.pi * (hour - 15) / 24))
