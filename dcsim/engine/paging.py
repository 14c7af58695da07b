"""Paged KV cache of one replica: blocks of `block` tokens, counted without a pass over
the sequences.

A sequence of n KV tokens holds ceil(n / block) blocks, so its last, partial block is
padding no other sequence can use (vLLM's and SGLang's paged allocators work this way).
Decoding sequences all grow by one token a step, so a sequence's position inside its
last block moves in step with the replica's step counter: the group is kept as counts
of sequences by (tokens - step) mod block. Blocks held, the blocks the next step adds
and how many steps fit in the free blocks are then O(block) sums over those counts,
whatever the batch, and need no per-step events.
"""

from __future__ import annotations


class Pages:
    """Block counts of one replica's KV cache (tokens are counted by the replica)."""

    __slots__ = ("block", "blocks", "cached", "count", "fixed", "pre_pad", "two_blocks")

    def __init__(self, block_tokens: int, capacity_tokens: int) -> None:
        self.block = block_tokens
        self.two_blocks = 2 * block_tokens - 1  # tokens a step may need per sequence, bound
        self.blocks = capacity_tokens // block_tokens  # blocks the cache holds
        self.count = [0] * block_tokens  # decoding sequences by (tokens - step) mod block
        self.pre_pad = 0  # padding of the blocks reserved for prompts being prefilled
        self.fixed = 0  # blocks pinned by the prefix cache (dcsim.engine.prefix_cache)
        self.cached = 0  # blocks the prefix cache holds, pinned or not

    @property
    def tokens(self) -> int:
        """Tokens the whole blocks hold (what a single sequence could ever reach)."""
        return self.blocks * self.block

    def pad(self, tokens: int) -> int:
        """Padding of the last block of a sequence of `tokens` tokens."""
        return -tokens % self.block

    def join(self, tokens: int, step: int) -> int:
        """A sequence of `tokens` starts decoding at `step`; returns its key for `leave`."""
        key = (tokens - step) % self.block
        self.count[key] += 1
        return key

    def leave(self, key: int) -> None:
        """A decoding sequence (its key from `join`) stops decoding."""
        self.count[key] -= 1

    def held(self, tokens: int, step: int) -> int:
        """Blocks held at `step` by sequences holding `tokens` tokens in all:
        (tokens + padding of every decoding and prefilling sequence) / block."""
        b, pad = self.block, self.pre_pad
        for key, n in enumerate(self.count):
            if n:
                pad += n * (-(key + step) % b)
        return (tokens + pad) // b

    def fits_next(self, tokens: int, step: int, nd: int) -> bool:
        """The next decode step of the nd decoding sequences finds the blocks it needs
        (one for each sequence whose last block is full)."""
        b, room = self.block, self.blocks - self.fixed
        # padding is below one block a sequence: a cheap bound settles most calls
        if tokens + self.pre_pad + nd * (2 * b - 1) <= room * b:
            return True
        return self.held(tokens, step) + self.count[-step % b] <= room

    def steps_fitting(self, tokens: int, step: int, nd: int, want: int) -> int:
        """Most decode steps, up to `want`, whose new blocks fit in the free blocks.

        Every `block` steps each sequence needs exactly one block, so q = free // nd
        whole rounds fit; within the next round, offset j needs a block for the
        sequences with (tokens - step) mod block = -(step + j) mod block.
        """
        b, room = self.block, self.blocks - self.fixed
        lower = room - (tokens + self.pre_pad + nd * (b - 1)) // b - 1
        if lower >= 0 and (lower // nd) * b >= want:  # room is not what ends the block
            return want
        q, rem = divmod(room - self.held(tokens, step), nd)
        count, acc = self.count, 0
        for j in range(b):
            acc += count[-(step + j) % b]
            if acc > rem:
                return min(q * b + j, want)
        return min(q * b + b, want)
