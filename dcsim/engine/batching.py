"""Which prompts an iteration prefills: admission, chunking and preemption of a replica.

The policy of the iteration (mixed or prefill-only) enters here through the token
budget: decode tokens share it only when they share the iteration. Admission needs
free KV blocks for the whole prompt and its first token (dcsim.engine.paging).
Preemption frees blocks for the next decode step by recomputing the newest sequences
later, as vLLM does by default (the lowest priority first, under priority classes), or
by swapping their KV to host memory and back (dcsim.engine.host_tier).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from dcsim.engine.admission import PriorityWaiting, lowest_newest
from dcsim.engine.metrics import STATUS
from dcsim.engine.sequence import INCOMING, Seq

if TYPE_CHECKING:
    import simpy

    from dcsim.engine.host_tier import HostKV
    from dcsim.engine.metrics import RequestLog, TimeSeries
    from dcsim.engine.paging import Pages
    from dcsim.engine.prefix_cache import PrefixCache

ABORTED = STATUS.index("aborted")


class Batching:
    """The scheduling half of a Replica, which holds the fields and methods annotated
    here."""

    waiting: deque[Seq] | PriorityWaiting
    ranked: bool
    running: dict[Seq, None]
    prefilling: list[Seq]
    decoding: set[Seq]
    used: int
    step: int
    pages: Pages
    cache: PrefixCache | None
    budget: int
    max_num_seqs: int
    chunked: bool
    prefill_first: bool
    pulls: bool
    index: int
    log: RequestLog
    series: TimeSeries
    env: simpy.Environment
    # the Replica's own methods this half calls
    _leave_decoding: Callable[[Seq], None]
    _release: Callable[[Seq], None]
    _change_outstanding: Callable[[int], None]
    _join_decoding: Callable[[Seq], None]
    _receive: Callable[[Seq], None]
    incoming: dict[Seq, None]
    host: HostKV | None
    swap: bool  # preemption by swapping to host memory (else by recompute)
    transfer_due_s: float  # host transfers the next iteration waits for
    after: list[tuple[int, int]]  # chunks of the next iteration after earlier tokens

    def schedule(self) -> list[tuple[Seq, int]]:
        """Preempt, continue prefills and admit; the prefill chunks of the next iteration."""
        nd, pages = len(self.decoding), self.pages
        if nd and not pages.fits_next(self.used, self.step, nd):
            self._make_room()
        if not self.prefilling and not self.waiting:  # decoding only (the common case)
            return []
        # decode tokens share the budget only when they share the iteration
        budget = self.budget if self.prefill_first else self.budget - len(self.decoding)
        alone = not self.decoding or self.prefill_first  # a whole prompt may go by itself
        chunks: list[tuple[Seq, int]] = []
        held, exact = -1, False  # blocks in use (an upper bound until counted exactly)
        for s in self.prefilling:
            if budget <= 0:
                break
            c = min(s.prefill_left, budget)
            chunks.append((s, c))
            self.after.append((s.kv - s.prefill_left, c))  # it follows its earlier chunks
            budget -= c
        incoming = self.incoming  # slots held for KV on its way (disaggregated decode)
        while self.waiting and budget > 0 and len(self.running) + len(incoming) < (
                self.max_num_seqs):
            s = self.waiting[0]
            need = s.prefill_total
            hit, pinning = (0, 0) if self.cache is None else self._hit(s, need)
            if s.swapped:  # its whole KV comes back from host memory (or, INCOMING,
                need, hit, pinning = s.kv, 0, 0  # from a prefill replica): no prefill
            # blocks for the prompt's uncached part and the first decode token, and the
            # cached blocks this request would pin (or bring back from host memory)
            want = -(-(need + 1 - hit) // pages.block) + pinning
            room = pages.blocks - pages.fixed
            if held < 0:  # a bound first (padding is under a block a sequence) ...
                held = (self.used + pages.pre_pad + len(self.running) * (pages.block - 1)
                        ) // pages.block
            if held + want > room and not exact:  # ... the exact count only near full
                held, exact = pages.held(self.used, self.step), True
            if held + want > room:
                break
            if s.swapped == INCOMING:
                self._receive(s)
                held += -(-s.kv // pages.block)
                continue
            if s.swapped:
                self._swap_in(s)
                held += -(-s.kv // pages.block)
                if not self.prefill_first:
                    budget -= 1  # it decodes in this iteration
                continue
            if not self.chunked and need - hit > budget and (chunks or not alone):
                break
            # admit it (inline: once a request, on the engine's hot path)
            self.waiting.popleft()
            self.running[s] = None
            self.prefilling.append(s)
            self.used += need - hit
            pages.pre_pad += pages.pad(need)
            s.kv, s.shared, s.prefill_left = need, hit, need - hit
            held += -(-(need - hit) // pages.block)
            if self.log.replica[s.rid] < 0:  # its first admission
                self.log.replica[s.rid] = self.index
                self.log.cached[s.rid] = hit
                if self.pulls:
                    self._change_outstanding(+1)
            if self.cache is not None:
                self._admitted_with_cache(s, need, hit)
            c = min(need - hit, budget) if self.chunked else need - hit
            chunks.append((s, c))
            if hit:
                self.after.append((hit, c))  # it follows its cached tokens
            budget -= c
        return chunks

    def _cache_prefix(self, s: Seq) -> None:
        """`s` has computed its prefix: blocks of it the cache lacks move into the cache
        (if `s` holds the blocks right after the cached ones; else its copy stays its own)."""
        cache, b = self.cache, self.pages.block
        assert cache is not None
        if cache.match(s.group) * b == s.shared:
            moved = cache.extend(s.group, min(s.prefix, s.kv) // b) * b
            s.shared += moved
            self.used -= moved

    def _fit_cache(self, back: int = 0) -> None:
        """Evict unused cached blocks until requests and cache fit in the KV blocks (as
        they stood one decode step of `back` sequences ago, if `back`)."""
        cache, pages = self.cache, self.pages
        assert cache is not None
        if not cache.evictable:
            return
        b, used = pages.block, self.used - back
        if used + pages.pre_pad + len(self.decoding) * b + cache.total * b <= pages.tokens:
            return  # a bound on the padding settles it
        over = pages.held(used, self.step - (1 if back else 0)) + cache.total - pages.blocks
        if over > 0:
            cache.evict(over)

    def _hit(self, s: Seq, need: int) -> tuple[int, int]:
        """Tokens of `s` the prefix cache holds (whole blocks of its prefix, then of its
        session's history if the prefix is whole; at least one token left to compute),
        and the blocks admitting it would take: cached ones it newly pins and ones it
        brings back from host memory."""
        cache = self.cache
        if cache is None:  # (the caller skips the call without a cache)
            return 0, 0
        b = self.pages.block
        blocks = extra = 0
        if s.group >= 0:
            gpu = cache.match(s.group)
            host = cache.in_host(s.group)
            blocks = gpu + host
            extra = (gpu if cache.unpinned(s.group) else 0) + host
        if s.session != -1 and blocks == s.prefix // b:  # the history follows the prefix
            gpu, host = cache.match(s.session), cache.in_host(s.session)
            blocks += gpu + host
            extra += (gpu if cache.unpinned(s.session) else 0) + host
        return min(blocks, (need - 1) // b) * b, extra

    def _admitted_with_cache(self, s: Seq, need: int, hit: int) -> None:
        """`s` was admitted with `hit` of its `need` tokens cached: pin its prefix and
        history, count the hit, and evict what no longer fits so later matches see what
        is left."""
        cache = self.cache
        assert cache is not None
        if cache.host is not None and hit:
            self._load_from_host(s, hit // self.pages.block)
        if s.group >= 0:
            cache.pin(s.group)
        if s.session != -1:
            cache.pin(s.session)
        self.series.count(self.index, self.env.now, need, hit)
        self._fit_cache()

    def _free_kv(self, s: Seq) -> None:
        """A sequence done with its KV frees it (its session's history kept cached)."""
        if self.cache is None:
            self.used -= s.kv
            return
        if s.session != -1:
            self._keep_history(s)
        self._unpin(s)

    def _unpin(self, s: Seq) -> None:
        """`s` leaves the replica's KV cache: its private tokens are freed and its prefix
        and history are no longer pinned by it (the history first: least recently used
        before the prefix it hangs under, so eviction takes leaves first)."""
        self.used -= s.kv - s.shared
        if self.cache is not None:
            if s.session != -1:
                self.cache.release(s.session)
            if s.group >= 0:
                self.cache.release(s.group)
        s.shared = 0

    def _keep_history(self, s: Seq) -> None:
        """`s` finished: the whole blocks of its context past its prefix become its
        session's cached history (if its cached blocks are the cache's chain: prefix
        whole, then the history so far; else its copy is simply freed)."""
        cache, b = self.cache, self.pages.block
        assert cache is not None
        base = s.prefix // b
        if s.group >= 0 and cache.match(s.group) < base:
            return
        if s.shared != (base + cache.match(s.session)) * b:
            return
        moved = cache.extend(s.session, s.kv // b - base) * b
        s.shared += moved
        self.used -= moved

    def _load_from_host(self, s: Seq, blocks: int) -> None:
        """Bring back the host blocks among the first `blocks` blocks `s` matched (the
        prefix's, then the history's), charged on the iteration that prefills it."""
        cache = self.cache
        assert cache is not None and cache.host is not None
        moved = 0
        for key in (s.group, s.session):
            if key == -1 or blocks <= 0:
                continue
            gpu = cache.match(key)
            take = min(cache.in_host(key), max(blocks - gpu, 0))
            if take:
                cache.load(key, take)
                moved += take
            blocks -= gpu + take
        self.transfer_due_s += moved * cache.host.block_s

    def _swap_out(self, victim: Seq) -> bool:
        """Copy the whole KV of a decoding `victim` to host memory (cached host blocks
        give way); False if it does not fit there (it is recomputed instead)."""
        host, b = self.host, self.pages.block
        assert host is not None
        blocks = -(-victim.kv // b)
        if host.free() < blocks and self.cache is not None:
            self.cache.trim_host(host.blocks - host.swapped - blocks)
        if host.free() < blocks:
            return False
        self._unpin(victim)
        # back from host memory it holds its whole KV as its own: no prefix or history
        # of the cache is its any more (a session's next turn matches what is left)
        victim.group = victim.session = -1
        host.swapped += blocks
        victim.swapped = blocks
        self.transfer_due_s += blocks * host.block_s
        return True

    def _swap_in(self, s: Seq) -> None:
        """Re-admit a swapped sequence: its KV comes back (all of it its own) and it
        resumes decoding."""
        host = self.host
        assert host is not None
        self.waiting.popleft()
        self.running[s] = None
        self.used += s.kv
        host.swapped -= s.swapped
        self.transfer_due_s += s.swapped * host.block_s
        s.swapped = 0
        self._join_decoding(s)

    def _make_room(self) -> None:
        """Preempt the newest sequences until the next decode step fits in the KV cache."""
        while self.decoding and not self.pages.fits_next(self.used, self.step,
                                                         len(self.decoding)):
            if self.ranked:  # the lowest priority first, the newest within it
                victim = lowest_newest(self.running)
                del self.running[victim]
            else:
                victim, _ = self.running.popitem()
            if victim in self.decoding:
                self._leave_decoding(victim)
                if self.swap and self.running and self._swap_out(victim):
                    self.log.preemptions[victim.rid] += 1
                    self.waiting.appendleft(victim)
                    continue
            else:
                self.prefilling.remove(victim)
                self.pages.pre_pad -= self.pages.pad(victim.kv)
            self._unpin(victim)
            victim.kv = 0
            if not self.running:  # alone and still too long: it can never finish here
                self.log.status[victim.rid] = ABORTED
                self._release(victim)
                return
            victim.prefill_total = victim.prefill_left = victim.prompt + victim.generated
            self.log.preemptions[victim.rid] += 1
            self.waiting.appendleft(victim)
