"""The life of a replica that a service's scaling starts and stops during a run.

States beyond serving (idle / busy / block / cutting, dcsim.engine.replica): `off`
(no model loaded; its GPUs draw idle power while the server is on, nothing when it
is off) and `loading` (cold start: it draws idle power and serves nothing). A
replica told to stop drains: the router sends it nothing more and a replica pulling
from a shared queue takes nothing more from it; what it admitted (and, routed to it,
still waits in its own queue) it finishes, then it goes off. Nothing is lost or moved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections import deque

    import simpy

    from dcsim.engine.admission import PriorityWaiting
    from dcsim.engine.costs import IterationCosts
    from dcsim.engine.router import MinTree
    from dcsim.engine.sequence import Seq

SHUT = 1 << 62  # added to the router's load of a replica that takes no new work


class Lifecycle:
    """The start / drain / stop half of a Replica, which holds the fields annotated here."""

    env: simpy.Environment
    state: str
    since: float
    wake: simpy.Event
    _pending: simpy.Event
    costs: IterationCosts
    _dec_rows: list[tuple[float, ...]]
    max_num_seqs: int
    running: dict[Seq, None]
    waiting: deque[Seq] | PriorityWaiting
    current: object
    pulls: bool
    outstanding: int
    loads: list[int] | MinTree | None
    slot: int
    steps: dict[str, int]
    prefills: dict[str, int]
    watch: Callable[..., None] | None
    _woken: Callable[[simpy.Event], None]
    _idle_until: Callable[[float], None]
    _cut: Callable[[], None]
    poke: Callable[[], None]

    def init_lifecycle(self, idle_w: float) -> None:
        self.gap_w = idle_w  # draw while not iterating: idle, or 0 with the server off
        self.closed = 0  # SHUT while the router must not send it work
        self.draining = False
        self.seqs_limit = self.max_num_seqs  # the batch limit a drain suspends
        self.on_stopped: Callable[[Lifecycle], None] | None = None
        self.up_s = 0.0  # time loading, serving or draining (GPU time in use)
        self.loading_j = 0.0  # drawn by cold starts that finished
        self._up_since: float | None = 0.0
        # called after each change of draw (the power-capping controller's meter)
        self.meter: Callable[[Lifecycle], None] | None = None

    @property
    def waiting_here(self) -> bool:
        """Requests wait in this replica's own queue (not a shared one)."""
        return not self.pulls and bool(self.waiting)

    def start_off(self, powered: bool) -> None:
        """At time 0: not serving (its model not loaded), its server on or off."""
        self.wake.callbacks.remove(self._woken)
        self.state, self.closed, self._up_since = "off", SHUT, None
        self.gap_w = self.costs.idle_power_w if powered else 0.0
        self._set_load()
        if self.meter is not None:
            self.meter(self)

    def powered(self, on: bool) -> None:
        """Its server switched on (boot starts) or off."""
        self._settle()
        self.gap_w = self.costs.idle_power_w if on else 0.0
        if self.meter is not None:
            self.meter(self)

    def begin_loading(self) -> None:
        """Cold start begins: idle draw, nothing served."""
        self._settle()
        self.state, self._up_since = "loading", self.env.now

    def ready(self) -> None:
        """Loaded and warm: open for work."""
        self.loading_j += self.gap_w * (self.env.now - self.since)
        self._settle()
        env = self.env
        self.state, self.current, self.draining = "idle", None, False
        self.max_num_seqs = self.seqs_limit
        self.wake = self._pending = env.event()
        self.wake.callbacks.append(self._woken)
        self.closed = 0
        self._set_load()
        if self.pulls and self.waiting:
            self.poke()  # work waits in the shared queue
        if self.watch is not None:
            self.watch(self)

    def drain(self) -> None:
        """Stop taking new work; go off once what it holds is done."""
        self.draining, self.closed = True, SHUT
        if self.pulls:
            self.max_num_seqs = 0  # admits nothing more from the shared queue
        self._set_load()
        if self.state == "idle" and not self.wake.triggered and self.drained():
            self.wake.callbacks.remove(self._woken)
            self.stop()

    def undrain(self) -> None:
        """Taken back into service while draining: no cold start needed."""
        self.draining, self.closed = False, 0
        self.max_num_seqs = self.seqs_limit
        self._set_load()
        self.poke()

    def drained(self) -> bool:
        return self.draining and not self.running and not self.waiting_here

    def stop(self) -> None:
        """Drained: the model is unloaded (called with nothing in flight)."""
        now = self.env.now
        self.state, self.current, self.since = "off", None, now
        if self._up_since is not None:
            self.up_s += now - self._up_since
            self._up_since = None
        if self.watch is not None:
            self.watch(self)
        if self.meter is not None:
            self.meter(self)
        if self.on_stopped is not None:
            self.on_stopped(self)

    def retune(self, costs: IterationCosts, max_num_seqs: int) -> None:
        """A new power limit (its cost tables) and batch limit, from the next iteration:
        a decode block in flight ends at its step in progress."""
        if self.state in ("idle", "off"):  # (a cold start charges its own draw at ready)
            self._settle()
        self.costs, self._dec_rows = costs, costs.decode.rows
        for k in costs.classes:
            self.steps.setdefault(k, 0)
            self.prefills.setdefault(k, 0)
        self.seqs_limit = max_num_seqs
        if not (self.draining and self.pulls):
            self.max_num_seqs = max_num_seqs
        if self.state == "block":
            self.state = "cutting"
            self._cut()

    def close_up_time(self, now: float) -> None:
        """At the end of the run: count the time in use so far."""
        if self._up_since is not None:
            self.up_s += now - self._up_since
            self._up_since = now

    def _settle(self) -> None:
        """Charge the draw since `since` (idle or off) and restart the gap at now."""
        now = self.env.now
        self._idle_until(now)
        self.since = now

    def _set_load(self) -> None:
        if self.loads is not None:
            self.loads[self.slot] = self.outstanding + self.closed
