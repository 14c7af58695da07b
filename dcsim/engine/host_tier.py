"""Host memory for KV blocks of one replica, behind its PCIe links.

Two kinds of block live there: prefix and session blocks the GPU cache evicted
(dcsim.engine.prefix_cache keeps them on their nodes, after the node's GPU blocks,
and takes them back at PCIe speed instead of recomputing them), and the whole KV of
sequences preempted by swapping (`preemption: swap`). A swapped sequence has the
first claim: cached blocks are dropped to make room for it. Copies to the host are
charged like copies back: each moves blocks x bytes per block / (tp x one GPU's PCIe
bandwidth), on the iteration that needs them, at the replica's idle power (the
copy engines work while the SMs wait).
"""

from __future__ import annotations


class HostKV:
    """Host KV capacity of one replica, what holds it, and the time a block takes."""

    def __init__(self, blocks: int, block_s: float) -> None:
        self.blocks = blocks  # capacity
        self.block_s = block_s  # seconds to move one block either way
        self.swapped = 0  # blocks of preempted sequences
        self.cached = 0  # evicted prefix / history blocks kept for reuse

    def free(self) -> int:
        """Blocks no one holds."""
        return self.blocks - self.swapped - self.cached
