"""What a serving replica holds in flight: its requests (Seq) and the iteration running
(Mixed: prefill chunks with decode tokens; Block: a run of decode steps)."""

from __future__ import annotations

from dcsim.engine.costs import DecodeBlock


class Mixed:
    """A mixed iteration in flight: prefill chunks plus one token per decoding sequence."""

    __slots__ = ("chunks", "decoding", "energy_j", "time_s", "tokens")

    def __init__(self, chunks: list[tuple[Seq, int]], time_s: float, energy_j: float,
                 tokens: int, decoding: int) -> None:
        self.chunks, self.time_s, self.energy_j = chunks, time_s, energy_j
        self.tokens, self.decoding = tokens, decoding


class Block:
    """A block of decode steps in flight: k steps of a batch of `batch` sequences."""

    __slots__ = ("batch", "blk", "k")

    def __init__(self, blk: DecodeBlock, batch: int, k: int) -> None:
        self.blk, self.batch, self.k = blk, batch, k


# Seq.swapped of a sequence prefilled on another replica whose KV comes over the network
# (disaggregated serving): admitted like a swapped one, without prefill
INCOMING = -1


def session_key(session: int) -> int:
    """Cache and routing key of a session's history: negative, apart from the prefix
    groups (0, 1, ...) and from -1 (none)."""
    return -2 - session


class Seq:
    """A request inside a replica. While decoding, live values are derived from the
    replica's counters: generated = gen0 + (step - step0), kv = kv0 + (step - step0),
    energy = e0 + (e_cum - e_cum0)."""

    __slots__ = ("e0", "e_cum0", "energy_j", "gen0", "generated", "group", "kv", "kv0",
                 "output", "page", "prefill_left", "prefill_total", "prefix", "priority", "prompt",
                 "rid", "session", "shared", "step0", "swapped", "version")

    def __init__(self, rid: int, prompt: int, output: int, group: int = -1,
                 prefix: int = 0, session: int = -1, priority: int = 0) -> None:
        self.rid, self.prompt, self.output = rid, prompt, output
        self.group, self.prefix = group, prefix  # its shared prefix (-1: none) and tokens
        # the cache key of its conversation's history (session_key(session); -1: none)
        self.session = session
        self.priority = priority  # admitted before lower ones, preempted after them
        self.swapped = 0  # blocks of its KV in host memory while preempted by swapping
        self.shared = 0  # of its KV tokens, those held by the prefix cache (whole blocks)
        self.generated = 0
        self.prefill_total = self.prefill_left = prompt
        self.kv = 0
        self.energy_j = 0.0
        self.version = 0  # bumps when the sequence leaves decoding (stale heap entries)
        self.gen0 = self.kv0 = self.step0 = 0
        self.page = 0  # its key in the replica's Pages while decoding
        self.e0 = self.e_cum0 = 0.0
