"""Admission control of a service: priority order of waiting requests, a limit on the
waiting queue, and a deadline for a request's first admission.

Waiting requests are admitted highest priority first, first come first served within a
priority (`PriorityWaiting`; a service with one priority keeps a plain deque, on the
engine's hot path). A request still waiting for its first admission `max_queue_s`
after it arrived is dropped (`Deadlines`: one timeout per such request, so events
grow with requests, never with tokens); one routed to a full queue is rejected.
Preemption takes the lowest priority first (`Batching._make_room`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import simpy

from dcsim.engine.metrics import STATUS, RequestLog
from dcsim.engine.sequence import Seq

if TYPE_CHECKING:
    from dcsim.engine.replica import Replica

TIMED_OUT = STATUS.index("timed_out")


class PriorityWaiting:
    """Waiting requests, highest priority first, FIFO within one; the part of deque's
    interface the replicas and routers use."""

    def __init__(self, priorities: Iterable[int]) -> None:
        self.levels = sorted(set(priorities), reverse=True)
        self.queues = {p: deque[Seq]() for p in self.levels}
        self.n = 0

    def _head(self) -> deque[Seq]:
        for p in self.levels:
            if self.queues[p]:
                return self.queues[p]
        raise IndexError("no request is waiting")

    def append(self, s: Seq) -> None:
        """Queue `s` behind the waiting requests of its priority."""
        self.queues[s.priority].append(s)
        self.n += 1

    def appendleft(self, s: Seq) -> None:
        """Queue `s` first among its priority (a preempted request)."""
        self.queues[s.priority].appendleft(s)
        self.n += 1

    def popleft(self) -> Seq:
        """Take the next request to admit."""
        self.n -= 1
        return self._head().popleft()

    def remove(self, s: Seq) -> None:
        """Take `s` out wherever it waits."""
        self.queues[s.priority].remove(s)
        self.n -= 1

    def __getitem__(self, i: int) -> Seq:
        if i != 0:
            raise IndexError("only the head of the queue is read")
        return self._head()[0]

    def __len__(self) -> int:
        return self.n

    def __bool__(self) -> bool:
        return self.n > 0

    def __iter__(self) -> Iterator[Seq]:
        for p in self.levels:
            yield from self.queues[p]


def lowest_newest(running: dict[Seq, None]) -> Seq:
    """The preemption victim under priorities: the newest of the lowest priority."""
    low = min(s.priority for s in running)
    return next(s for s in reversed(running) if s.priority == low)


class Deadlines:
    """Drops requests still waiting for their first admission at their deadline."""

    def __init__(self, env: simpy.Environment, log: RequestLog) -> None:
        self.env, self.log = env, log

    def watch(self, seq: Seq, limit_s: float, where: Replica | None,
              queue: deque[Seq] | PriorityWaiting) -> None:
        """`seq` waits in `queue` (of replica `where`, or shared) for at most limit_s."""
        self.env.timeout(limit_s, (seq, where, queue)).callbacks.append(self._due)

    def _due(self, ev: simpy.Event) -> None:
        seq, where, queue = ev.value
        if self.log.replica[seq.rid] >= 0 or self.log.status[seq.rid] != 0:
            return  # admitted (or refused) in time
        queue.remove(seq)
        self.log.status[seq.rid] = TIMED_OUT
        if where is not None:  # a replica's own queue counts it as outstanding
            where.drop_waiting()
