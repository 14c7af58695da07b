"""Work in flight under a new power limit from this instant (the GPUs' power brake), and
the draw of a replica at an instant as the power-capping controller measures it.

A brake lowers the limit of GPUs in the middle of their work: the rest of a mixed
iteration, or of the decode step in progress, runs at the new limit's speed and power
from that instant, and a decode block ends at that step (the next block starts under
the new tables). The rest of a mixed iteration scales by the ratio of the new tables'
time and energy to the old ones' for the same iteration.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dcsim.engine.costs import DecodeBlock, IterationCosts
from dcsim.engine.sequence import Block, Mixed

if TYPE_CHECKING:
    from dcsim.engine.replica import Replica


class RecostedMixed(Mixed):
    """A mixed iteration whose rest runs under new tables, drawing draw_w meanwhile."""

    __slots__ = ("draw_w",)


class RecostedBlock:
    """A decode block cut after step j + 1, whose step j + 1 runs under new tables from
    `at_s` seconds into the block (DecodeBlock's interface for the steps it keeps)."""

    __slots__ = ("draw_w", "energy_j", "k", "lo", "old", "time_s")

    def __init__(self, old: DecodeBlock | RecostedBlock, j: int, at_s: float,
                 step_s: float, step_j: float) -> None:
        t0, t1 = old.time_after(j), old.time_after(j + 1)
        e0, e1 = old.energy_after(j), old.energy_after(j + 1)
        rest = (t1 - at_s) / (t1 - t0) if t1 > t0 else 0.0  # of the step, still to run
        self.old, self.k, self.lo = old, j + 1, old.lo
        self.time_s = at_s + rest * step_s
        self.energy_j = e0 + (e1 - e0) * (1 - rest) + rest * step_j
        self.draw_w = step_j / step_s

    def time_after(self, steps: int) -> float:
        return self.time_s if steps >= self.k else self.old.time_after(steps)

    def energy_after(self, steps: int) -> float:
        return self.energy_j if steps >= self.k else self.old.energy_after(steps)

    def steps_done(self, elapsed: float) -> int:
        if elapsed >= self.time_s:
            return self.k
        return min(self.old.steps_done(elapsed), self.k - 1)


def draw_w(rep: Replica) -> float:
    """The replica's GPUs' draw now, W: the iteration in flight's mean power (a decode
    block: the larger of its first and last step's, as a step's power moves steadily
    with its context), or the draw between iterations (idle, or 0 with its server off)."""
    cur = rep.current
    if cur is None or rep.state not in ("busy", "block", "cutting"):
        return rep.gap_w
    if isinstance(cur, RecostedMixed):
        return cur.draw_w
    if isinstance(cur, Mixed):
        return cur.energy_j / cur.time_s if cur.time_s > 0 else rep.gap_w
    assert isinstance(cur, Block)
    blk = cur.blk
    if isinstance(blk, RecostedBlock):
        return blk.draw_w
    first = blk.energy_after(1) / blk.time_after(1)
    if blk.k == 1:
        return first
    t, e = blk.time_after(blk.k - 1), blk.energy_after(blk.k - 1)
    return max(first, (blk.energy_j - e) / (blk.time_s - t))


def recost_now(rep: Replica, costs: IterationCosts) -> None:
    """Put the replica under `costs` from this instant, work in flight included."""
    old, now = rep.costs, rep.env.now
    if rep.state == "busy":
        _mixed(rep, old, costs, now - rep.since)
    elif rep.state in ("block", "cutting"):
        _block(rep, costs, now - rep.since)
    rep.costs, rep._dec_rows = costs, costs.decode.rows
    for k in costs.classes:
        rep.steps.setdefault(k, 0)
        rep.prefills.setdefault(k, 0)
    if rep.watch is not None:
        rep.watch(rep)


def _mixed(rep: Replica, old: IterationCosts, new: IterationCosts, elapsed: float) -> None:
    cur = rep.current
    assert isinstance(cur, Mixed)
    if elapsed >= cur.time_s:
        return  # it ends now
    n, nd = len(cur.chunks), cur.decoding
    ctx = rep.dec_kv / nd if nd else 0.0
    if n:
        (t0, e0), (t1, e1) = (c.mixed(n, cur.tokens / n, nd, ctx) for c in (old, new))
    else:  # a decode step waiting for host copies
        (t0, e0), (t1, e1) = (c.decode.at(nd, ctx) for c in (old, new))
    rest = 1 - elapsed / cur.time_s
    rest_s = cur.time_s * rest * t1 / t0
    rest_j = cur.energy_j * rest * e1 / e0
    out = RecostedMixed(cur.chunks, elapsed + rest_s, cur.energy_j * (1 - rest) + rest_j,
                        cur.tokens, nd)
    out.draw_w = rest_j / rest_s
    rep.current = out
    rep._pending.callbacks.remove(rep._on_mixed)
    rep._reschedule(rest_s, rep._on_mixed)


def _block(rep: Replica, new: IterationCosts, elapsed: float) -> None:
    cur = rep.current
    assert isinstance(cur, Block)
    blk = cur.blk
    end = rep._pending.value if rep.state == "cutting" else cur.k  # a cut's last step
    end = cur.k if end is None else end
    j = blk.steps_done(elapsed)
    if j >= end:
        return  # it ends now
    nb = DecodeBlock(new.decode.rows[cur.batch - 1], blk.lo, j + 1)
    step_s = nb.time_after(j + 1) - nb.time_after(j)
    step_j = nb.energy_after(j + 1) - nb.energy_after(j)
    out = RecostedBlock(blk, j, elapsed, step_s, step_j)
    rep.current = Block(out, cur.batch, j + 1)  # type: ignore[arg-type]
    rep.state = "cutting"
    rep._pending.callbacks.remove(rep._on_block)
    rep._reschedule(out.time_s - elapsed, rep._on_block, j + 1)
