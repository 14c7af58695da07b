"""Request tables of inference services: arrival time, prompt and output lengths, and
which shared prefix and conversation (session) each request belongs to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dcsim.errors import DcsimError, Problem
from dcsim.workloads.arrivals import (
    diurnal_times,
    gamma_times,
    poisson_times,
    scale_trace,
    step_times,
)
from dcsim.workloads.lengths import sample_lengths
from dcsim.workloads.spec import (
    DiurnalArrivals,
    GammaArrivals,
    InferenceService,
    PoissonArrivals,
    Sessions,
    SharedPrefix,
    StepArrivals,
    TraceArrivals,
)
from dcsim.workloads.traces import load_trace, resolve_trace_path

COLUMNS = ("arrival_s", "prompt_tokens", "output_tokens", "prefix_group", "prefix_tokens",
           "session", "turn", "think_s", "priority_class", "priority", "max_queue_s")


def service_requests(svc: InferenceService, duration_s: float, seed_seq: np.random.SeedSequence,
                     base_dir: Path | None = None) -> pd.DataFrame:
    """Requests of one service over [0, duration_s) (COLUMNS): arrival_s (NaN for a
    later turn of a generated session: it arrives think_s after the previous turn's
    answer), prompt_tokens (a shared prefix and the session's history included),
    output_tokens, prefix_group (-1: none) and prefix_tokens, session (-1: none), turn
    (from 0) and think_s; priority_class (index into svc.classes, -1: none), its
    priority and max_queue_s (NaN: no limit)."""
    # streams by index: spawn(7) gives the first four spawn(4) gives
    rngs = tuple(np.random.default_rng(s) for s in seed_seq.spawn(7))
    table = _requests(svc, duration_s, rngs[:6], base_dir)
    return _with_classes(table, svc, rngs[6], base_dir)


def _requests(svc: InferenceService, duration_s: float, rngs: tuple[np.random.Generator, ...],
              base_dir: Path | None) -> pd.DataFrame:
    arr_rng, prompt_rng, out_rng, prefix_rng, turn_rng, think_rng = rngs
    a = svc.arrival
    if isinstance(a, TraceArrivals):
        return _trace_requests(svc, a, duration_s, rngs, base_dir)
    if isinstance(a, PoissonArrivals):
        times = poisson_times(a, duration_s, arr_rng)
    elif isinstance(a, GammaArrivals):
        times = gamma_times(a, duration_s, arr_rng)
    elif isinstance(a, DiurnalArrivals):
        times = diurnal_times(a, duration_s, arr_rng)
    elif isinstance(a, StepArrivals):
        times = step_times(a, duration_s, arr_rng)
    else:
        raise TypeError(f"unknown arrival spec {a!r}")
    if svc.sessions is not None:
        return session_requests(svc, svc.sessions, times, (prompt_rng, out_rng, prefix_rng,
                                                           turn_rng, think_rng), base_dir)
    return _independent(svc, times, None, None, (prompt_rng, out_rng, prefix_rng), base_dir)


def _independent(svc: InferenceService, times: np.ndarray, prompts: np.ndarray | None,
                 outputs: np.ndarray | None, rngs: tuple[np.random.Generator, ...],
                 base_dir: Path | None, draw_prefix: bool = True) -> pd.DataFrame:
    """One request per arrival time, each on its own (no session); with draw_prefix,
    each draws a shared prefix (else the caller sets them)."""
    prompt_rng, out_rng, prefix_rng = rngs
    n = times.size
    if prompts is None:
        prompts = sample_lengths(svc.prompt_tokens, n, prompt_rng, "prompt_tokens", base_dir)
    if outputs is None:
        outputs = sample_lengths(svc.output_tokens, n, out_rng, "output_tokens", base_dir)
    groups, prefix = prefix_groups(svc.shared_prefix if draw_prefix else None, n, prefix_rng)
    return _table(times, prompts.astype(np.int64) + prefix, outputs, groups, prefix,
                  np.full(n, -1), np.zeros(n), np.zeros(n))


def _table(times: np.ndarray, prompts: np.ndarray, outputs: np.ndarray, groups: np.ndarray,
           prefix: np.ndarray, session: np.ndarray, turn: np.ndarray, think: np.ndarray
           ) -> pd.DataFrame:
    cols = (times, prompts, outputs, groups, prefix, session, turn, think)
    return pd.DataFrame({k: np.asarray(v, dtype=float if k in ("arrival_s", "think_s")
                                       else np.int64) for k, v in zip(COLUMNS[:8], cols, strict=True)})


def _with_classes(t: pd.DataFrame, svc: InferenceService, rng: np.random.Generator,
                  base_dir: Path | None) -> pd.DataFrame:
    """Each request's class (a session keeps one for all its turns): from the trace's
    priority_class column, else drawn by share; and the class's priority and limit."""
    n = len(t)
    limit = svc.max_queue_s if svc.max_queue_s is not None else np.nan
    if svc.classes is None:
        return t.assign(priority_class=np.full(n, -1), priority=np.zeros(n, np.int64),
                        max_queue_s=np.full(n, limit))
    names = [c.name for c in svc.classes]
    traced = t.pop("traced_class") if "traced_class" in t else None
    if traced is not None:
        known = pd.Series(traced).isin(names).to_numpy()
        if not known.all():
            bad = str(traced[np.flatnonzero(~known)[0]])
            raise DcsimError(Problem("priority_class", bad, f"one of the service's classes: "
                                     f"{', '.join(names)}", str(svc.arrival.model_dump()
                                                                .get("path", ""))))
        idx = pd.Index(names).get_indexer(traced)
    else:
        unit = np.where(t["session"] >= 0, t["session"], -1 - np.arange(n))
        _, first, inverse = np.unique(unit, return_index=True, return_inverse=True)
        drawn = rng.choice(len(names), size=first.size, p=[c.share for c in svc.classes])
        idx = drawn[inverse]
    pri = np.array([c.priority for c in svc.classes], dtype=np.int64)
    lim = np.array([c.max_queue_s if c.max_queue_s is not None else limit
                    for c in svc.classes], dtype=float)
    return t.assign(priority_class=idx.astype(np.int64), priority=pri[idx],
                    max_queue_s=lim[idx])


def session_requests(svc: InferenceService, spec: Sessions, starts: np.ndarray,
                      rngs: tuple[np.random.Generator, ...], base_dir: Path | None
                      ) -> pd.DataFrame:
    """Every turn of every session started at `starts`. Turn k's prompt is the prefix,
    the new tokens and answers of turns 0..k-1, and its own new tokens."""
    prompt_rng, out_rng, prefix_rng, turn_rng, think_rng = rngs
    turns = session_turns(spec, starts.size, turn_rng)
    n = int(turns.sum())
    first = np.concatenate([[0], np.cumsum(turns)[:-1]]).astype(np.int64)
    session = np.repeat(np.arange(starts.size), turns)
    turn = np.arange(n) - np.repeat(first, turns)
    new = sample_lengths(svc.prompt_tokens, n, prompt_rng, "prompt_tokens", base_dir)
    outputs = sample_lengths(svc.output_tokens, n, out_rng, "output_tokens", base_dir)
    groups, prefix = prefix_groups(svc.shared_prefix, starts.size, prefix_rng)
    spent = new.astype(np.int64) + outputs
    before = np.cumsum(spent) - spent  # tokens of earlier rows, all sessions
    history = before - np.repeat(before[first], turns)
    think = think_times(spec, n, think_rng)
    think[turn == 0] = 0.0
    arrival = np.where(turn == 0, np.repeat(starts, turns), np.nan)
    pre = np.repeat(prefix, turns)
    return _table(arrival, pre + history + new, outputs, np.repeat(groups, turns), pre,
                  session, turn, think)


def expected_turns(spec: Sessions) -> float:
    """Mean turns a session, after clipping: sum_{k<M} (1 - p)^k = (1 - (1 - p)^M) / p."""
    if spec.turns == "constant":
        return float(int(spec.mean_turns))
    p = 1.0 / spec.mean_turns
    return (1.0 - (1.0 - p) ** spec.max_turns) / p


def session_turns(spec: Sessions, n: int, rng: np.random.Generator) -> np.ndarray:
    """Turns of n sessions: geometric with mean mean_turns (P(T = k) = (1 - p)^(k-1) p,
    p = 1 / mean_turns), or constant; clipped to max_turns."""
    if spec.turns == "constant":
        return np.full(n, int(spec.mean_turns), dtype=np.int64)
    return np.minimum(rng.geometric(1.0 / spec.mean_turns, n), spec.max_turns).astype(np.int64)


def think_times(spec: Sessions, n: int, rng: np.random.Generator) -> np.ndarray:
    """Seconds between an answer and the next prompt: exponential or constant."""
    if spec.think_time == "constant":
        return np.full(n, spec.mean_think_time_s)
    return rng.exponential(spec.mean_think_time_s, n)


def _trace_requests(svc: InferenceService, a: TraceArrivals, duration_s: float,
                    rngs: tuple[np.random.Generator, ...], base_dir: Path | None
                    ) -> pd.DataFrame:
    """Requests replayed from a trace; its optional session_id and prefix_group columns
    (dcsim.workloads.traces) become sessions replayed as traced and prefix groups."""
    arr_rng, prompt_rng, out_rng, prefix_rng = rngs[:4]
    trace = load_trace(resolve_trace_path(a.path, base_dir))
    picked = scale_trace(trace["arrival_s"].to_numpy(), a, arr_rng)
    idx, times = picked[:, 0].astype(np.int64), picked[:, 1]
    keep = times < duration_s
    idx, times = idx[keep], times[keep]
    if svc.sessions is not None:
        if "session_id" in trace:
            raise DcsimError(Problem("sessions", "given", "no sessions section with a trace "
                                     "that has a session_id column (its sessions replay as "
                                     "traced)", a.path))
        return session_requests(svc, svc.sessions, times, rngs[1:], base_dir)
    prompts = outputs = None
    if a.use_token_lengths:
        prompts = np.maximum(trace["prompt_tokens"].to_numpy()[idx], 1)
        outputs = np.maximum(trace["output_tokens"].to_numpy()[idx], 1)
    traced = "prefix_group" in trace and svc.shared_prefix is not None
    out = _independent(svc, times, prompts, outputs, (prompt_rng, out_rng, prefix_rng),
                       base_dir, draw_prefix=not traced)
    if "priority_class" in trace and svc.classes is not None:
        out["traced_class"] = trace["priority_class"].to_numpy()[idx]
    if "session_id" in trace:
        copy = pd.Series(idx).groupby(idx).cumcount().to_numpy()  # which copy of its row
        sid = trace["session_id"].to_numpy()[idx]
        out["session"] = np.where(sid >= 0, sid * (copy.max(initial=0) + 1) + copy, -1)
        order = out.groupby("session").cumcount().to_numpy()
        out["turn"] = np.where(sid >= 0, order, 0)
    if traced:
        assert svc.shared_prefix is not None
        _traced_groups(out, trace["prefix_group"].to_numpy()[idx], svc.shared_prefix, a.path)
    return out


def _traced_groups(out: pd.DataFrame, groups: np.ndarray, spec: SharedPrefix, path: str
                   ) -> None:
    """Take the trace's prefix groups: a traced prompt already holds its prefix."""
    has = groups >= 0
    short = has & (out["prompt_tokens"].to_numpy() <= spec.tokens)
    if short.any():
        i = int(np.flatnonzero(short)[0])
        raise DcsimError(Problem("shared_prefix.tokens", spec.tokens, "fewer tokens than "
                                 "every traced prompt of a prefix_group (a request of "
                                 f"{int(out['prompt_tokens'].iat[i])} prompt tokens has "
                                 "that prefix)", path))
    out["prefix_group"] = np.where(has, groups, -1)
    out["prefix_tokens"] = np.where(has, spec.tokens, 0)


def prefix_groups(spec: SharedPrefix | None, n: int, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per request: the shared prefix it starts with (-1: none) and its tokens. Prefix k
    (0-based) is drawn with probability (k + 1)^-s / sum_j (j + 1)^-s."""
    if spec is None:
        return np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    weights = np.arange(1, spec.groups + 1, dtype=float) ** -spec.zipf_s
    groups = rng.choice(spec.groups, size=n, p=weights / weights.sum()).astype(np.int64)
    return groups, np.full(n, spec.tokens, dtype=np.int64)
