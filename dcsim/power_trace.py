"""Training power phase by phase in a window: the swings a synchronous job puts on the
meter, and the battery that keeps them within the grid's ramp limit.

Each running job repeats its step (the run's own step decomposition: compute, then the
pipeline bubble, then the exposed data-parallel all-reduce; the order inside a step
moves a swing in time, not its size) from its start and again from the end of every
checkpoint write and restart. Its GPUs draw the step model's busy power in compute
and its waiting power (the DVFS floor) in the bubble and the all-reduce, and idle
power while a checkpoint is written or the job restarts (failures.restart_s). The
meter's trace is the run's facility power of each bucket plus, per job, its GPUs'
deviation from their mean over that bucket, scaled by the bucket's facility / IT
ratio (hosts and PSU losses stay at their bucket means), so it averages to the run.

Largest swing: the trace's maximum minus its minimum. Steepest ramp: the largest
change between consecutive means over ramp_window_s, per second. Under a grid ramp
limit r, the import g follows the load p as closely as r allows (g moves towards p by
at most r dt per step dt); a battery covers p - g: its power is max |p - g| and its
energy the range of the integral of p - g.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dcsim.engine.context import Context
from dcsim.scenario import PowerTrace, Scenario
from dcsim.training.step import step_model
from dcsim.workloads.spec import TrainingJob

GRID_S = 0.01  # the trace is evaluated on this grid for ramps and the battery, s
MAX_POINTS = 200_000  # a longer window gets a coarser grid (a day: 0.43 s), so the
# battery's sequential pass stays a fraction of a second


def grid_step_s(w: PowerTrace) -> float:
    """The evaluation grid of a window: GRID_S, coarser for windows over MAX_POINTS."""
    return max(GRID_S, w.duration_s / MAX_POINTS)


def job_phases(job: pd.Series, spec: TrainingJob, wait_w: float, idle_w: float,
               breaks: list[tuple[float, float, str]], a: float, b: float, end: float
               ) -> list[tuple[float, float, str, float]]:
    """(start, end, phase, W per GPU) of one job inside [a, b): steps from its start and
    after each break (checkpoint or restart), breaks at idle power."""
    out: list[tuple[float, float, str, float]] = []
    phases = [("compute", float(job["compute_s"]), float(job["busy_power_w"])),
              ("bubble", float(job["bubble_s"]), wait_w),
              ("allreduce", float(job["exposed_dp_s"]), wait_w)]
    step = sum(d for _, d, _ in phases)
    t = float(job["start_s"])
    for lo, hi, kind in [*sorted(breaks), (end, end, "end")]:
        if t < a:  # skip whole steps before the window
            t += np.floor((min(lo, a) - t) / step) * step if step > 0 else 0.0
        while t < min(lo, b):
            for name, d, w in phases:
                s0, s1 = t, min(t + d, lo)
                if s1 > a and s0 < b and s1 > s0:
                    out.append((max(s0, a), min(s1, b), name, w))
                t += d
                if t >= lo:
                    break
        if kind != "end" and hi > a and lo < b:
            out.append((max(lo, a), min(hi, b), kind, idle_w))
        t = max(t, hi)
    return out


def trace(s: Scenario, ctx: Context, tables: dict[str, pd.DataFrame]
          ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, object]]:
    """The phase records per job, the meter's trace (piecewise constant) and the
    summary entry: swing, ramp and the battery the grid's ramp limit asks for."""
    w = s.simulation.power_trace
    assert w is not None
    a, b = w.start_s, w.start_s + w.duration_s
    power = tables["power"]
    fac = power[power["domain"] == "facility"].sort_values("t_start_s")
    edges = np.append(fac["t_start_s"].to_numpy(float), fac["t_end_s"].to_numpy(float)[-1])
    meter = (fac["power_w"] + fac["cooling_w"].fillna(0) + fac["losses_w"].fillna(0)
             ).to_numpy(float)
    ratio = np.divide(meter, fac["power_w"].to_numpy(float),
                      out=np.ones_like(meter), where=fac["power_w"].to_numpy(float) > 0)
    dt = grid_step_s(w)
    grid = np.arange(a, b, dt) + dt / 2
    k = np.clip(np.searchsorted(edges, grid, side="right") - 1, 0, len(meter) - 1)
    p = meter[k].copy()
    records = []
    for job, per_gpu, gpus in _jobs(s, ctx, tables, a, b):
        records += [{"job": job, "start_s": x0, "end_s": x1, "phase": ph,
                     "gpu_power_w": wv * gpus} for x0, x1, ph, wv in per_gpu]
        g = np.zeros_like(grid)
        for x0, x1, _, wv in per_gpu:  # grid points by index: linear in records + points
            g[np.searchsorted(grid, x0):np.searchsorted(grid, x1)] = wv * gpus
        mean = pd.Series(g).groupby(k).transform("mean").to_numpy()
        p += (g - mean) * ratio[k]
    phases = pd.DataFrame(records, columns=["job", "start_s", "end_s", "phase", "gpu_power_w"])
    out = pd.DataFrame({"t_s": grid - dt / 2, "facility_w": p})
    return phases, _compress(out, dt), summarise(p, w)


def _jobs(s: Scenario, ctx: Context, tables: dict[str, pd.DataFrame], a: float, b: float
          ) -> list[tuple[str, list[tuple[float, float, str, float]], int]]:
    jobs = tables.get("jobs", pd.DataFrame())
    specs = {w.name: w for w in s.workloads if isinstance(w, TrainingJob)}
    cps = tables.get("checkpoints", pd.DataFrame(columns=["job", "start_s", "end_s"]))
    fails = tables.get("failures", pd.DataFrame(columns=["job", "time_s"]))
    out = []
    for _, j in jobs.iterrows():
        if pd.isna(j["start_s"]) or j["job"] not in specs:
            continue
        spec = specs[str(j["job"])]
        end = float(j["end_s"]) if pd.notna(j["end_s"]) else s.simulation.duration_s
        if end <= a or float(j["start_s"]) >= b:
            continue
        m = step_model(spec, ctx.catalog, ctx.store, s.fleet.network.link_latency_us * 1e-6)
        breaks = [(float(c["start_s"]), float(c["end_s"]), "checkpoint")
                  for _, c in cps[cps["job"] == j["job"]].iterrows()]
        breaks += [(float(f["time_s"]), float(f["time_s"]) + spec.failures.restart_s,
                    "restart") for _, f in fails[fails["job"] == j["job"]].iterrows()]
        idle = ctx.catalog.gpu(spec.gpu).idle_power_w
        out.append((str(j["job"]), job_phases(j, spec, m.wait_power_w, idle, breaks, a, b,
                                               end), int(j["gpus"])))
    return out


def summarise(p: np.ndarray, w: PowerTrace) -> dict[str, object]:
    """Swing (MW), steepest ramp (MW/s) and, with a grid ramp limit, the battery."""
    dt = grid_step_s(w)
    n = max(round(w.ramp_window_s / dt), 1)
    means = p[: len(p) // n * n].reshape(-1, n).mean(axis=1)
    ramp = float(np.abs(np.diff(means)).max() / w.ramp_window_s) if len(means) > 1 else 0.0
    out: dict[str, object] = {"start_s": w.start_s, "duration_s": w.duration_s,
                              "largest_swing_mw": float(p.max() - p.min()) / 1e6,
                              "steepest_ramp_mw_per_s": ramp / 1e6,
                              "ramp_window_s": w.ramp_window_s}
    if w.grid_ramp_kw_per_s is not None:
        g = ramp_limited(p, w.grid_ramp_kw_per_s * 1e3 * dt)
        gap = p - g
        stored = np.cumsum(gap) * dt / 3600.0  # Wh the battery has given since the start
        span = max(float(stored.max()), 0.0) - min(float(stored.min()), 0.0)
        out |= {"grid_ramp_kw_per_s": w.grid_ramp_kw_per_s,
                "battery_power_kw": float(np.abs(gap).max()) / 1e3,
                "battery_energy_kwh": span / 1e3}
    return out


def ramp_limited(p: np.ndarray, step: float) -> np.ndarray:
    """The closest path to p that moves at most `step` per grid point (from p[0])."""
    g = np.empty_like(p)
    g[0] = p[0]
    for i in range(1, len(p)):
        g[i] = min(max(p[i], g[i - 1] - step), g[i - 1] + step)
    return g


def _compress(t: pd.DataFrame, dt: float) -> pd.DataFrame:
    """The trace as its runs of equal power: t_s, t_end_s, facility_w."""
    change = np.r_[True, np.abs(np.diff(t["facility_w"].to_numpy())) > 1e-9]
    starts = t["t_s"].to_numpy()[change]
    ends = np.r_[starts[1:], t["t_s"].iloc[-1] + dt]
    return pd.DataFrame({"t_s": starts, "t_end_s": ends,
                         "facility_w": t["facility_w"].to_numpy()[change]})
