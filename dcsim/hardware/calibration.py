"""Calibrate the DVFS model (dcsim.hardware.dvfs) on measured power-limit sweeps.

Data: the Zeus sweeps (ml-energy/zeus, NSDI 2023; Apache-2.0, shipped in
dcsim/data/traces/zeus_power_limit): for several training jobs on V100 and A40,
the epoch time and average power at every power limit.

Per GPU the floor power and voltage knee are fitted (grid search, minimising the
median relative error of time and power over every job); per job the
clock-sensitive share beta is fitted by least squares. Each job's run at the
highest limit is its unconstrained reference (clock 1): there it draws less than
the limit.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from dcsim.hardware.dvfs import Dvfs, clock_under_cap, power_at_clock, time_at_clock

ZEUS_GPUS = {"V100-PCIe-32GB": "summary_power_v100.csv", "A40": "summary_power_a40.csv"}
JOB_KEY = ["dataset", "network", "batch_size", "optimizer"]
FLOOR_FRACTIONS = np.arange(0.10, 0.45, 0.01)  # of the highest limit swept
KNEES = np.arange(0.30, 1.0, 0.025)


def zeus_path(gpu_id: str) -> Path:
    """Path of the shipped Zeus power-limit summary for a GPU (v100 or a40)."""
    root = resources.files("dcsim").joinpath("data", "traces", "zeus_power_limit")
    return Path(str(root)) / ZEUS_GPUS[gpu_id]


def load_zeus(gpu_id: str) -> pd.DataFrame:
    """One GPU's sweep, with energy per epoch added."""
    df = pd.read_csv(zeus_path(gpu_id))
    return df.assign(energy_j=df["time_per_epoch"] * df["average_power"])


def fit_beta(x: np.ndarray, time_s: np.ndarray, ref_time_s: float) -> float:
    """Least-squares beta in T/T1 - 1 = beta (1/x - 1), held in [0, 1]."""
    a = 1.0 / x - 1.0
    y = time_s / ref_time_s - 1.0
    denom = float((a * a).sum())
    return float(np.clip((a * y).sum() / denom, 0.0, 1.0)) if denom > 0 else 0.0


def predict_job(job: pd.DataFrame, d: Dvfs) -> pd.DataFrame:
    """Model time and power at each limit of one job (rows sorted by limit)."""
    job = job.sort_values("power_limit")
    ref = job.iloc[-1]
    limits = job["power_limit"].to_numpy(float)
    x = clock_under_cap(limits, ref["average_power"], 1.0, d)
    beta = fit_beta(x, job["time_per_epoch"].to_numpy(float), ref["time_per_epoch"])
    t = time_at_clock(x, ref["time_per_epoch"], 1.0, beta)
    p = power_at_clock(x, ref["average_power"], 1.0, d)
    return job.assign(clock=x, beta=beta, model_time_s=t, model_power_w=p,
                      model_energy_j=t * p)


def curve_errors(df: pd.DataFrame, d: Dvfs) -> pd.DataFrame:
    """Every job's points with model values and relative errors of time and power."""
    out = [predict_job(job, d) for _, job in df.groupby(JOB_KEY)
           if job["average_power"].max() > d.floor_w * 1.05]
    res = pd.concat(out, ignore_index=True)
    return res.assign(time_rel_err=res["model_time_s"] / res["time_per_epoch"] - 1,
                      power_rel_err=res["model_power_w"] / res["average_power"] - 1)


def calibrate(df: pd.DataFrame, min_clock: float) -> tuple[Dvfs, float]:
    """Floor and knee minimising the median |relative error| of time and power."""
    top = float(df["power_limit"].max())
    jobs = [j.sort_values("power_limit") for _, j in df.groupby(JOB_KEY)]
    lim = np.concatenate([j["power_limit"].to_numpy(float) for j in jobs])
    t = np.concatenate([j["time_per_epoch"].to_numpy(float) for j in jobs])
    p = np.concatenate([j["average_power"].to_numpy(float) for j in jobs])
    sizes = [len(j) for j in jobs]
    job_id = np.repeat(np.arange(len(jobs)), sizes)
    ends = np.cumsum(sizes) - 1
    p1, t1 = p[ends][job_id], t[ends][job_id]  # each job's run at its highest limit
    best: tuple[float, Dvfs] | None = None
    for frac in FLOOR_FRACTIONS:
        for knee in KNEES:
            d = Dvfs(floor_w=round(float(frac * top), 2), knee=round(float(knee), 3),
                     min_clock=min_clock)
            keep = p1 > d.floor_w * 1.05
            x = clock_under_cap(lim, p1, 1.0, d)
            a = 1.0 / x - 1.0
            num = np.bincount(job_id, a * (t / t1 - 1.0), len(jobs))
            den = np.bincount(job_id, a * a, len(jobs))
            beta = np.clip(np.divide(num, den, out=np.zeros_like(num), where=den > 0), 0, 1)
            tm = time_at_clock(x, t1, 1.0, beta[job_id])
            pm = power_at_clock(x, p1, 1.0, d)
            errs = np.abs(np.concatenate([(tm / t - 1)[keep], (pm / p - 1)[keep]]))
            err = float(np.median(errs))
            if best is None or err < best[0] - 1e-12:
                best = (err, d)
    assert best is not None
    return best[1], best[0]


def energy_optimal_limits(errors: pd.DataFrame) -> pd.DataFrame:
    """Per job: the limit with the least measured energy and the one the model picks."""
    rows = []
    for key, job in errors.groupby(JOB_KEY):
        meas = job.loc[job["energy_j"].idxmin()]
        model = job.loc[job["model_energy_j"].idxmin()]
        rows.append(dict(zip(JOB_KEY, key, strict=True), measured_limit_w=meas["power_limit"],
                         model_limit_w=model["power_limit"],
                         energy_at_model_choice_rel=model["energy_j"] / meas["energy_j"] - 1))
    return pd.DataFrame(rows)
