"""Routing of a service's requests to its replicas."""

from __future__ import annotations

from collections import deque

import numpy as np

from dcsim.engine.metrics import RequestLog
from dcsim.engine.replica import Replica
from dcsim.engine.sequence import Seq

REJECTED = 2


class Router:
    """Sends each arrival to a replica (or to a shared queue replicas pull from)."""

    def __init__(self, policy: str, replicas: list[Replica], rng: np.random.Generator,
                 log: RequestLog, shared: deque[Seq] | None = None) -> None:
        self.policy, self.replicas, self.rng, self.log = policy, replicas, rng, log
        self.shared = shared
        self.next = 0
        self.kv_limit = min(r.kv_capacity for r in replicas)
        # outstanding requests per replica, kept current by the replicas themselves
        self.loads = [0] * len(replicas)
        for i, r in enumerate(replicas):
            r.share_loads(self.loads, i)

    def route(self, seq: Seq) -> None:
        """Send one arrival to a replica (or the shared queue); refuse what can never fit."""
        if seq.prompt + 1 > self.kv_limit:  # can never fit: refused like an over-long prompt
            self.log.status[seq.rid] = REJECTED
            return
        if self.policy == "central_queue":
            self._enqueue(seq)
            return
        self.replicas[self._pick()].submit(seq)

    def _pick(self) -> int:
        n = len(self.replicas)
        if self.policy == "round_robin":
            i = self.next
            self.next = (i + 1) % n
            return i
        if self.policy == "least_outstanding":  # ties go to the lowest index
            loads = self.loads
            return loads.index(min(loads))
        if n == 1:
            return 0
        a, b = self.rng.choice(n, size=2, replace=False)  # power of two choices
        return int(a) if self.replicas[a].outstanding <= self.replicas[b].outstanding else int(b)

    def _enqueue(self, seq: Seq) -> None:
        assert self.shared is not None
        self.shared.append(seq)
        for r in self.replicas:  # an idle replica first
            if r.asleep:
                r.poke()
                return
        # otherwise cut short the decode block of the least busy replica with a free slot
        open_ = [r for r in self.replicas if r.cuttable]
        if open_:
            min(open_, key=lambda r: r.batch_size).poke()
