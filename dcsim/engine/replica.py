"""A serving replica: one model instance on `tp` GPUs with continuous batching.

Each iteration (the `mixed` policy, as vLLM v1 schedules them): every decoding sequence
gets one token; partially prefilled prompts continue; waiting requests are admitted in
FIFO order while a batch slot, token budget and KV cache for their whole prompt are
free. Under `prefill_first` (SGLang, TGI, vLLM v0) an iteration that prefills does
only that, with the whole token budget, and decoding sequences wait for it.
When the KV cache cannot hold the next decode step, the newest sequence is
preempted and recomputed later (its prompt and generated tokens re-prefilled).

Events scale with requests, not tokens: while only decoding happens and the batch
cannot change, all steps up to the next completion run as one block. An arrival
that could join the batch cuts the block short: the step in progress finishes and
the scheduler runs again, exactly where a step-by-step simulation would.

Bookkeeping is O(1) per block: decoding sequences share a step counter and a
per-sequence energy accumulator, and each remembers their values when it joined.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import simpy

from dcsim.engine.admission import PriorityWaiting
from dcsim.engine.batching import Batching
from dcsim.engine.costs import DecodeBlock, IterationCosts
from dcsim.engine.handoff import Handoff
from dcsim.engine.host_tier import HostKV
from dcsim.engine.lifecycle import Lifecycle
from dcsim.engine.metrics import STATUS, RequestLog, TimeSeries
from dcsim.engine.paging import Pages
from dcsim.engine.prefix_cache import PrefixCache
from dcsim.engine.sequence import Block, Mixed, Seq

if TYPE_CHECKING:
    from dcsim.engine.router import MinTree

FINISHED = STATUS.index("finished")


class Replica(Batching, Lifecycle, Handoff):
    """One model instance serving with continuous batching (see the module docstring).

    Routers use only `submit`, `poke`, `kv_capacity`, `outstanding`, `batch_size`,
    `asleep`, `cuttable`, `share_loads`, `watch` and the length of `waiting`; deadlines
    (engine.admission) `drop_waiting`; everything else is the replica's own.
    """

    def __init__(self, env: simpy.Environment, index: int, costs: IterationCosts,
                 max_num_seqs: int, max_batched_tokens: int, chunked: bool, kv_capacity: int,
                 log: RequestLog, series: TimeSeries, coalesce: bool = True,
                 waiting: deque[Seq] | PriorityWaiting | None = None,
                 prefill_first: bool = False, block_tokens: int = 1,
                 prefix_caching: bool = False, priorities: tuple[int, ...] = (),
                 host: HostKV | None = None, swap: bool = False) -> None:
        self.env, self.index, self.costs = env, index, costs
        self.prefill_first = prefill_first  # prefill-only iterations (decoding waits)
        self.max_num_seqs, self.budget, self.chunked = max_num_seqs, max_batched_tokens, chunked
        self.pages = Pages(block_tokens, kv_capacity)  # the cache in blocks
        self.kv_capacity = self.pages.tokens  # KV-cache tokens its whole blocks hold
        self.cache = PrefixCache(self.pages, host) if prefix_caching else None
        # a swapped sequence's KV is in this replica's host memory: replicas that pull
        # from a shared queue, where another replica could take it, recompute instead
        self.host, self.swap = host, swap and host is not None and waiting is None
        self.transfer_due_s = 0.0  # host transfers the next iteration waits for
        self.transfer_s = 0.0  # all of them so far
        # (tokens before, chunk) of the next iteration's chunks that follow earlier tokens
        self.after: list[tuple[int, int]] = []
        self.log, self.series, self.coalesce = log, series, coalesce
        self.pulls = waiting is not None  # takes work from a queue shared by the service
        self.ranked = len(set(priorities)) > 1  # requests of several priorities
        if waiting is None:
            waiting = PriorityWaiting(priorities) if self.ranked else deque()
        self.waiting: deque[Seq] | PriorityWaiting = waiting
        # admission order (the newest is preempted first); a dict removes in O(1)
        self.running: dict[Seq, None] = {}
        self.prefilling: list[Seq] = []  # admitted, prompt not yet fully processed
        self.decoding: set[Seq] = set()
        self.finish_heap: list[tuple[int, int, int, Seq]] = []  # (step, rid, version, seq)
        self.step = 0  # decode steps taken by this replica
        self.e_cum = 0.0  # energy charged to each decoding sequence so far
        self.dec_kv = 0  # KV tokens of the decoding sequences
        self.used = 0  # KV tokens reserved (decoding + prefilling)
        self.outstanding = 0  # requests routed here and not yet done
        self.loads: list[int] | MinTree | None = None  # the router's copy of `outstanding` per replica
        self.slot = 0  # this replica's place in it
        # called after each change of state (asleep, cuttable, batch size): a router's hook
        self.watch: Callable[[Replica], None] | None = None
        # called with (request, time) as each request finishes (closed-loop sessions)
        self.on_finish: Callable[[int, float], None] | None = None
        self.in_system_x_s = 0.0  # integral of `outstanding` over time (Little's law)
        self._t_level = 0.0
        # idle: waiting on `wake`; busy: a mixed iteration; block: decode steps (cuttable);
        # cutting: a block already cut short, ending at its step in progress
        self.state = "idle"
        self.wake: simpy.Event = env.event()
        self.since = 0.0  # start of the current idle period or iteration
        self.current: Mixed | Block | None = None  # what is in flight, for the final flush
        self.device_energy_j = 0.0
        self.idle_energy_j = 0.0
        self._rows = series.rows(index)
        self._bucket_s, self._buckets = series.bucket_s, series.n
        self.steps = dict.fromkeys(costs.classes, 0)
        self.prefills = dict.fromkeys(costs.classes, 0)
        self._pending: simpy.Event = self.wake  # the one event carrying our callback
        self._dec_rows = costs.decode.rows
        # bound once: each iteration's timeout gets one of these as its callback
        self._on_mixed, self._on_block = self._mixed_done, self._block_done
        self.wake.callbacks.append(self._woken)  # idle from the start
        self.init_lifecycle(costs.idle_power_w)
        self.init_handoff()  # disaggregated serving (dcsim.engine.handoff)

    # -- called by the router ----------------------------------------------
    def submit(self, seq: Seq) -> None:
        """Queue a request here and tell the replica."""
        self.waiting.append(seq)
        self._change_outstanding(+1)
        self.poke()

    def drop_waiting(self) -> None:
        """A request left the waiting queue unserved (its deadline passed)."""
        self._change_outstanding(-1)

    @property
    def batch_size(self) -> int:
        """Sequences admitted and not yet done."""
        return len(self.running)

    @property
    def asleep(self) -> bool:
        """Idle and not yet woken: a poke starts an iteration now."""
        return self.state == "idle" and not self.wake.triggered

    @property
    def cuttable(self) -> bool:
        """Running a decode block with a free batch slot: a poke ends it at the step in
        progress so that waiting work can join."""
        return self.state == "block" and self.has_room()

    def share_loads(self, loads: list[int] | MinTree, slot: int) -> None:
        """Keep loads[slot] equal to `outstanding` (the router's copy, read per arrival)."""
        self.loads, self.slot = loads, slot
        loads[slot] = self.outstanding + self.closed

    def has_room(self) -> bool:
        """A batch slot is free (one is held for each incoming sequence)."""
        return len(self.running) + len(self.incoming) < self.max_num_seqs

    def poke(self) -> None:
        """Tell the replica its queue changed: wake it, or cut its decode block short."""
        if self.state == "idle":
            if not self.wake.triggered:
                self.wake.succeed()
        elif self.state == "block" and self.has_room():
            self.state = "cutting"
            self._cut()
            if self.watch is not None:
                self.watch(self)

    def _cut(self) -> None:
        """End the decode block at the end of the step in progress: move the block's
        callback from its timeout to a timeout at that step's end, whose value is the
        number of steps done."""
        cur = self.current
        assert isinstance(cur, Block)
        blk = cur.blk
        now = self.env.now
        done = blk.steps_done(now - self.since)
        if done >= blk.k:  # the block ends now anyway
            return
        done += 1
        self._pending.callbacks.remove(self._on_block)
        self._reschedule(max(self.since + blk.time_after(done) - now, 0.0), self._on_block,
                         done)

    def _reschedule(self, delay: float, callback: Callable[[simpy.Event], None],
                    value: int | None = None) -> None:
        """Schedule `callback` on a new timeout after `delay` (its value: `value`).

        Invariant: at any time exactly one pending event carries one of this replica's
        callbacks, and `_pending` is it: the wake event while idle, else the timeout of
        the iteration in flight. A caller replacing that timeout removes the callback
        from the old one first (a stale timeout then fires with no callback of ours).
        Callbacks on SimPy events run in the order SimPy triggers them, which keeps the
        same events at the same times as generator processes would, without their
        resume machinery on the engine's hottest path.
        """
        ev = self.env.timeout(delay, value)
        ev.callbacks.append(callback)
        self._pending = ev

    def _change_outstanding(self, delta: int) -> None:
        now = self.env.now
        self.in_system_x_s += self.outstanding * (now - self._t_level)
        self._t_level = now
        self.outstanding += delta
        if self.loads is not None:
            self.loads[self.slot] = self.outstanding + self.closed

    # -- the iteration loop (callbacks on each iteration's timeout: see _reschedule) --
    def _woken(self, _ev: simpy.Event) -> None:
        self._idle_until(self.env.now)
        self._next()

    def _next(self) -> None:
        """Start the next iteration: prefill chunks (plus one token for each decoding
        sequence), else a block of decode steps up to the next completion, else idle."""
        env, costs, pages = self.env, self.costs, self.pages
        if self.arrived:  # KV received from prefill replicas: they join the batch now
            self._join_arrived()
        nd = len(self.decoding)
        room = 0  # KV tokens free before padding (decode only; padding < a block a sequence)
        # schedule() only when it can change something (the decode-only case skips it)
        if self.prefilling or self.waiting:
            chunks = self.schedule()
            nd = len(self.decoding)  # it may have preempted some
        elif nd:
            room = (pages.blocks - pages.fixed) * pages.block - self.used - pages.pre_pad
            # with room for two blocks a sequence the next step fits; else count exactly
            chunks = (self.schedule() if room < nd * pages.two_blocks
                      and not pages.fits_next(self.used, self.step, nd) else None)
            nd = len(self.decoding)
        else:
            chunks = None
        start = env.now
        if chunks:
            n_tok = chunks[0][1] if len(chunks) == 1 else sum(c for _, c in chunks)
            mean_chunk = n_tok / len(chunks)
            if self.prefill_first:
                nd = 0  # decoding sequences sit this iteration out
            t, e = costs.mixed(len(chunks), mean_chunk, nd, self.dec_kv / nd if nd else 0.0)
            if self.after:  # chunks after a cached prefix or an earlier chunk
                for done, c in self.after:
                    dt, de = costs.over_context(done, c)
                    t, e = t + dt, e + de
                self.after.clear()
            self.prefills[costs.provenance("prefill", len(chunks), mean_chunk)] += 1
            if self.transfer_due_s:
                t, e = self._with_transfer(t, e)
            self.state, self.since, self.current = "busy", start, Mixed(chunks, t, e, n_tok, nd)
            self._reschedule(t, self._on_mixed)
        elif nd and self.transfer_due_s:  # one decode step that waits for host copies
            t, e = self._with_transfer(*costs.decode.at(nd, self.dec_kv / nd))
            self.steps[costs.provenance("decode", nd, self.dec_kv / nd)] += 1
            self.state, self.since, self.current = "busy", start, Mixed([], t, e, 0, nd)
            self._reschedule(t, self._on_mixed)
        elif nd:
            k = self.finish_heap[0][0] - self.step
            if not self.coalesce:
                k = 1
            elif chunks is not None or (room // pages.block - nd - 1) // nd * pages.block < k:
                # room may bind (or schedule() ran: `room` is stale)
                k = pages.steps_fitting(self.used, self.step, nd, k)
            blk = DecodeBlock(self._dec_rows[nd - 1], self.dec_kv / nd - 0.5, k)
            self.state, self.since, self.current = "block", start, Block(blk, nd, k)
            self._reschedule(blk.time_s, self._on_block)
        elif self.draining and self.drained():
            self.stop()
            return
        else:
            self.state, self.current, self.since = "idle", None, start
            self.wake = self._pending = env.event()
            self.wake.callbacks.append(self._woken)
        if self.watch is not None:
            self.watch(self)
        if self.meter is not None:
            self.meter(self)

    def _with_transfer(self, t: float, e: float) -> tuple[float, float]:
        """The iteration's time and energy after it waits for the host copies due
        (at idle power: the copy engines work while the SMs wait)."""
        due, self.transfer_due_s = self.transfer_due_s, 0.0
        self.transfer_s += due
        return t + due, e + due * self.costs.idle_power_w

    def _mixed_done(self, _ev: simpy.Event) -> None:
        cur = self.current
        assert isinstance(cur, Mixed)
        self._after_mixed(cur.chunks, cur.tokens, cur.decoding, cur.energy_j, self.since)
        self._next()

    def _block_done(self, ev: simpy.Event) -> None:
        cur = self.current
        assert isinstance(cur, Block)
        cut = ev.value  # a cut (see _cut) ends the block early, at a step's end
        self._after_block(cur.blk, cur.batch, cur.k if cut is None else cut, self.since)
        self._next()

    def _after_mixed(self, chunks: list[tuple[Seq, int]], n_tok: int, nd: int, e: float,
                     start: float) -> None:
        now = self.env.now
        total = n_tok + nd
        if nd:  # every decoding sequence produced one token
            self._advance(1, e * nd / total)
        for s, c in chunks:
            s.energy_j += e * c / total
            s.prefill_left -= c
            if s.prefill_left == 0:
                self.prefilling.remove(s)
                self.pages.pre_pad -= self.pages.pad(s.kv)
                s.generated += 1  # the last prefill chunk emits a token
                if s.generated == 1:  # a recomputed prefill has emitted before
                    self.log.first_token_s[s.rid] = now
                if self.cache is not None and s.group >= 0:
                    self._cache_prefix(s)
                self._join_decoding(s)
        self._account(start, now, e, len(self.running))
        if self.finish_heap and self.finish_heap[0][0] <= self.step:
            self._retire(now)
        if self.cache is not None:
            self._fit_cache()

    def _after_block(self, blk: DecodeBlock, b: int, done: int, start: float) -> None:
        now = self.env.now
        self.steps[self.costs.provenance("decode", b, self.dec_kv / b + (done - 1) / 2)] += done
        kv0 = self.used
        energy = blk.energy_after(done)
        self._advance(done, energy)
        self._account(start, now, energy, b, kv0 + b * done / 2)
        if self.finish_heap and self.finish_heap[0][0] <= self.step:
            if self.cache is not None and done > 1:
                # one step at a time the cache gives way as the KV grows, before the
                # last step's completions free blocks: evict for the step before it
                self._fit_cache(b)
            self._retire(now)
        if self.cache is not None:
            self._fit_cache()

    # -- decoding group --------------------------------------------------------
    def _advance(self, steps: int, energy: float) -> None:
        """Every decoding sequence takes `steps` steps and an equal share of `energy`."""
        b = len(self.decoding)
        self.step += steps
        self.e_cum += energy / b
        self.dec_kv += b * steps
        self.used += b * steps

    def _join_decoding(self, s: Seq) -> None:
        s.gen0, s.kv0, s.step0 = s.generated, s.kv, self.step
        s.e0, s.e_cum0 = s.energy_j, self.e_cum
        s.page = self.pages.join(s.kv, self.step)
        self.decoding.add(s)
        self.dec_kv += s.kv
        heapq.heappush(self.finish_heap, (self.step + s.output - s.generated, s.rid, s.version, s))

    def _leave_decoding(self, s: Seq) -> None:
        """Freeze the live values of a decoding sequence and take it out of the group."""
        d = self.step - s.step0
        s.generated, s.kv = s.gen0 + d, s.kv0 + d
        s.energy_j = s.e0 + (self.e_cum - s.e_cum0)
        s.version += 1
        self.pages.leave(s.page)
        self.decoding.discard(s)
        self.dec_kv -= s.kv

    # -- bookkeeping -------------------------------------------------------
    def _retire(self, now: float) -> None:
        heap = self.finish_heap
        while heap and heap[0][0] <= self.step:
            _, _, version, s = heapq.heappop(heap)
            if version != s.version:  # preempted since it was queued
                continue
            self._leave_decoding(s)
            del self.running[s]
            if self.handoff is not None and self.handoff(self, s):
                self._park(s)
                continue
            if self.cache is None:  # Batching._free_kv, inline: once a request, hot path
                self.used -= s.kv
            else:
                if s.session != -1:
                    self._keep_history(s)
                self._unpin(s)
            self.log.finish_s[s.rid] = now
            self.log.status[s.rid] = FINISHED
            self._release(s)
            if self.on_finish is not None:
                self.on_finish(s.rid, now)

    def _release(self, s: Seq) -> None:
        self.log.energy_j[s.rid] = s.energy_j
        self._change_outstanding(-1)

    def _account(self, t0: float, t1: float, energy: float, batch: float,
                 kv_mean: float | None = None) -> None:
        self.device_energy_j += energy
        kv = self.used if kv_mean is None else kv_mean
        b = int(t0 / self._bucket_s)
        if b == int(t1 / self._bucket_s) and t1 > t0 and b < self._buckets - 1:
            # within one bucket (most iterations): TimeSeries.add, inlined
            en, busy, bx, kx, qx, cx = self._rows
            dt = t1 - t0
            en[b] += energy
            busy[b] += dt
            bx[b] += batch * dt
            kx[b] += kv * dt
            qx[b] += len(self.waiting) * dt
            if self.cache is not None:
                cx[b] += self.pages.cached * self.pages.block * dt
            return
        self.series.add(self.index, t0, t1, energy, True, batch, kv, len(self.waiting),
                        self.pages.cached * self.pages.block)

    def _idle_until(self, now: float) -> None:
        t0 = self.since
        e = self.gap_w * (now - t0)
        self.device_energy_j += e
        self.idle_energy_j += e
        b = int(t0 / self._bucket_s)
        if b == int(now / self._bucket_s) and now > t0 and b < self._buckets - 1:
            # within one bucket (most idle gaps): TimeSeries.add, inlined as in _account
            en, _, _, kx, qx, cx = self._rows
            dt = now - t0
            en[b] += e
            kx[b] += self.used * dt
            qx[b] += len(self.waiting) * dt
            if self.cache is not None:
                cx[b] += self.pages.cached * self.pages.block * dt
            return
        self.series.add(self.index, self.since, now, e, False, 0, self.used, len(self.waiting),
                        0 if self.cache is None else self.pages.cached * self.pages.block)

    def finish(self, now: float) -> None:
        """At the end of the run: charge the idle time or the part of the iteration done."""
        cur = self.current
        if cur is None:
            self._idle_until(now)
        elif isinstance(cur, Mixed):
            part = cur.energy_j * (now - self.since) / cur.time_s
            n = len(cur.chunks) + cur.decoding  # those taking part in the iteration
            for s, _ in cur.chunks:
                s.energy_j += part / n
            if cur.decoding:
                self.e_cum += part / n
            self._account(self.since, now, part, len(self.running))
        else:
            self._finish_block(now, cur.blk)
        self._change_outstanding(0)
        for s in list(self.decoding):
            self._leave_decoding(s)
        for s in [*self.running, *self.waiting, *self.incoming]:
            if self.log.status[s.rid] == 0:
                self.log.energy_j[s.rid] = s.energy_j

    def _finish_block(self, now: float, blk: DecodeBlock) -> None:
        elapsed = now - self.since
        done = blk.steps_done(elapsed)
        part = blk.energy_after(done)
        if done < blk.k:  # the step in progress, pro rata
            t0, t1 = blk.time_after(done), blk.time_after(done + 1)
            part += (blk.energy_after(done + 1) - part) * (elapsed - t0) / (t1 - t0)
        self.e_cum += part / len(self.decoding)
        self._account(self.since, now, part, len(self.decoding))
