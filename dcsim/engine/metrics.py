"""Observers: per-request records and per-replica time buckets (plain arrays)."""

from __future__ import annotations

import numpy as np

STATUS = ("unfinished", "finished", "rejected", "aborted")


class RequestLog:
    """One slot per request, filled in as the simulation runs."""

    def __init__(self, n: int) -> None:
        self.replica = np.full(n, -1, dtype=np.int64)
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.energy_j = np.zeros(n)
        self.status = np.zeros(n, dtype=np.int8)  # index into STATUS


class TimeSeries:
    """Per replica and time bucket: energy, busy time and time-integrals of state."""

    def __init__(self, replicas: int, duration_s: float, bucket_s: float) -> None:
        self.bucket_s = bucket_s
        self.n = max(int(np.ceil(duration_s / bucket_s)), 1)
        # lists of lists: scalar updates in the hot loop are much cheaper than numpy indexing
        def grid() -> list[list[float]]:
            return [[0.0] * self.n for _ in range(replicas)]

        self.energy_j = grid()
        self.busy_s = grid()
        self.batch_x_s = grid()  # integral of running batch size
        self.kv_x_s = grid()  # integral of KV tokens in use
        self.queue_x_s = grid()  # integral of waiting requests

    def rows(self, r: int) -> tuple[list[float], ...]:
        """Replica r's buckets: energy, busy time, batch, KV and queue integrals (for a fast
        path in the replica's hot loop; `add` handles intervals across buckets)."""
        return (self.energy_j[r], self.busy_s[r], self.batch_x_s[r], self.kv_x_s[r],
                self.queue_x_s[r])

    def array(self, name: str) -> np.ndarray:
        """One metric as a (replicas, buckets) array."""
        return np.asarray(getattr(self, name), dtype=float).reshape(-1, self.n)

    def add(self, r: int, t0: float, t1: float, energy: float, busy: bool, batch: float,
            kv: float, queue: float) -> None:
        """Spread an interval's energy and state over the buckets it overlaps, by time."""
        if t1 <= t0:
            if energy:
                self.energy_j[r][min(int(t0 / self.bucket_s), self.n - 1)] += energy
            return
        w, span = self.bucket_s, t1 - t0
        b = min(int(t0 / w), self.n - 1)
        last = min(int(t1 / w), self.n - 1)
        given = 0.0
        while True:
            hi = t1 if b == last else (b + 1) * w
            dt = hi - max(t0, b * w)
            # the last bucket takes the remainder, so bucket energies add up to the total
            share = energy - given if b == last else energy * dt / span
            given += share
            self.energy_j[r][b] += share
            if busy:
                self.busy_s[r][b] += dt
            self.batch_x_s[r][b] += batch * dt
            self.kv_x_s[r][b] += kv * dt
            self.queue_x_s[r][b] += queue * dt
            if b == last:
                return
            b += 1
