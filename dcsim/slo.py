"""What meeting a latency SLO means, in one place (summaries, verify, calibrate, sweeps
and the report all read it from here).

A service's SLO sets bounds on TTFT, TPOT and end-to-end latency (any may be absent).
Over the requests of a window, at the end time `end_s` of the run:

- a **finished** request *meets* the SLO when every bound holds for it;
- a **rejected** request (no replica would take it, or its queue was full), a
  **timed_out** one (not admitted within its max_queue_s) or an **aborted** one (its
  context can never fit the KV cache) is a miss for every bound;
- a request still **unfinished** at the end is a miss for a bound it has already broken,
  whatever happens next: no first token yet and older than the TTFT bound; older than
  the E2E bound; or a first token so long ago that even finishing now would put its TPOT
  over the bound, (end - first token) / (output tokens - 1). Otherwise it is left out:
  it may still make it, and guessing would bias the answer either way.

`slo_attainment` = finished requests meeting every bound / requests judged (finished,
rejected, timed out, aborted, and unfinished ones already late for some bound). `meets_p99` holds
when, per bound, the 99th percentile over finished requests plus the misses (counted as
infinitely late) is within the bound.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dcsim.workloads.spec import Slo

BOUNDS = (("ttft_s", "ttft_p99_s"), ("tpot_s", "tpot_p99_s"), ("e2e_s", "e2e_p99_s"))
FAILED = ("rejected", "aborted", "timed_out")
NEVER_S = 1e300


def bounds(slo: Slo) -> dict[str, float]:
    """The bounds the SLO sets, by request column (ttft_s, tpot_s, e2e_s), s."""
    return {col: getattr(slo, field) for col, field in BOUNDS
            if getattr(slo, field) is not None}


def met(requests: pd.DataFrame, slo: Slo) -> pd.Series:
    """Per request: finished, and every bound holds (a missing TPOT of a one-token
    answer holds)."""
    ok = requests["status"] == "finished"
    for col, bound in bounds(slo).items():
        ok &= requests[col].fillna(0.0) <= bound
    return ok


def late_for(requests: pd.DataFrame, slo: Slo, end_s: float, col: str) -> pd.Series:
    """Per request: a miss for the `col` bound that no later event can undo (failed, or
    unfinished and already past the bound at end_s)."""
    bound = bounds(slo).get(col)
    status = requests["status"]
    failed = status.isin(FAILED)
    if bound is None:
        return failed & False
    open_ = status == "unfinished"
    age = end_s - requests["arrival_s"]
    first = requests["first_token_s"]
    if col == "ttft_s":
        broken = first.isna() & (age > bound)
    elif col == "e2e_s":
        broken = age > bound
    else:
        steps = (requests["output_tokens"] - 1).clip(lower=1)
        broken = first.notna() & (requests["output_tokens"] > 1) & (
            (end_s - first) / steps > bound)
    return failed | (open_ & broken)


def late(requests: pd.DataFrame, slo: Slo, end_s: float) -> pd.Series:
    """Per request: a miss for some bound that no later event can undo."""
    out = requests["status"].isin(FAILED)
    for col in bounds(slo):
        out |= late_for(requests, slo, end_s, col)
    return out


def slo_attainment(requests: pd.DataFrame, slo: Slo, end_s: float) -> float | None:
    """Share of judged requests that met every bound (None when none can be judged yet)."""
    finished = requests["status"] == "finished"
    judged = int(finished.sum()) + int((late(requests, slo, end_s) & ~finished).sum())
    return int(met(requests, slo).sum()) / judged if judged else None


def meets_p99(requests: pd.DataFrame, slo: Slo, end_s: float) -> bool:
    """Every bound holds at p99 over finished requests and the misses (as infinitely late)."""
    done = requests[requests["status"] == "finished"]
    for col, bound in bounds(slo).items():
        misses = int(late_for(requests, slo, end_s, col).sum())
        # a huge finite stand-in for "never": interpolating between infinities gives NaN
        v = np.concatenate([done[col].dropna().to_numpy(), np.full(misses, NEVER_S)])
        if v.size and not np.quantile(v, 0.99) <= bound:
            return False
    return True
