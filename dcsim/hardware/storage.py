"""The shared parallel file system: concurrent transfers share its bandwidth.

Reads and writes are separate pools (a parallel file system quotes aggregate read
and write bandwidth separately). A transfer by n servers wants n x the per-client
limit; the transfers in flight share the pool's aggregate max-min fairly, as in
dcsim.hardware.network, and are re-shared whenever one starts, ends or is dropped
(a job that fails mid-write abandons its checkpoint). Bytes moved are integrated
into time buckets for links.parquet.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy

from dcsim.engine.metrics import spread
from dcsim.hardware.network import water_fill


@dataclass
class _Transfer:
    left_bytes: float
    demand_byte_s: float
    done: simpy.Event
    rate: float = 0.0


class _Pool:
    def __init__(self, aggregate_byte_s: float, buckets: int) -> None:
        self.capacity = aggregate_byte_s
        self.active: dict[int, _Transfer] = {}
        self.moved = np.zeros(buckets)  # bytes per time bucket


class SharedStorage:
    """Checkpoint writes and restores of every job, sharing one file system."""

    def __init__(self, env: simpy.Environment, write_byte_s: float, read_byte_s: float,
                 per_client_byte_s: float, bucket_s: float, buckets: int) -> None:
        self.env, self.bucket_s = env, bucket_s
        self.per_client_byte_s = per_client_byte_s
        self.pools = {True: _Pool(write_byte_s, buckets), False: _Pool(read_byte_s, buckets)}
        self._t = 0.0
        self._next_id = 0
        self._generation = 0

    def transfer(self, nbytes: float, clients: int, write: bool) -> tuple[int, simpy.Event]:
        """Start moving nbytes with `clients` servers; the event fires when it is done."""
        self._advance()
        key = self._next_id
        self._next_id += 1
        done = self.env.event()
        demand = clients * self.per_client_byte_s
        self.pools[write].active[key] = _Transfer(nbytes, demand, done)
        self._reshare()
        return key, done

    def drop(self, key: int) -> None:
        """Abandon a transfer (its job failed); the others get its share."""
        self._advance()
        for pool in self.pools.values():
            pool.active.pop(key, None)
        self._reshare()

    def _advance(self) -> None:
        now = self.env.now
        dt = now - self._t
        if dt <= 0:
            return
        for pool in self.pools.values():
            flow = sum(tr.rate for tr in pool.active.values())
            for tr in pool.active.values():
                tr.left_bytes -= tr.rate * dt
            spread(pool.moved, self._t, now, flow * dt, self.bucket_s)
        self._t = now

    def _reshare(self) -> None:
        self._generation += 1
        soonest = np.inf
        for pool in self.pools.values():
            # done: under a microsecond left at its last rate (clock rounding leaves dust)
            for key in [k for k, tr in pool.active.items()
                        if tr.left_bytes <= max(tr.rate * 1e-6, 1e-3)]:
                pool.active.pop(key).done.succeed()
            trs = list(pool.active.values())
            if not trs:
                continue
            rates = water_fill(pool.capacity, [tr.demand_byte_s for tr in trs])
            for tr, r in zip(trs, rates, strict=True):
                tr.rate = float(r)
                soonest = min(soonest, tr.left_bytes / tr.rate)
        if np.isfinite(soonest):
            self.env.process(self._wake(self._generation, soonest))

    def _wake(self, generation: int, delay: float) -> Generator[simpy.Event, None, None]:
        yield self.env.timeout(delay)
        if generation == self._generation:  # nothing changed meanwhile
            self._advance()
            self._reshare()

    def links_table(self, duration_s: float) -> pd.DataFrame:
        """Per pool (storage/write, storage/read) and bucket: mean throughput and utilisation."""
        self._advance()
        rows = []
        for write, pool in self.pools.items():
            n = pool.moved.size
            starts = np.arange(n) * self.bucket_s
            dt = np.minimum(starts + self.bucket_s, duration_s) - starts
            load = pool.moved / dt
            rows.append(pd.DataFrame({
                "link": "storage/write" if write else "storage/read", "t_start_s": starts,
                "t_end_s": starts + dt, "capacity_byte_s": pool.capacity, "load_byte_s": load,
                "utilization": load / pool.capacity}))
        return pd.concat(rows, ignore_index=True)

