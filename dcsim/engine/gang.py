"""The scheduling core shared by training jobs and cluster-trace pods: queue order and
one pass of FIFO, priority or EASY backfill over the queue.

Both schedulers place gangs (a job on whole servers, a pod on one node) and differ
only in how a gang fits, what a reservation holds and when a later gang may jump
ahead of it; they pass those as functions. Adding a policy is one more branch in
`queue_order` (the order) or `schedule_pass` (who may start).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

Policy = Literal["fifo", "priority", "easy_backfill"]
POLICIES: tuple[Policy, ...] = ("fifo", "priority", "easy_backfill")

Item = TypeVar("Item")
Place = TypeVar("Place")
Hold = TypeVar("Hold")


def queue_order(queue: Sequence[Item], policy: Policy,
                priority_key: Callable[[Item], tuple]) -> list[Item]:  # type: ignore[type-arg]
    """The order a pass considers the queue in: arrival order, or for `priority` sorted by
    priority_key (stable, so equal keys keep arrival order)."""
    if policy == "priority":
        return sorted(queue, key=priority_key)
    return list(queue)


def schedule_pass(order: Sequence[Item], policy: Policy,
                  fit: Callable[[Item], Place | None],
                  start: Callable[[Item, Place], None],
                  reserve: Callable[[Item], Hold | None],
                  backfill: Callable[[Item, Hold], Place | None]) -> None:
    """Start what may start now, in `order`.

    Until a gang is blocked, each one that fits starts. FIFO and priority stop at the
    first blocked gang (it holds the line). EASY backfill instead reserves the earliest
    time the first blocked gang fits (`reserve`; None if it can never be predicted to
    fit, and then the pass goes on as if nothing were blocked); every later gang starts
    where `backfill` places it without delaying that reservation.
    """
    held: Hold | None = None
    for item in order:
        if held is None:
            place = fit(item)
            if place is not None:
                start(item, place)
                continue
            if policy != "easy_backfill":
                return
            held = reserve(item)
            continue
        place = backfill(item, held)
        if place is not None:
            start(item, place)
