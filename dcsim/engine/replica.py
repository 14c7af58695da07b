"""A serving replica: one model instance on `tp` GPUs with continuous batching.

Each iteration (as vLLM schedules them): every decoding sequence gets one token;
partially prefilled prompts continue; waiting requests are admitted in FIFO order
while a batch slot, token budget and KV cache for their whole prompt are free.
When the KV cache cannot hold the next decode step, the newest sequence is
preempted and recomputed later (its prompt and generated tokens re-prefilled).

Events scale with requests, not tokens: while only decoding happens and the batch
cannot change, all steps up to the next completion run as one block. An arrival
that could join the batch interrupts the block; the step in progress finishes and
the scheduler runs again, exactly where a step-by-step simulation would.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator

import simpy

from dcsim.engine.costs import IterationCosts
from dcsim.engine.metrics import RequestLog, TimeSeries


class Seq:
    """A request inside a replica."""

    __slots__ = ("energy_j", "generated", "kv", "output", "prefill_left", "prefill_total",
                 "prompt", "rid")

    def __init__(self, rid: int, prompt: int, output: int) -> None:
        self.rid, self.prompt, self.output = rid, prompt, output
        self.generated = 0
        self.prefill_total = self.prefill_left = prompt
        self.kv = 0
        self.energy_j = 0.0


class Replica:
    def __init__(self, env: simpy.Environment, index: int, costs: IterationCosts,
                 max_num_seqs: int, max_batched_tokens: int, chunked: bool, kv_capacity: int,
                 log: RequestLog, series: TimeSeries, coalesce: bool = True,
                 waiting: deque[Seq] | None = None) -> None:
        self.env, self.index, self.costs = env, index, costs
        self.max_num_seqs, self.budget, self.chunked = max_num_seqs, max_batched_tokens, chunked
        self.capacity, self.log, self.series, self.coalesce = kv_capacity, log, series, coalesce
        self.pulls = waiting is not None  # takes work from a queue shared by the service
        self.waiting: deque[Seq] = deque() if waiting is None else waiting
        self.running: list[Seq] = []
        self.used = 0  # KV tokens reserved
        self.outstanding = 0  # requests routed here and not yet done
        self.in_system_x_s = 0.0  # integral of `outstanding` over time (Little's law)
        self._t_level = 0.0
        self.state = "idle"
        self.wake: simpy.Event = env.event()
        self.since = 0.0  # start of the current idle period or iteration
        self.current: tuple | None = None  # what is in flight, for the final flush
        self.device_energy_j = 0.0
        self.idle_energy_j = 0.0
        self.steps = {"measured": 0, "interpolated": 0, "derived": 0}
        self.prefills = {"measured": 0, "interpolated": 0, "derived": 0}
        self.process = env.process(self.run())

    # -- called by the router ----------------------------------------------
    def submit(self, seq: Seq) -> None:
        self.waiting.append(seq)
        self._change_outstanding(+1)
        self.poke()

    def _change_outstanding(self, delta: int) -> None:
        now = self.env.now
        self.in_system_x_s += self.outstanding * (now - self._t_level)
        self._t_level = now
        self.outstanding += delta

    def has_room(self) -> bool:
        return len(self.running) < self.max_num_seqs

    def poke(self) -> None:
        """Tell the replica its queue changed: wake it, or cut its decode block short."""
        if self.state == "idle":
            if not self.wake.triggered:
                self.wake.succeed()
        elif self.state == "block" and self.has_room():
            self.state = "cutting"
            self.process.interrupt()

    # -- the process ---------------------------------------------------------
    def run(self) -> Generator[simpy.Event, None, None]:
        env = self.env
        while True:
            plan = self.schedule()
            if plan is None:
                self.state, self.since, self.current = "idle", env.now, None
                self.wake = env.event()
                yield self.wake
                self._idle_until(env.now)
                continue
            chunks, decoding = plan
            if chunks:
                yield from self._mixed_iteration(chunks, decoding)
            else:
                yield from self._decode_block(decoding)

    def _mixed_iteration(self, chunks: list[tuple[Seq, int]], decoding: list[Seq]
                         ) -> Generator[simpy.Event, None, None]:
        env, start = self.env, self.env.now
        n_tok = sum(c for _, c in chunks)
        ctx = sum(s.kv for s in decoding) / len(decoding) if decoding else 0.0
        t, e = self.costs.mixed(len(chunks), n_tok / len(chunks), len(decoding), ctx)
        self.prefills[self.costs.provenance("prefill", len(chunks), n_tok / len(chunks))] += 1
        self.state, self.since, self.current = "busy", start, ("mixed", chunks, decoding, t, e)
        yield env.timeout(t)
        total = n_tok + len(decoding)
        for s in decoding:
            s.energy_j += e / total
            s.generated += 1
            s.kv += 1
        self.used += len(decoding)
        for s, c in chunks:
            s.energy_j += e * c / total
            s.prefill_left -= c
            if s.prefill_left == 0:
                s.generated += 1
                if s.generated == 1:  # a recomputed prefill has emitted before
                    self.log.first_token_s[s.rid] = env.now
        self._account(start, env.now, e, len(self.running))
        self._retire(env.now)

    def _decode_block(self, decoding: list[Seq]) -> Generator[simpy.Event, None, None]:
        env, start, b = self.env, self.env.now, len(decoding)
        k = min(s.output - s.generated for s in decoding)
        k = min(k, (self.capacity - self.used) // b) if self.coalesce else 1
        ctx_sum = sum(s.kv for s in decoding)
        blk = self.costs.decode.block(b, ctx_sum, k)
        self.state, self.since, self.current = "block", start, ("block", decoding, blk)
        try:
            yield env.timeout(blk.time_s)
            done = k
        except simpy.Interrupt:
            done = blk.steps_done(env.now - start)
            if done < k:  # finish the step in progress, then schedule again
                done += 1
                yield env.timeout(max(start + blk.time_after(done) - env.now, 0.0))
        self._apply_steps(decoding, done, blk.energy_after(done), start, ctx_sum)
        self._retire(env.now)

    def _apply_steps(self, decoding: list[Seq], done: int, energy: float, start: float,
                     ctx_sum: int) -> None:
        b = len(decoding)
        for s in decoding:
            s.generated += done
            s.kv += done
            s.energy_j += energy / b
        kv0 = self.used
        self.used += b * done
        prov = self.costs.provenance
        self.steps[prov("decode", b, ctx_sum / b)] += done // 2
        self.steps[prov("decode", b, ctx_sum / b + done - 1)] += done - done // 2
        self._account(start, self.env.now, energy, b, kv_mean=kv0 + b * done / 2)

    # -- scheduling ------------------------------------------------------------
    def schedule(self) -> tuple[list[tuple[Seq, int]], list[Seq]] | None:
        """Admit, preempt and size chunks for the next iteration; None when idle."""
        decoding = self._make_room()
        budget = self.budget - len(decoding)
        chunks: list[tuple[Seq, int]] = []
        for s in self.running:
            if s.prefill_left and budget > 0:
                c = min(s.prefill_left, budget)
                chunks.append((s, c))
                budget -= c
        while self.waiting and budget > 0 and self.has_room():
            s = self.waiting[0]
            need = s.prefill_total
            if self.used + need + 1 > self.capacity:
                break
            if not self.chunked and need > budget and (chunks or decoding):
                break
            self.waiting.popleft()
            self.running.append(s)
            self.used += need
            s.kv = need
            c = min(need, budget) if self.chunked else need
            chunks.append((s, c))
            budget -= c
            if self.log.replica[s.rid] < 0:
                self.log.replica[s.rid] = self.index
                if self.pulls:
                    self._change_outstanding(+1)
        if not chunks and not decoding:
            return None
        return chunks, decoding

    def _make_room(self) -> list[Seq]:
        """Preempt the newest sequences until the next decode step fits in the KV cache."""
        decoding = [s for s in self.running if not s.prefill_left]
        while decoding and self.used + len(decoding) > self.capacity:
            victim = self.running.pop()
            self.used -= victim.kv
            victim.kv = 0
            if not self.running:  # alone and still too long: it can never finish here
                self.log.status[victim.rid] = 3  # aborted
                self._release(victim)
                return []
            victim.prefill_total = victim.prefill_left = victim.prompt + victim.generated
            self.log.preemptions[victim.rid] += 1
            self.waiting.appendleft(victim)
            decoding = [s for s in self.running if not s.prefill_left]
        return decoding

    # -- bookkeeping -------------------------------------------------------
    def _retire(self, now: float) -> None:
        keep = []
        for s in self.running:
            if s.generated >= s.output and not s.prefill_left:
                self.used -= s.kv
                self.log.finish_s[s.rid] = now
                self.log.status[s.rid] = 1
                self._release(s)
            else:
                keep.append(s)
        self.running = keep

    def _release(self, s: Seq) -> None:
        self.log.energy_j[s.rid] = s.energy_j
        self._change_outstanding(-1)

    def _account(self, t0: float, t1: float, energy: float, batch: float,
                 kv_mean: float | None = None) -> None:
        self.device_energy_j += energy
        kv = self.used if kv_mean is None else kv_mean
        self.series.add(self.index, t0, t1, energy, True, batch, kv, len(self.waiting))

    def _idle_until(self, now: float) -> None:
        e = self.costs.idle_power_w * (now - self.since)
        self.device_energy_j += e
        self.idle_energy_j += e
        self.series.add(self.index, self.since, now, e, False, 0, self.used, len(self.waiting))

    def finish(self, now: float) -> None:
        """At the end of the run: charge the idle time or the part of the iteration done."""
        if self.current is None:
            self._idle_until(now)
        elif self.current[0] == "mixed":
            _, chunks, decoding, t, e = self.current
            part = e * (now - self.since) / t
            seqs = [s for s, _ in chunks] + decoding
            for s in seqs:
                s.energy_j += part / len(seqs)
            self._account(self.since, now, part, len(self.running))
        else:
            _, decoding, blk = self.current
            elapsed = now - self.since
            done = blk.steps_done(elapsed)
            part = blk.energy_after(done)
            if done < blk.k:  # the step in progress, pro rata
                t0, t1 = blk.time_after(done), blk.time_after(done + 1)
                part += (blk.energy_after(done + 1) - part) * (elapsed - t0) / (t1 - t0)
            for s in decoding:
                s.energy_j += part / len(decoding)
            self._account(self.since, now, part, len(decoding))
        self._change_outstanding(0)
        for s in list(self.running) + list(self.waiting):
            if self.log.status[s.rid] == 0:
                self.log.energy_j[s.rid] = s.energy_j
