"""Routing of a service's requests to its replicas."""

from __future__ import annotations

import heapq
from collections import deque

import numpy as np

from dcsim.engine.admission import Deadlines, PriorityWaiting
from dcsim.engine.lifecycle import SHUT
from dcsim.engine.metrics import STATUS, RequestLog
from dcsim.engine.replica import Replica
from dcsim.engine.sequence import Seq

REJECTED = STATUS.index("rejected")
TREE_FROM = 128  # replicas: from here a tree finds the least loaded in O(log n), not O(n)


class MinTree:
    """Per-replica loads with the least loaded (lowest index on ties) kept at the root of a
    binary tree: setting a load costs O(log n), finding the least loaded O(1), where a
    scan of the list costs O(n) per arrival (the term that grew with replicas x requests)."""

    def __init__(self, n: int) -> None:
        self.size = 1
        while self.size < n:
            self.size *= 2
        self.load = [0] * n
        # node k holds the index of the least loaded leaf below it (-1: none)
        self.best = [-1] * (2 * self.size)
        for i in range(n):
            self.best[self.size + i] = i
        for k in range(self.size - 1, 0, -1):
            self.best[k] = self._better(self.best[2 * k], self.best[2 * k + 1])

    def _better(self, a: int, b: int) -> int:
        if a < 0:
            return b
        if b < 0:
            return a
        return b if self.load[b] < self.load[a] else a  # a < b: ties keep the lower index

    def __setitem__(self, i: int, value: int) -> None:
        load, best = self.load, self.best
        load[i] = value
        k = (self.size + i) >> 1
        while k:  # _better, inline: twice an arrival on large services
            a, b = best[2 * k], best[2 * k + 1]
            w = b if a < 0 else a if b < 0 else (b if load[b] < load[a] else a)
            if w == best[k] and w != i:
                return  # the same winner, its load unchanged: nothing above changes
            best[k] = w
            k >>= 1

    def __getitem__(self, i: int) -> int:
        return self.load[i]

    def argmin(self) -> int:
        """The least loaded replica (the lowest index among equals)."""
        return self.best[1]


class Router:
    """Sends each arrival to a replica (or to a shared queue replicas pull from)."""

    def __init__(self, policy: str, replicas: list[Replica], rng: np.random.Generator,
                 log: RequestLog, shared: deque[Seq] | PriorityWaiting | None = None,
                 affinity_slack: int = 0, max_waiting: int | None = None) -> None:
        self.policy, self.replicas, self.rng, self.log = policy, replicas, rng, log
        self.slack = affinity_slack
        # per replica (the shared queue: that many per replica); None: no limit
        self.max_waiting = max_waiting
        if shared is not None and max_waiting is not None:
            self.max_waiting = max_waiting * len(replicas)
        # per request, the longest wait for a first admission (NaN: none), and the timer
        self.wait_limits: list[float] | None = None
        self.deadlines: Deadlines | None = None
        self.home: dict[int, int] = {}  # prefix_affinity: each prefix's (session's) replica
        self.shared = shared
        self.next = 0
        # replicas open for new work (slots, in order) where a scaling changes them;
        # None: every replica, always
        self.open_slots: list[int] | None = None
        self.pending: list[Seq] = []  # arrivals while none is open
        self.kv_limit = min(r.kv_capacity for r in replicas)
        # outstanding requests per replica, kept current by the replicas themselves
        self.loads: list[int] | MinTree = (MinTree(len(replicas)) if len(replicas) >= TREE_FROM
                                           else [0] * len(replicas))
        for i, r in enumerate(replicas):
            r.share_loads(self.loads, i)
        # central queue, large: slots that went idle (a heap), the batch size of each
        # cuttable replica (a tree), and the slots changed since the tree was last read
        self.idle: list[int] | None = None
        self.open: MinTree | None = None
        self.dirty: set[int] = set()
        if shared is not None and len(replicas) >= TREE_FROM:
            self.idle, self.open = [], MinTree(len(replicas))
            for r in replicas:
                r.watch = self._watch
                self._watch(r)

    def route(self, seq: Seq) -> None:
        """Send one arrival to a replica (or the shared queue); refuse what can never fit."""
        if seq.prompt + 1 > self.kv_limit:  # can never fit: refused like an over-long prompt
            self.log.status[seq.rid] = REJECTED
            return
        if self.policy == "central_queue":
            assert self.shared is not None
            if self.max_waiting is not None and len(self.shared) >= self.max_waiting:
                self.log.status[seq.rid] = REJECTED
                return
            self._enqueue(seq)
            if self.wait_limits is not None:
                self._watch_deadline(seq, None, self.shared)
            return
        if self.open_slots is not None and not self.open_slots:
            self.pending.append(seq)  # scaled to zero: held until a replica is ready
            return
        if self.policy == "prefix_affinity" and (seq.session != -1 or seq.group >= 0):
            key = seq.session if seq.session != -1 else seq.group  # the history's holder
            r = self.replicas[self._affine(key)]
        else:
            r = self.replicas[self._pick()]
        if self.max_waiting is not None and len(r.waiting) >= self.max_waiting:
            self.log.status[seq.rid] = REJECTED  # its queue is full
            return
        r.submit(seq)
        if self.wait_limits is not None:
            self._watch_deadline(seq, r, r.waiting)

    def _watch_deadline(self, seq: Seq, r: Replica | None,
                        queue: deque[Seq] | PriorityWaiting) -> None:
        assert self.wait_limits is not None and self.deadlines is not None
        limit = self.wait_limits[seq.rid]
        if limit == limit:  # not NaN
            self.deadlines.watch(seq, limit, r, queue)

    def _affine(self, key: int) -> int:
        """The replica that served prefix group or session `key` last, unless it has more
        than `slack` requests outstanding beyond the least loaded one: then the least
        loaded, which becomes the key's replica."""
        best = self._least()
        home = self.home.get(key)
        if home is None or self.loads[home] > self.loads[best] + self.slack:
            self.home[key] = home = best
        return home

    def _least(self) -> int:
        """The replica with the fewest requests outstanding (ties: the lowest index)."""
        loads = self.loads
        if isinstance(loads, MinTree):
            return loads.argmin()
        return loads.index(min(loads))

    def _pick(self) -> int:
        n = len(self.replicas)
        if self.policy == "round_robin":
            i = self.next
            while self.replicas[i].closed:  # (a scaling keeps at least one open)
                i = (i + 1) % n
            self.next = (i + 1) % n
            return i
        if self.policy in ("least_outstanding", "prefix_affinity"):  # (no prefix: least)
            return self._least()  # closed replicas carry a load of SHUT
        if self.open_slots is not None:
            return self._two_of(self.open_slots)
        if n == 1:
            return 0
        a, b = self.rng.choice(n, size=2, replace=False)  # power of two choices
        return int(a) if self.replicas[a].outstanding <= self.replicas[b].outstanding else int(b)

    def _two_of(self, slots: list[int]) -> int:
        """Power of two choices among the open replicas."""
        if len(slots) == 1:
            return slots[0]
        a, b = self.rng.choice(len(slots), size=2, replace=False)
        i, j = slots[int(a)], slots[int(b)]
        return i if self.replicas[i].outstanding <= self.replicas[j].outstanding else j

    def _watch(self, r: Replica) -> None:
        """Note a change of state of `r` for the central queue's indexes. The tree is
        brought up to date only when read: replicas change state every iteration, while
        the tree is read only by arrivals that find no idle replica."""
        assert self.idle is not None
        if r.asleep:
            heapq.heappush(self.idle, r.slot)
        self.dirty.add(r.slot)

    def _enqueue(self, seq: Seq) -> None:
        assert self.shared is not None
        self.shared.append(seq)
        if self.open is not None:
            self._wake_one()
            return
        for r in self.replicas:  # an idle replica first
            if r.asleep:
                r.poke()
                return
        # otherwise cut short the decode block of the least busy replica with a free slot
        open_ = [r for r in self.replicas if r.cuttable]
        if open_:
            min(open_, key=lambda r: r.batch_size).poke()

    def _wake_one(self) -> None:
        """As the scan in _enqueue, from indexes: the lowest-index idle replica, else the
        cuttable one with the smallest batch (lowest index on ties). O(log n), not O(n)."""
        assert self.idle is not None and self.open is not None
        idle, replicas = self.idle, self.replicas
        while idle:  # entries of replicas woken since are skipped here
            r = replicas[heapq.heappop(idle)]
            if r.asleep:
                r.poke()
                return
        tree = self.open
        for i in self.dirty:
            r = replicas[i]
            load = r.batch_size if r.cuttable else SHUT
            if tree[i] != load:
                tree[i] = load
        self.dirty.clear()
        k = tree.argmin()
        if tree[k] < SHUT:
            replicas[k].poke()
