"""Fit a Correction so the simulator reproduces a real deployment's served requests.

The scenario describes the deployment (one inference service). Its measured requests
are replayed: the same arrival times and prompt and output lengths, through the same
engine settings, with the correction applied to every profile answer of the deployed
(GPU, model, tp) (PhaseCost.adjusted, the same definition the written profile holds).

Latency: the three parameters (prefill scale and overhead per iteration, decode
scale; dcsim.calibration.correction) minimise the sum of squares of log(simulated /
measured) of: TTFT, TPOT and E2E quantiles (10-90 %); median TTFT in bins of prompt
length (a prefill scale grows with the prompt, an overhead does not); median TPOT in
bins of the batch each request shared. Statistics over many requests, not requests one by one:
one request's time jumps when it misses an iteration (the schedule shifts with the
parameters), many requests together move smoothly. Solver: Levenberg-Marquardt on
central differences of a few per cent (wider than the jumps). Energy: the power scale
then follows in closed form, measured GPU energy over simulated (first arrival to
last completion, idle gaps at idle power), repeated because the power limit may clip
part of it. calibration.json reports TTFT, TPOT and E2E percentiles (p50, p90, p99)
and energy per request before and after.

What a measurement can pin down depends on its load: at a light load (most requests
find the replica idle) TTFT is prefill time plus overhead and separates the two
exactly; under heavy load queueing mixes them, and the fit is as good as the noise
of a few thousand requests allows (a hold-out file at another load shows how well
the correction carries over).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dcsim.calibration.correction import Correction
from dcsim.engine.context import Context
from dcsim.engine.simulation import simulate
from dcsim.errors import DcsimError, Problem
from dcsim.results import served_energy_j
from dcsim.scenario import Scenario
from dcsim.workloads.spec import InferenceService
from dcsim.workloads.traces import write_trace

PERCENTILES = (50, 90, 99)
METRICS = ("ttft_s", "tpot_s", "e2e_s")
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)  # the body: tails carry jitter no profile has
BINS = 8  # of prompt length (TTFT) and of the batch shared (TPOT)
MIN_PER_BIN = 5
OVERHEAD_UNIT_S = 0.001  # the fit's overhead in ms, so every entry is of order one
# the fit's vector: prefill scale, prefill overhead (ms), decode scale
LOWER = np.array([0.2, 0.0, 0.2])
UPPER = np.array([5.0, 1000.0, 5.0])
START = np.array([1.0, 0.0, 1.0])
STEPS = np.array([0.05, 1.0, 0.05])  # central differences wide enough to average jumps
MAX_ITERATIONS = 12
ENERGY_ITERATIONS = 12
LOWER_ENERGY, UPPER_ENERGY = 0.2, 5.0  # power scales the fit may reach
DAMPING_TRIES = 8
STALL = 1e-3  # a step that lowers the sum of squares by less is the last
EXACT = 1e-14  # a sum of squares this small: nothing left to fit


@dataclass(frozen=True)
class Replay:
    """A deployment and the requests to replay through it."""

    scenario: Scenario
    service: InferenceService
    context: Context
    key: tuple[str, str, int]  # gpu id, model id, tp of the deployment

    @property
    def gpus(self) -> int:
        """GPUs of the deployment."""
        d = self.service.deployment
        return d.replicas * d.gpus_per_replica


@dataclass(frozen=True)
class Served:
    """Requests as served (arrival order) and GPU energy from first arrival to last
    completion, J (None: not measured); of it, what the GPUs drew idle."""

    requests: pd.DataFrame
    energy_j: float | None
    idle_j: float = 0.0


def the_service(s: Scenario) -> InferenceService:
    """The scenario's one inference service (calibration describes one deployment)."""
    svcs = [w for w in s.workloads if isinstance(w, InferenceService)]
    if len(svcs) != 1 or len(s.workloads) != 1:
        raise DcsimError(Problem("workloads", [w.name for w in s.workloads], "exactly one "
                                 "inference service: the deployment that was measured"))
    return svcs[0]


def replay_of(s: Scenario, ctx: Context, measured: pd.DataFrame, folder: Path) -> Replay:
    """The scenario with the measured arrivals and lengths as its trace (in `folder`), run
    long enough for every request to finish, no warm-up."""
    svc = the_service(s)
    folder.mkdir(parents=True, exist_ok=True)
    trace = folder / "measured_trace.csv"
    write_trace(measured, trace)
    replayed = svc.model_dump() | {
        "arrival": {"kind": "trace", "path": str(trace)},
        "prompt_tokens": None, "output_tokens": None, "shared_prefix": None,
        "sessions": None}
    data = s.model_dump() | {"workloads": [replayed], "optimize": None}
    makespan = float(measured["finish_s"].max())
    data["simulation"] |= {"duration_s": math.ceil(3 * makespan + 10), "warmup_s": 0.0}
    sc = Scenario.model_validate(data)
    d = svc.deployment
    key = (ctx.catalog.gpu(d.gpu).id, ctx.catalog.model(svc.model).id, d.tp)
    return Replay(sc, the_service(sc), ctx, key)


def run_with(rep: Replay, corr: Correction) -> Served:
    """The replayed requests (arrival order) and GPU energy under a correction."""
    gpu, model, tp = rep.key
    store = rep.context.store.with_adjustments(
        {(gpu, model, ph, tp): corr.adjust(ph) for ph in ("prefill", "decode")})
    r = simulate(rep.scenario, context=rep.context.with_store(store))
    req = r.requests
    done = req[req["status"] == "finished"]
    if len(done) < len(req):
        raise DcsimError(Problem("simulation", f"{len(req) - len(done)} replayed requests "
                                 "unfinished", "every request served: check the scenario's "
                                 "deployment (replicas, max_num_seqs, memory) against the "
                                 "measured one"))
    idle_w = rep.context.catalog.gpu(gpu).idle_power_w * rep.gpus
    energy, idle = served_energy_j(r.replicas, done, idle_w, rep.scenario.simulation.duration_s)
    return Served(done.sort_values("arrival_s", kind="stable").reset_index(drop=True), energy,
                  idle)


def latencies(t: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per request TTFT, TPOT (NaN for one output token) and E2E, s."""
    ttft = (t["first_token_s"] - t["arrival_s"]).to_numpy(float)
    n = t["output_tokens"].to_numpy(float)
    tpot = np.where(n > 1, (t["finish_s"] - t["first_token_s"]).to_numpy(float)
                    / np.maximum(n - 1, 1), np.nan)
    e2e = (t["finish_s"] - t["arrival_s"]).to_numpy(float)
    return {"ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e}


def decoding_alongside(t: pd.DataFrame) -> np.ndarray:
    """Mean number of requests decoding (itself included) over each request's decode
    span, first token to finish: the batch it shared, as measured."""
    a, b = t["first_token_s"].to_numpy(float), t["finish_s"].to_numpy(float)
    times = np.concatenate([a, b])
    order = np.argsort(times, kind="stable")
    times = times[order]
    level = np.cumsum(np.concatenate([np.ones_like(a), -np.ones_like(b)])[order])
    area = np.concatenate([[0.0], np.cumsum(level[:-1] * np.diff(times))])
    span = b - a
    inside = np.interp(b, times, area) - np.interp(a, times, area)
    return np.where(span > 0, inside / np.where(span > 0, span, 1.0), 1.0)


def _binned(sim: np.ndarray, real: np.ndarray, by: np.ndarray) -> np.ndarray:
    """log(simulated / measured) median in each of BINS equal-count bins of `by`."""
    edges = np.quantile(by, np.linspace(0, 1, BINS + 1)[1:-1])
    group = np.searchsorted(edges, by, side="right")
    sel = [(group == g) & np.isfinite(real) & np.isfinite(sim) for g in range(BINS)]
    return _log_ratio(np.array([np.median(sim[k]) for k in sel if k.sum() >= MIN_PER_BIN]),
                      np.array([np.median(real[k]) for k in sel if k.sum() >= MIN_PER_BIN]))


def _log_ratio(sim: np.ndarray, real: np.ndarray) -> np.ndarray:
    """log(sim / real) where both are positive (a zero TPOT, say, carries no scale)."""
    ok = (sim > 0) & (real > 0)
    return np.log(sim[ok] / real[ok])


def residuals(sim: pd.DataFrame, real: pd.DataFrame) -> np.ndarray:
    """log(simulated / measured) of: TTFT, TPOT and E2E quantiles (10 to 90 %); median
    TTFT in bins of prompt length (a prefill scale grows with the prompt, an overhead
    does not); median TPOT in bins of the batch each request shared
    (decoding_alongside). The requests are the same on both sides; statistics over many
    of them keep the objective smooth where single requests jump between iterations,
    and medians and quantiles below the tail keep a few stalled requests (a garbage
    collection, a page fault: nothing a profile describes) from pulling the fit."""
    s, r = latencies(sim), latencies(real)
    out = [_log_ratio(np.nanquantile(s[k], QUANTILES), np.nanquantile(r[k], QUANTILES))
           for k in METRICS if np.isfinite(r[k]).any()]
    out.append(_binned(s["ttft_s"], r["ttft_s"], real["prompt_tokens"].to_numpy(float)))
    out.append(_binned(s["tpot_s"], r["tpot_s"], decoding_alongside(real)))
    return np.concatenate(out)


def fit_latency(rep: Replay, real: pd.DataFrame) -> Correction:
    """The latency parameters minimising `residuals` (module doc)."""
    def f(x: np.ndarray) -> np.ndarray:
        return residuals(run_with(rep, _correction(x)).requests, real)

    return _correction(levenberg_marquardt(f, START, LOWER, UPPER, STEPS))


def levenberg_marquardt(f: Callable[[np.ndarray], np.ndarray], x0: np.ndarray,
                        lower: np.ndarray, upper: np.ndarray, steps: np.ndarray,
                        iterations: int = MAX_ITERATIONS) -> np.ndarray:
    """Damped Gauss-Newton on central differences of fixed steps, within the bounds:
    (J'J + lam diag J'J) d = -J'r; a step that lowers the sum of squares is taken and
    lam shrinks tenfold, else lam grows tenfold. Stops when no step lowers it, a step
    lowers it by under STALL of itself or below EXACT (measurements the model meets
    exactly), or moves no parameter by a thousandth of its difference step."""
    x, r = x0.astype(float), f(x0)
    lam = 1e-2
    for _ in range(iterations):
        jac = np.column_stack([_slope(f, x, i, steps[i], lower, upper) for i in range(len(x))])
        jtj, g = jac.T @ jac, jac.T @ r
        for _ in range(DAMPING_TRIES):
            d = np.linalg.solve(jtj + lam * np.diag(np.diag(jtj) + 1e-12), -g)
            trial = np.clip(x + d, lower, upper)
            rt = f(trial)
            if rt @ rt < r @ r:
                break
            lam *= 10
        else:
            return x
        done = (r @ r - rt @ rt < STALL * (r @ r) or rt @ rt < EXACT
                or (np.abs(trial - x) < steps * 1e-3).all())
        x, r, lam = trial, rt, max(lam / 10, 1e-6)
        if done:
            break
    return x


def _slope(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, i: int, h: float,
           lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Central difference of f along parameter i, one-sided at a bound."""
    up, down = x.copy(), x.copy()
    up[i], down[i] = min(x[i] + h, upper[i]), max(x[i] - h, lower[i])
    return (f(up) - f(down)) / (up[i] - down[i])


def fit_energy(rep: Replay, corr: Correction, energy_j: float) -> Correction:
    """The power scale that makes the simulated GPU energy the measured one. The scale
    acts on the iterations' energy, not on idle gaps: first s = (measured - idle) /
    (simulated - idle), then secant steps on that difference while the power limit
    (or idle floor) clips part of the scale. Refused when idle alone exceeds the
    measured energy, or even the limit cannot draw it."""
    def excess(scale: float) -> tuple[float, float]:
        run = run_with(rep, corr.with_energy(scale))
        if energy_j <= run.idle_j:
            raise DcsimError(Problem("--energy-j", f"{energy_j:.6g} J", f"more than the "
                                     f"{run.idle_j:.6g} J the GPUs draw idle over the run"))
        return run.energy_j - energy_j, run.energy_j - run.idle_j

    s0, (d0, busy) = 1.0, excess(1.0)
    s1 = _clamp(s0 * (busy - d0) / busy)
    for _ in range(ENERGY_ITERATIONS):
        d1, busy = excess(s1)
        if abs(d1) <= 1e-7 * busy or d1 == d0:
            break
        s0, s1, d0 = s1, _clamp(s1 - d1 * (s1 - s0) / (d1 - d0)), d1
    if abs(d1) > 1e-4 * busy:
        raise DcsimError(Problem(
            "--energy-j", f"{energy_j:.6g} J", f"an energy the GPUs can draw over this run "
            f"(all of the deployment's GPUs, first arrival to last completion) at "
            f"{LOWER_ENERGY:g}-{UPPER_ENERGY:g} x the profile's power, between idle and "
            f"their power limit: the closest is {energy_j + d1:.6g} J"))
    return corr.with_energy(s1)


def _clamp(scale: float) -> float:
    return min(max(scale, LOWER_ENERGY), UPPER_ENERGY)


def _correction(x: np.ndarray) -> Correction:
    """From the fit's vector (prefill scale, prefill overhead in ms, decode scale)."""
    return Correction(float(x[0]), float(x[1]) * OVERHEAD_UNIT_S, float(x[2]))


def figures(served: Served) -> dict[str, float]:
    """TTFT, TPOT and E2E percentiles (s) and energy per request (J) of served requests."""
    lat = latencies(served.requests)
    out = {f"{m} p{q}": float(np.nanpercentile(lat[m], q)) for m in METRICS for q in PERCENTILES}
    if served.energy_j is not None:
        out["energy_per_request_j"] = served.energy_j / len(served.requests)
    return out


def errors(sim: dict[str, float], real: dict[str, float]) -> dict[str, float]:
    """Signed relative error of each simulated figure against the measured one, %."""
    return {k: 100 * (sim[k] - v) / v for k, v in real.items() if k in sim and v > 0}
