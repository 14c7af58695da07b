"""Prefix caching of one replica: KV blocks of shared prompt prefixes kept for reuse.

A prefix (a system prompt: `shared_prefix` of a service) is one node of a radix tree
under the root, as SGLang keeps them: its cached part is its first `blocks` whole
KV blocks, shared by every running request that matched it and counted once in
memory. We key prefixes by identity rather than hashing block contents (vLLM's way):
requests carry which prefix they start with, so one dictionary look-up per request
finds the longest cached prefix whatever its length, and eviction frees whole blocks
from the tail of the least recently used unreferenced prefix, as both engines evict
the tail of an unused sequence first. A node referenced by a running request is never
evicted.

Memory: the replica's Pages count the requests' private blocks; this cache tells
Pages how many blocks it pins (`Pages.fixed`), and frees unpinned ones on demand, so
unreferenced cached blocks fill memory no request needs and never cost a request room.
With a host tier (dcsim.engine.host_tier) evicted blocks move to host memory, kept on
their node after its GPU blocks (a node's cached extent stays contiguous), and the host
copies are dropped least recently used first when host memory runs out.
"""

from __future__ import annotations

from collections import OrderedDict

from dcsim.engine.host_tier import HostKV
from dcsim.engine.paging import Pages


class _Node:
    __slots__ = ("blocks", "host", "refs")

    def __init__(self) -> None:
        self.blocks = 0  # leading whole blocks of the prefix held
        self.host = 0  # blocks after those, evicted to host memory (a host tier)
        self.refs = 0  # running requests using them


class PrefixCache:
    """Cached prefixes of one replica, their references and LRU order."""

    def __init__(self, pages: Pages, host: HostKV | None = None) -> None:
        self.pages, self.host = pages, host
        self.nodes: dict[int, _Node] = {}
        # unreferenced nodes with GPU blocks, least recent first
        self.idle: OrderedDict[int, None] = OrderedDict()
        # nodes with host blocks, least recently evicted first (a host tier)
        self.in_host_order: OrderedDict[int, None] = OrderedDict()
        self.total = 0  # blocks held by all nodes
        self.evictable = 0  # blocks of unreferenced nodes

    def unpinned(self, group: int) -> bool:
        """Prefix `group` has cached blocks no running request uses (matching pins them)."""
        node = self.nodes.get(group)
        return node is not None and node.refs == 0 and node.blocks > 0

    def match(self, group: int) -> int:
        """Whole blocks of prefix `group` cached now (no side effect)."""
        node = self.nodes.get(group)
        return 0 if node is None else node.blocks

    def in_host(self, group: int) -> int:
        """Blocks of `group` after its GPU ones that wait in host memory."""
        node = self.nodes.get(group)
        return 0 if node is None else node.host

    def load(self, group: int, blocks: int) -> None:
        """Bring the first `blocks` host blocks of `group` back to the GPU (the caller
        charges the transfer and pins the node)."""
        node = self.nodes[group]
        assert self.host is not None and blocks <= node.host
        node.host -= blocks
        if node.host == 0:
            del self.in_host_order[group]
        node.blocks += blocks
        self.host.cached -= blocks
        self.total += blocks
        if node.refs == 0:
            self.evictable += blocks
        self._sync()

    def pin(self, group: int) -> None:
        """A request starts using the cached blocks of `group` (they cannot be evicted)."""
        node = self.nodes.setdefault(group, _Node())
        if node.refs == 0:
            self.idle.pop(group, None)
            self.evictable -= node.blocks
        node.refs += 1
        self._sync()

    def release(self, group: int) -> None:
        """A request stops using `group`; unreferenced, it becomes the most recently used."""
        node = self.nodes[group]
        assert node.refs > 0, "a prefix released more often than pinned"
        node.refs -= 1
        if node.refs == 0:
            if node.blocks:
                self.idle[group] = None
                self.evictable += node.blocks
            elif not node.host:
                del self.nodes[group]
        self._sync()

    def extend(self, group: int, blocks: int) -> int:
        """A pinned request computed the first `blocks` blocks of `group`: those beyond
        the cached ones move from the request into the cache. Returns the blocks moved."""
        node = self.nodes[group]
        moved = max(blocks - node.blocks, 0)
        node.blocks += moved
        self.total += moved
        if node.host and moved:  # host copies of positions now recomputed: superseded
            assert self.host is not None
            self.host.cached -= node.host
            node.host = 0
            del self.in_host_order[group]
        self._sync()
        return moved

    def evict(self, need: int) -> int:
        """Free up to `need` unreferenced blocks, least recently used first (to host
        memory, with a host tier); returns how many were freed."""
        freed = 0
        host, idle, nodes = self.host, self.idle, self.nodes
        while freed < need and idle:
            group = next(iter(idle))
            node = nodes[group]
            take = min(node.blocks, need - freed)
            node.blocks -= take
            freed += take
            if host is not None:  # the tail moves to host memory, still in order
                node.host += take
                host.cached += take
                if group not in self.in_host_order:
                    self.in_host_order[group] = None
            if node.blocks == 0:
                del idle[group]
                if not node.host:
                    del nodes[group]
        self.total -= freed
        self.evictable -= freed
        if host is not None:
            self.trim_host(host.blocks - host.swapped)
        self._sync()
        return freed

    def trim_host(self, room: int) -> None:
        """Drop host blocks, from the tails of the prefixes evicted longest ago, until
        the cached ones take at most `room` blocks."""
        host, order = self.host, self.in_host_order
        assert host is not None
        while host.cached > room and order:
            group = next(iter(order))
            node = self.nodes[group]
            drop = min(node.host, host.cached - room)
            node.host -= drop
            host.cached -= drop
            if node.host == 0:
                del order[group]
                if node.blocks == 0 and node.refs == 0:
                    del self.nodes[group]

    def _sync(self) -> None:
        self.pages.fixed = self.total - self.evictable
        self.pages.cached = self.total
