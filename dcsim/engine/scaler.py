"""One service's replica target, followed through cold starts and drains; the schedule
and the autoscaler that move it (see dcsim.engine.scaling for the rules)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

import simpy

from dcsim.engine.costs import IterationCosts
from dcsim.engine.replica import Replica
from dcsim.engine.router import Router
from dcsim.engine.scaling import Log, Servers, Step
from dcsim.hardware.storage import SharedStorage
from dcsim.workloads.scaling import Autoscaler

if TYPE_CHECKING:
    from dcsim.engine.build import RunModel


class Scaler:
    """Keeps `target` replicas of one service loading or serving."""

    def __init__(self, env: simpy.Environment, service: int, replicas: list[Replica],
                 server_of: list[int], router: Router, servers: Servers,
                 storage: SharedStorage, weight_bytes: float, warmup_s: float,
                 initial: int, caps: list[float | None], log: Log) -> None:
        self.env, self.service, self.replicas, self.router = env, service, replicas, router
        self.server_of, self.servers, self.storage, self.log = server_of, servers, storage, log
        self.weight_bytes, self.warmup_s = weight_bytes, warmup_s
        self.loading: dict[int, simpy.Process] = {}  # slot -> its cold start
        self.target, self.caps = initial, caps  # caps: per slot, now
        # under the power-capping controller: a replica's tables as its domains stand
        self.costs_now: Callable[[int], IterationCosts] | None = None
        for k, r in enumerate(replicas):
            r.on_stopped = self._stopped
            if k >= initial:
                r.state = "off"  # Servers.start settles its draw and closes it

    def users(self) -> dict[int, int]:
        """Serving replicas per server at the start."""
        out: dict[int, int] = {}
        for k in range(self.target):
            out[self.server_of[k]] = out.get(self.server_of[k], 0) + 1
        return out

    def serving(self) -> list[Replica]:
        """Replicas open for work."""
        return [r for r in self.replicas if r.state not in ("off", "loading") and not r.draining]

    def set_target(self, n: int) -> None:
        """Move to n replicas loading or serving."""
        n = max(0, min(n, len(self.replicas)))
        if n == self.target:
            return
        self.log.add(self.env.now, self.service, -1, -1, "target", n)
        up = n > self.target
        self.target = n
        have = len(self.serving()) + len(self.loading)
        if up:
            self._grow(n - have)
        else:
            self._shrink(have - n)
        self.update_open()

    def _grow(self, k: int) -> None:
        draining = [i for i, r in enumerate(self.replicas) if r.draining and r.state != "off"]
        for i in draining[:k]:
            self.replicas[i].undrain()
            self.log.add(self.env.now, self.service, i, self.server_of[i], "undrain")
        k -= min(k, len(draining))
        off = [i for i, r in enumerate(self.replicas) if r.state == "off"]
        off.sort(key=lambda i: (not self.servers.on[self.server_of[i]], i))
        for i in off[:k]:
            self.loading[i] = self.env.process(self._cold_start(i))

    def _shrink(self, k: int) -> None:
        for i in sorted(self.loading, reverse=True)[:k]:
            self.loading.pop(i).interrupt()
            k -= 1
        ready = [i for i, r in enumerate(self.replicas)
                 if r.state not in ("off", "loading") and not r.draining]
        for i in sorted(ready, reverse=True)[:k]:
            self.log.add(self.env.now, self.service, i, self.server_of[i], "drain")
            self.replicas[i].drain()

    def _cold_start(self, i: int) -> Generator[simpy.Event, object, None]:
        r, si, env = self.replicas[i], self.server_of[i], self.env
        booting = self.servers.acquire(si)
        r.begin_loading()
        key = -1
        try:
            if booting is not None:
                self.log.add(env.now, self.service, i, si, "boot")
                yield booting
            self.log.add(env.now, self.service, i, si, "load", self.weight_bytes)
            key, done = self.storage.transfer(self.weight_bytes, 1, write=False)
            yield done
            key = -1
            self.log.add(env.now, self.service, i, si, "warmup", self.warmup_s)
            yield env.timeout(self.warmup_s)
        except simpy.Interrupt:
            if key >= 0:
                self.storage.drop(key)
            self.log.add(env.now, self.service, i, si, "cancel")
            r.stop()
            return
        del self.loading[i]
        r.ready()
        self.log.add(env.now, self.service, i, si, "ready")
        self.update_open()

    def _stopped(self, r: object) -> None:
        assert isinstance(r, Replica)
        i = self.replicas.index(r)
        self.servers.release(self.server_of[i])
        self.log.add(self.env.now, self.service, i, self.server_of[i], "stopped")
        self.update_open()

    def update_open(self) -> None:
        """Tell the router which replicas take new work."""
        router = self.router
        router.open_slots = [k for k, r in enumerate(self.replicas) if not r.closed]
        if router.pending and router.open_slots:
            held, router.pending = router.pending, []
            for seq in held:
                router.route(seq)

    def retune(self, step: Step) -> None:
        """Apply a step's power limit and batch limit to every slot."""
        for k, r in enumerate(self.replicas):
            if step.caps_w[k] != self.caps[k]:
                self.log.add(self.env.now, self.service, k, self.server_of[k], "limit",
                             math.nan if step.caps_w[k] is None else step.caps_w[k])
                self.caps[k] = step.caps_w[k]
            r.retune(step.costs[k] if self.costs_now is None else self.costs_now(r.index),
                     step.max_num_seqs)


def follow_schedule(env: simpy.Environment, scaler: Scaler, steps: list[Step]
                    ) -> Generator[simpy.Event, None, None]:
    """Apply each step at its time (the first, at 0, is the build's starting point)."""
    for step in steps[1:]:
        yield env.timeout(step.at_s - env.now)
        scaler.retune(step)
        scaler.set_target(step.replicas)


def autoscale(env: simpy.Environment, scaler: Scaler, spec: Autoscaler, most: int
              ) -> Generator[simpy.Event, None, None]:
    """Kubernetes HPA's rule on an engine gauge (see workloads.scaling.Autoscaler)."""
    lo, hi = spec.min_replicas, spec.max_replicas or most
    wanted: deque[tuple[float, int]] = deque()  # recent recommendations (t, replicas)
    last_up = -math.inf
    while True:
        yield env.timeout(spec.interval_s)
        ready = scaler.serving()
        value = gauge(scaler, ready, spec.metric)
        current = scaler.target
        ratio = value / spec.target
        desired = current if abs(ratio - 1) <= spec.tolerance else math.ceil(len(ready) * ratio)
        desired = max(lo, min(hi, desired))
        now = env.now
        wanted.append((now, desired))
        while wanted and wanted[0][0] < now - spec.scale_down_window_s:
            wanted.popleft()
        if desired > current:
            if now - last_up >= spec.scale_up_cooldown_s:
                last_up = now
                scaler.set_target(desired)
        elif desired < current:  # down to the most wanted over the window, never up
            scaler.set_target(min(current, max(n for _, n in wanted)))


def gauge(scaler: Scaler, ready: list[Replica], metric: str) -> float:
    """The metric over the ready replicas (0 if none is ready)."""
    if not ready:
        return 0.0
    if metric == "kv_use":
        return sum(r.used / r.kv_capacity for r in ready) / len(ready)
    shared = scaler.router.shared
    waiting = (len(shared) if shared is not None
               else sum(len(r.waiting) for r in scaler.replicas if not r.draining))
    if metric == "waiting_per_replica":
        return waiting / len(ready)
    running = sum(len(r.running) for r in ready)
    return (running + waiting) / len(ready)


def start_scaling(env: simpy.Environment, model: RunModel, replicas: list[Replica],
                  routers: list[Router], storage: SharedStorage, log: Log,
                  costs_now: Callable[[int], IterationCosts] | None = None) -> Servers | None:
    """Scalers, schedules and autoscalers of the scaled services (None: none is);
    costs_now: the power-capping controller's tables of a replica, if it runs."""
    scaled = [m for m in model.scalings if m is not None]
    if not scaled:
        return None
    fleet = model.scenario.fleet
    on_server: dict[int, list[Replica]] = {}
    for m in scaled:
        for r, si in zip(m.slots, m.servers, strict=True):
            on_server.setdefault(si, []).append(replicas[r])
    servers = Servers(env, on_server, fleet.unused_servers == "switched_off",
                      fleet.server_boot_s, fleet.server_off_after_s, log)
    scalers = []
    for m in scaled:
        mine = [replicas[r] for r in m.slots]
        caps = [model.replicas[r].power_cap_w for r in m.slots]
        scalers.append(Scaler(env, m.service, mine, list(m.servers), routers[m.service],
                              servers, storage, m.weight_bytes, m.spec.warmup_s, m.initial,
                              caps, log))
    scaled_slots = {r for m in scaled for r in m.slots}
    users = {si: 1 for si in on_server  # a fixed replica keeps its server on throughout
             if any(r not in scaled_slots for r in model.placement.servers[si].replicas)}
    for sc in scalers:
        for si, n in sc.users().items():
            users[si] = users.get(si, 0) + n
    servers.start(users)
    for sc, m in zip(scalers, scaled, strict=True):
        sc.costs_now = costs_now
        sc.update_open()
        if isinstance(m.spec, Autoscaler):
            env.process(autoscale(env, sc, m.spec, len(m.slots)))
        else:
            env.process(follow_schedule(env, sc, list(m.steps)))
    return servers
