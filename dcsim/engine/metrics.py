"""Observers: per-request records and time-bucket integrals (plain arrays).

Every series of a run (replicas, training jobs, the job scheduler, cluster replays,
uplinks, the file system) spreads intervals over fixed-width time buckets through
one function, `overlaps`: bucket b covers [b w, (b + 1) w), the last bucket also
takes anything at or after the end of the run, and bucket indices are stepped
rather than recomputed so that float rounding of t / w cannot skip or repeat one.
"""

from __future__ import annotations

import math

import numpy as np

STATUS = ("unfinished", "finished", "rejected", "aborted", "timed_out")
# running batch, KV tokens of the requests, waiting requests, tokens in the prefix cache
SERVING_LEVELS = ("batch_x_s", "kv_x_s", "queue_x_s", "cache_x_s")
JOB_LEVELS = ("gpus_x_s", "active_s")  # GPUs held, time the job holds any


def bucket_count(duration_s: float, bucket_s: float) -> int:
    """Buckets of width bucket_s that cover [0, duration_s) (at least one)."""
    return max(math.ceil(duration_s / bucket_s), 1)


def overlaps(t0: float, t1: float, bucket_s: float, n: int) -> list[tuple[int, float]]:
    """The buckets [t0, t1) touches and the seconds it spends in each, in order.

    Bucket b spans [b w, (b + 1) w); the last bucket (n - 1) is open-ended. A zero-length
    interval gives its one bucket with 0 s; the seconds add up to t1 - t0 up to rounding
    of the bucket edges, and the first bucket starts at max(t0, b w) so that a t0 a hair
    below an edge (t0 / w rounding up) does not count time twice.
    """
    w = bucket_s
    b = min(int(t0 / w), n - 1)
    last = max(min(int(t1 / w), n - 1), b)
    lo = max(t0, b * w)
    out = []
    while b < last:
        hi = (b + 1) * w
        out.append((b, hi - lo))
        lo, b = hi, b + 1
    out.append((last, t1 - lo))
    return out


def spread(acc: np.ndarray, t0: float, t1: float, amount: float, bucket_s: float) -> None:
    """Add `amount`, spread evenly over [t0, t1), to the buckets of `acc` (1-D) it overlaps;
    all of it to t0's bucket when the interval is empty."""
    if t1 <= t0:
        acc[min(int(t0 / bucket_s), acc.size - 1)] += amount
        return
    span = t1 - t0
    for b, dt in overlaps(t0, t1, bucket_s, acc.size):
        acc[b] += amount * dt / span


class LevelIntegral:
    """Time integrals of piecewise-constant levels per bucket, up to an end time.

    `advance(now, values)` integrates the levels held since the last call (values: one
    float or one array per level, all of one shape) and moves the clock to now."""

    def __init__(self, names: tuple[str, ...], duration_s: float, bucket_s: float,
                 shape: tuple[int, ...] = ()) -> None:
        self.bucket_s, self.duration_s = bucket_s, duration_s
        self.n = bucket_count(duration_s, bucket_s)
        self.x = {k: np.zeros((*shape, self.n)) for k in names}
        self.t = 0.0

    def advance(self, now: float, values: dict[str, float | np.ndarray]) -> None:
        """Integrate `values` over [last time, min(now, end)) and move the clock there."""
        now = min(now, self.duration_s)
        if now <= self.t:
            return
        for b, dt in overlaps(self.t, now, self.bucket_s, self.n):
            for k, v in values.items():
                self.x[k][..., b] += v * dt
        self.t = now

    def bucket_seconds(self) -> np.ndarray:
        """Length of each bucket; the last one may be cut by the end of the run."""
        starts = np.arange(self.n) * self.bucket_s
        return np.minimum(starts + self.bucket_s, self.duration_s) - starts

    def means(self) -> dict[str, np.ndarray]:
        """Time-mean level per bucket."""
        dt = self.bucket_seconds()
        return {k: v / dt for k, v in self.x.items()}


class RequestLog:
    """One slot per request, filled in as the simulation runs."""

    def __init__(self, n: int, arrival_s: np.ndarray | None = None) -> None:
        # arrival times: given, or set by the run (a session's later turns); NaN: never
        self.arrival_s = np.full(n, np.nan) if arrival_s is None else arrival_s.copy()
        self.replica = np.full(n, -1, dtype=np.int64)
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.energy_j = np.zeros(n)
        self.status = np.zeros(n, dtype=np.int8)  # index into STATUS
        self.cached = np.zeros(n, dtype=np.int64)  # prompt tokens from the prefix cache


class TimeSeries:
    """Per row (a replica, or a training job) and time bucket: energy, busy time and
    time-integrals of levels (`levels`: SERVING_LEVELS for replicas, JOB_LEVELS for jobs)."""

    def __init__(self, rows: int, duration_s: float, bucket_s: float,
                 levels: tuple[str, ...] = SERVING_LEVELS) -> None:
        self.bucket_s = bucket_s
        self.n = bucket_count(duration_s, bucket_s)
        self.levels = levels

        # lists of lists: scalar updates in the hot loop are much cheaper than numpy indexing
        def grid() -> list[list[float]]:
            """One zeroed row of buckets per series row."""
            return [[0.0] * self.n for _ in range(rows)]

        self.energy_j = grid()
        self.busy_s = grid()
        self._level = [grid() for _ in levels]
        # serving: prompt tokens admitted and those of them found in the prefix cache
        self.prompt_tokens = grid()
        self.cached_tokens = grid()

    def count(self, r: int, t: float, prompt: int, cached: int) -> None:
        """An admission at time t: its prompt tokens and those served from the cache."""
        b = min(int(t / self.bucket_s), self.n - 1)
        self.prompt_tokens[r][b] += prompt
        self.cached_tokens[r][b] += cached

    def rows(self, r: int) -> tuple[list[float], ...]:
        """Row r's buckets: energy, busy time, then each level's integral (for a fast path
        in the replica's hot loop; `add` handles intervals across buckets)."""
        return (self.energy_j[r], self.busy_s[r], *(g[r] for g in self._level))

    def array(self, name: str) -> np.ndarray:
        """One metric as a (rows, buckets) array."""
        grid = (self._level[self.levels.index(name)] if name in self.levels
                else getattr(self, name))
        return np.asarray(grid, dtype=float).reshape(-1, self.n)

    def add(self, r: int, t0: float, t1: float, energy: float, busy: bool,
            *levels: float) -> None:
        """Spread an interval's energy and levels over the buckets it overlaps, by time.
        The last bucket takes the remainder of the energy, so bucket energies add up to
        the total exactly; an empty interval puts all its energy in t0's bucket."""
        if t1 <= t0:
            if energy:
                self.energy_j[r][min(int(t0 / self.bucket_s), self.n - 1)] += energy
            return
        span, given = t1 - t0, 0.0
        parts = overlaps(t0, t1, self.bucket_s, self.n)
        rows = [g[r] for g in self._level]
        for i, (b, dt) in enumerate(parts):
            share = energy - given if i == len(parts) - 1 else energy * dt / span
            given += share
            self.energy_j[r][b] += share
            if busy:
                self.busy_s[r][b] += dt
            for row, level in zip(rows, levels, strict=True):
                row[b] += level * dt
