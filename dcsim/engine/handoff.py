"""The disaggregated-serving half of a Replica (dcsim.engine.disagg drives it).

A prefill replica hands each prefilled request on (`handoff`: True if its KV is to be
sent) and keeps its KV in `parked`, counted in its cache, until `release_kv`. A decode
replica admits a request prefilled elsewhere like a waiting one (Batching.schedule,
Seq.swapped INCOMING) by holding its KV blocks and a batch slot (`incoming`;
`on_receive` starts the transfer), and takes it into the batch at its next iteration
once `deliver`ed (a decode block in flight ends at its step in progress).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import simpy

    from dcsim.engine.admission import PriorityWaiting
    from dcsim.engine.metrics import RequestLog
    from dcsim.engine.paging import Pages
    from dcsim.engine.sequence import Seq


class Handoff:
    """The hand-off half of a Replica, which holds the fields and methods annotated here."""

    waiting: deque[Seq] | PriorityWaiting
    running: dict[Seq, None]
    used: int
    pages: Pages
    pulls: bool
    index: int
    log: RequestLog
    state: str
    wake: simpy.Event
    watch: Callable[[Any], None] | None
    _settle: Callable[[], None]
    _cut: Callable[[], None]
    _free_kv: Callable[[Seq], None]
    _join_decoding: Callable[[Seq], None]
    _change_outstanding: Callable[[int], None]
    poke: Callable[[], None]

    def init_handoff(self) -> None:
        self.handoff: Callable[[Any, Seq], bool] | None = None
        self.on_receive: Callable[[Any, Seq], None] | None = None
        self.parked: dict[Seq, None] = {}
        self.incoming: dict[Seq, None] = {}
        self.arrived: list[Seq] = []

    def _park(self, s: Seq) -> None:
        """Prefilled and handed on: its KV stays (blocks and padding) until sent."""
        self.parked[s] = None
        self.pages.pre_pad += self.pages.pad(s.kv)
        self._change_outstanding(-1)

    def release_kv(self, s: Seq) -> None:
        """A parked sequence's KV has been sent: free its blocks."""
        if self.state == "idle":  # the KV level of the idle gap so far is the old one
            self._settle()
        del self.parked[s]
        self.pages.pre_pad -= self.pages.pad(s.kv)
        self._free_kv(s)
        if self.waiting:
            self.poke()  # room for a prompt that waits

    def _receive(self, s: Seq) -> None:
        """Admit a sequence prefilled elsewhere: hold a slot and blocks for its KV, and
        have the transfer started."""
        self.waiting.popleft()
        self.incoming[s] = None
        self.used += s.kv
        self.pages.pre_pad += self.pages.pad(s.kv)
        self.log.replica[s.rid] = self.index
        if self.pulls:
            self._change_outstanding(+1)
        assert self.on_receive is not None
        self.on_receive(self, s)

    def deliver(self, s: Seq) -> None:
        """The KV of an incoming sequence is here: it joins the batch at the next
        iteration (a decode block in flight ends at its step in progress)."""
        self.arrived.append(s)
        if self.state == "idle":
            if not self.wake.triggered:
                self.wake.succeed()
        elif self.state == "block":
            self.state = "cutting"
            self._cut()
            if self.watch is not None:
                self.watch(self)

    def _join_arrived(self) -> None:
        for s in self.arrived:
            del self.incoming[s]
            self.pages.pre_pad -= self.pages.pad(s.kv)
            s.swapped = 0
            self.running[s] = None
            self._join_decoding(s)
        self.arrived.clear()
