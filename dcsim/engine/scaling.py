"""Services whose replicas change during a run: targets, cold starts, drains, servers.

A service's target (replicas loading or serving) moves with its schedule's steps or
its autoscaler's decisions. Going up, draining replicas are taken back first (they
hold their model), then replicas whose server is on, then the rest (lowest slot
first). A cold start: boot the server if it is off (server_boot_s at idle draw),
read the weights from the shared file system (a read flow at the per-client
bandwidth, sharing the pool max-min with checkpoint restores), warm up, open.
Going down, loading replicas are cancelled first, then the highest serving slots
drain. A serving server with nothing left running switches off server_off_after_s
later (fleet.unused_servers: switched_off), unless a replica needs it before.

Events: one per step or evaluation, per cold-start stage and per drain, never per
token or per time step of the traffic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import simpy

from dcsim.engine.costs import IterationCosts
from dcsim.engine.metrics import overlaps
from dcsim.engine.replica import Replica

if TYPE_CHECKING:
    from dcsim.engine.build import RunModel

EVENTS = ("target", "boot", "load", "warmup", "ready", "cancel", "drain", "undrain",
          "stopped", "server_on", "server_off", "limit")


@dataclass(frozen=True)
class Step:
    """One step of a schedule as the run applies it: per slot, its cost tables."""

    at_s: float
    replicas: int
    costs: tuple[IterationCosts, ...]  # per slot
    caps_w: tuple[float | None, ...]  # per slot, after budgets (None: the default limit)
    max_num_seqs: int


class Log:
    """What the scalers did: (t_s, service, slot, server, event, value) rows."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, int, int, int, str, float]] = []

    def add(self, t: float, service: int, slot: int, server: int, event: str,
            value: float = float("nan")) -> None:
        self.rows.append((t, service, slot, server, event, value))


class Servers:
    """Power state of the servers that scaled replicas run on."""

    def __init__(self, env: simpy.Environment, on_server: dict[int, list[Replica]],
                 switch_off: bool, boot_s: float, off_after_s: float, log: Log) -> None:
        self.env, self.on_server, self.log = env, on_server, log
        self.switch_off, self.boot_s, self.off_after_s = switch_off, boot_s, off_after_s
        self.users = dict.fromkeys(on_server, 0)  # replicas loading, serving or draining
        self.on = dict.fromkeys(on_server, True)
        self.booting: dict[int, simpy.Event] = {}
        self.version = dict.fromkeys(on_server, 0)  # cancels a pending switch-off
        self.since = dict.fromkeys(on_server, 0.0)  # start of the current on interval
        self.on_intervals: dict[int, list[tuple[float, float]]] = {si: [] for si in on_server}

    def start(self, users: dict[int, int]) -> None:
        """At time 0: servers with no replica serving are off (if the fleet switches
        unused servers off)."""
        for si, reps in self.on_server.items():
            self.users[si] = users.get(si, 0)
            if self.users[si] == 0 and self.switch_off:
                self.on[si] = False
            for r in reps:
                if r.state == "off":
                    r.start_off(self.on[si])

    def acquire(self, si: int) -> simpy.Event | None:
        """A replica needs server si: None if it is on, else the event of its boot."""
        self.users[si] += 1
        self.version[si] += 1
        if self.on[si]:
            return self.booting.get(si)
        now = self.env.now
        self.on[si], self.since[si] = True, now
        for r in self.on_server[si]:
            r.powered(True)
        self.log.add(now, -1, -1, si, "server_on", self.boot_s)
        booted = self.env.timeout(self.boot_s)
        self.booting[si] = booted
        booted.callbacks.append(lambda _e: self.booting.pop(si, None))
        return booted

    def release(self, si: int) -> None:
        """A replica no longer needs server si."""
        self.users[si] -= 1
        if self.users[si] == 0 and self.switch_off:
            self.version[si] += 1
            v = self.version[si]
            self.env.timeout(self.off_after_s).callbacks.append(lambda _e: self._off(si, v))

    def _off(self, si: int, version: int) -> None:
        if version != self.version[si] or self.users[si] or not self.on[si]:
            return
        if si in self.booting:  # still booting: off once it is up
            self.booting[si].callbacks.append(lambda _e: self._off(si, version))
            return
        now = self.env.now
        self.on[si] = False
        for r in self.on_server[si]:
            r.powered(False)
        self.on_intervals[si].append((self.since[si], now))
        self.log.add(now, -1, -1, si, "server_off")

    def on_share(self, n_servers: int, bucket_s: float, n: int, end_s: float) -> np.ndarray:
        """Per server and bucket, the share of the bucket it was on (1 for others)."""
        share = np.ones((n_servers, n))
        width = np.minimum((np.arange(n) + 1) * bucket_s, end_s) - np.arange(n) * bucket_s
        for si in self.on_server:
            spans = self.on_intervals[si] + ([(self.since[si], end_s)] if self.on[si] else [])
            row = np.zeros(n)
            for t0, t1 in spans:
                for b, dt in overlaps(t0, t1, bucket_s, n):
                    row[b] += dt
            share[si] = np.minimum(row / width, 1.0)
        return share


def scaling_table(model: RunModel, log: Log) -> pd.DataFrame:
    """One row per scaling event: t_s, service, replica (global; -1: the service or a
    server), server (name; "" for a service's target), event, value (replicas for a
    target, W for a limit, s for a boot or warm-up, bytes for a load)."""
    cols = ["t_s", "service", "replica", "server", "event", "value"]
    if not log.rows:
        return pd.DataFrame({c: [] for c in cols})
    names = [svc.name for svc in model.services]
    slots = {m.service: m.slots for m in model.scalings if m is not None}
    servers = model.placement.servers
    return pd.DataFrame([{
        "t_s": t, "service": names[svc] if svc >= 0 else "",
        "replica": slots[svc][k] if svc >= 0 and k >= 0 else -1,
        "server": servers[si].name if si >= 0 else "", "event": ev, "value": v}
        for t, svc, k, si, ev, v in log.rows], columns=cols)
