"""Disaggregated serving at run time: a service's prefill and decode pools, and each
request's KV cache moved between them as one flow on the network.

A request goes to a prefill replica (the service's router over the prefill pool) and
is prefilled there; its first token comes at the end of prefill, as the engines report
it. The prefill replica keeps the request's KV blocks while the decode pool's router
queues it at a decode replica. That replica admits it like any waiting request, when a
batch slot and KV blocks for the whole prompt and its next token are free, and holds
them for it; admission starts the transfer: prompt tokens x KV bytes per token from
the prefill replica's ports to the decode replica's (dcsim.engine.kv_ports), one flow
on the fabric, shared max-min with other transfers and training jobs. When the last
byte lands the prefill replica frees the blocks and the request joins the decode
replica's batch at its next iteration. A request that waits for decode room thus
holds its prefill KV, which counts against the prefill replica's cache.

Events per request stay bounded: a transfer is one flow, its start and end one
re-share each, and one pending event marks the next transfer to end.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import simpy

from dcsim.engine.kv_ports import KvPorts
from dcsim.engine.metrics import STATUS, RequestLog
from dcsim.engine.replica import Replica
from dcsim.engine.router import Router
from dcsim.engine.sequence import INCOMING, Seq
from dcsim.hardware.network import Fabric

REJECTED = STATUS.index("rejected")


class KvLog:
    """Per request of a disaggregated service: its prefill replica, the KV bytes sent,
    the wait for a decode replica's room and the transfer time (NaN: none)."""

    def __init__(self, n: int) -> None:
        self.prefill_replica = np.full(n, -1, dtype=np.int64)
        self.kv_bytes = np.zeros(n)
        self.kv_wait_s = np.full(n, np.nan)  # end of prefill to the transfer's start
        self.kv_transfer_s = np.full(n, np.nan)


class Transfers:
    """Transfers on the fabric with one pending event: the end of the next one, moved
    whenever the fabric re-shares its links."""

    def __init__(self, env: simpy.Environment, fabric: Fabric) -> None:
        self.env, self.fabric = env, fabric
        self.done: dict[int, Callable[[], None]] = {}
        self._ev: simpy.Event | None = None
        self._at = np.inf  # when the pending event fires
        fabric.on_share = self._reschedule

    def send(self, key: int, links: list[int], nbytes: float, done: Callable[[], None]
             ) -> None:
        """Move `nbytes` over `links`; call `done` when the last byte lands."""
        self.done[key] = done
        self.fabric.send(key, links, np.inf, nbytes)

    def _reschedule(self) -> None:
        dt = self.fabric.next_done_s()
        at = self.env.now + dt
        if self._ev is not None:
            if abs(at - self._at) <= 1e-9:  # the next end has not moved: its event stands
                return
            self._ev.callbacks.remove(self._fire)
            self._ev = None
        if dt < np.inf:
            self._ev, self._at = self.env.timeout(dt), at
            self._ev.callbacks.append(self._fire)

    def _fire(self, _ev: simpy.Event) -> None:
        self._ev, self._at = None, np.inf
        done = self.fabric.finished()  # (a re-share schedules the next end)
        if not done:  # (fired within a nanosecond before it: wait for it)
            self._reschedule()
        for key in done:
            self.done.pop(key)()


class Disaggregation:
    """One service's two routers and the requests moving between its pools; `route`
    takes an arrival, as a colocated service's Router does."""

    def __init__(self, env: simpy.Environment, prefill: Router, decode: Router,
                 transfers: Transfers, ports: KvPorts, bytes_per_token: float,
                 outputs: list[int], log: RequestLog, kv: KvLog) -> None:
        self.env, self.prefill, self.decode = env, prefill, decode
        self.transfers, self.ports, self.per_token = transfers, ports, bytes_per_token
        self.outputs, self.log, self.kv = outputs, log, kv
        self.parked: dict[int, tuple[Replica, Seq]] = {}  # rid -> where its KV waits
        for r in prefill.replicas:
            r.handoff = self._prefilled
        for r in decode.replicas:
            r.on_receive = self._receive

    def route(self, seq: Seq) -> None:
        """Send an arrival to the prefill pool (refused if a decode replica could never
        hold its prompt: the prefill router refuses it for its own pool)."""
        if seq.prompt + 1 > self.decode.kv_limit:
            self.log.status[seq.rid] = REJECTED
            return
        seq.output = 1  # on the prefill replica it is done at its first token
        self.prefill.route(seq)

    def _prefilled(self, rep: Replica, s: Seq) -> bool:
        """Request `s` finished prefill on `rep`: queue it at the decode pool (True), or,
        with a single output token, it is done (False)."""
        out = self.outputs[s.rid]
        if out <= 1:
            return False
        d = Seq(s.rid, s.prompt, out, priority=s.priority)
        d.kv, d.generated, d.prefill_left = s.kv, s.generated, 0
        d.energy_j, d.swapped = s.energy_j, INCOMING
        self.kv.prefill_replica[s.rid] = rep.index
        self.parked[s.rid] = (rep, s)
        self.decode.route(d)
        return True

    def _receive(self, rep: Replica, d: Seq) -> None:
        """Decode replica `rep` admitted `d`: start moving its KV there."""
        src, s = self.parked.pop(d.rid)
        now = self.env.now
        nbytes = d.kv * self.per_token
        self.kv.kv_bytes[d.rid] = nbytes
        self.kv.kv_wait_s[d.rid] = now - self.log.first_token_s[d.rid]

        def landed() -> None:
            self.kv.kv_transfer_s[d.rid] = self.env.now - now
            src.release_kv(s)
            rep.deliver(d)

        self.transfers.send(d.rid, self.ports.path(src.index, rep.index), nbytes, landed)
