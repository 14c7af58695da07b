"""How much traffic one replica of a prefill pool, or of a decode pool, carries within
the SLOs (disaggregated serving), in the style of dcsim.optimize.capacity.

Prefill replica at lam req/s: prompts queue for the GPU, an M/G/1 queue on prompt
work (a prompt alone takes its profile prefill time; batching short prompts together
only shortens it): rho = lam E[S]; TTFT p99 = the p99 prompt's prefill + the p99 wait
(Pollaczek-Khinchine mean lam E[S^2] / (2 (1 - rho)) with an exponential tail).

Decode replica at lam req/s: decoding sequences n solve n / step(n) = lam E[D - 1]
(no prefill shares its GPU); the batch is Poisson with mean n, its p99 n99 sets the
slow steps and must fit the KV cache. A request's TPOT counts from its first token,
so it also waits for a slot at the next step (one step) and for its KV to move over
the ports: TPOT p99 over requests of (step + transfer + (D - 1) step(n99)) / (D - 1),
the transfer at the replica's NIC rate (as if it crossed servers: the conservative
case). The E2E bound is checked with the prefill pool's TTFT at its bound.

The decode model does not see preemption: near a full KV cache the simulator preempts
and recomputes sequences on the decode GPU, which this occupancy model misses (it was
seen 20-25 % optimistic there), so the plan's simulation check is what settles a
decode pool's rate.

Power: prefill energy per request x lam plus idle power the rest of the time; decode
energy per token at batch n x the tokens per second plus idle power while the batch
is empty (P = exp(-n)).
"""

from __future__ import annotations

import math

import numpy as np

from dcsim.catalog import Catalog, shapes
from dcsim.engine.build import deployment_layout
from dcsim.engine.kv_ports import nic_byte_s_per_gpu
from dcsim.optimize.capacity import (
    Config,
    Lengths,
    Perf,
    ReplicaModel,
    _poisson_p99,
    deployment_for,
)
from dcsim.profiles.store import ProfileStore
from dcsim.workloads.spec import InferenceService

ROLES = ("prefill", "decode")
BAD = Perf(False, math.inf, math.inf, math.inf, math.inf)


class PoolModel(ReplicaModel):
    """A ReplicaModel of one pool's replica: `role` prefill or decode."""

    def __init__(self, store: ProfileStore, cat: Catalog, svc: InferenceService, cfg: Config,
                 lengths: Lengths, role: str) -> None:
        super().__init__(store, cat, svc, cfg, lengths)
        assert role in ROLES
        self.role = role
        dep = deployment_for(svc, cfg, 1)
        per_token = shapes.kv_bytes_per_token(cat.model(svc.model), deployment_layout(
            dep, cat.gpu(cfg.gpu)).kv_bytes)
        srv = max((x for x in cat.servers.values() if x.gpu == cfg.gpu),
                  key=lambda x: x.gpus_per_server, default=None)  # (as table.wall_per_gpu_w)
        # the replica's share of its server's NICs (0: no server type known)
        self.port_byte_s = 0.0 if srv is None else cfg.tp * nic_byte_s_per_gpu(srv)
        self.kv_bytes = self.prompt * per_token  # per sampled request
        self.kv_bytes_mean = float(self.kv_bytes.mean())
        self.ttft_bound = svc.slo.ttft_p99_s or 0.0

    def perf(self, lam: float) -> Perf:
        """p99 latencies and GPU power at `lam` req/s (the other pool's part as none:
        TPOT 0 for prefill, TTFT 0 for decode)."""
        return self._prefill(lam) if self.role == "prefill" else self._decode(lam)

    def _prefill(self, lam: float) -> Perf:
        s = self.prefill_s
        rho = lam * float(s.mean())
        if rho >= 1 or self.p99_prompt + 1 > self.kv_tokens:
            return BAD
        wq = lam * float((s ** 2).mean()) / (2 * (1 - rho))
        wq99 = wq / rho * math.log(rho / 0.01) if rho > 0.01 else 0.0
        ttft = self.p99_prompt_s + wq99
        power = lam * float(self.prefill_j.mean()) + self.idle_w * (1 - rho)
        return Perf(True, ttft, 0.0, ttft, power)

    def _decode(self, lam: float) -> Perf:
        need = lam * self.decode_tokens
        b = self.step_s.size
        if b / self._step(b) < need or self.port_byte_s <= 0:
            return BAD
        lo, hi = 0.0, float(b)
        for _ in range(50):  # n / step(n) grows with n
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if max(mid, 1e-12) / self._step(max(mid, 1)) < need else (
                lo, mid)
        n = hi
        n99 = _poisson_p99(n)
        if n99 > b or n99 * self.tokens_per_seq > self.kv_tokens:
            return BAD
        step99 = self._step(max(n99, 1))
        moved = self.kv_bytes[:self.k.size] / self.port_byte_s
        tpot = float(np.quantile((step99 + moved + self.k * step99) / self.k, 0.99))
        e2e = self.ttft_bound + float(np.quantile(moved, 0.99)) + max(self.d99 - 1, 0) * tpot
        per_token = float(np.interp(max(n, 1), np.arange(1, b + 1), self.step_j)) / max(n, 1)
        power = need * per_token + self.idle_w * math.exp(-n)
        return Perf(True, 0.0, tpot, e2e, power)

