"""How much traffic one replica carries within its SLOs, and its power at that load.

A queueing model of a continuously batching replica, fed by the profile store.
At arrival rate lam (req/s) with prompt lengths P and output lengths D:

- prefill occupies the GPU a share rho = lam x E[prefill time(P)];
- decoding sequences n solve n x (1 - rho) / step(n) = lam x E[D - 1] (the decode
  tokens the batch must produce per second), step(n) the profile's decode step at
  batch n and the mean context; admission is free of queueing while the batch has
  room, so the batch is the occupancy of an M/G/inf system: Poisson with mean n,
  and its 99th percentile n99 sets the slow steps;
- TPOT p99 = step(n99) / (1 - rho) (decode steps share the GPU with prefill);
- TTFT p99 = one step in progress + the p99 prompt's prefill + the p99 wait of an
  M/G/1 queue of prefills (Pollaczek-Khinchine mean lam E[S^2] / (2 (1 - rho)) with
  the exponential tail P(W > t) = rho exp(-rho t / W));
- E2E p99 = TTFT p99 + (D99 - 1) x TPOT p99; the p99 batch must fit in the KV cache.

The capacity is the largest rate whose every p99 meets the service's SLO; plans use
`utilization_target` of it. GPU power at rate lam: prefill and decode energy per
second plus idle power while the replica has nothing to do (P(busy) = rho + (1 -
rho)(1 - exp(-n))). Short simulations check a sample of these numbers (tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from dcsim.catalog import Catalog
from dcsim.engine.build import deployment_layout
from dcsim.engine.simulation import kv_capacity_tokens
from dcsim.profiles.store import ProfileStore
from dcsim.workloads.lengths import sample_lengths
from dcsim.workloads.requests import expected_turns, session_requests
from dcsim.workloads.spec import Deployment, InferenceService, TraceArrivals
from dcsim.workloads.traces import load_trace, resolve_trace_path

_NORMAL = NormalDist()
SAMPLES = 4000  # draws of a service's length distributions


@dataclass(frozen=True)
class Config:
    """One candidate deployment: GPU type, TP, power limit (None: default) and batch limit."""

    gpu: str
    tp: int
    power_cap_w: float | None
    max_num_seqs: int

    @property
    def label(self) -> str:
        """Short name of the configuration, e.g. H200-SXM/tp1/500W/b64."""
        cap = "max" if self.power_cap_w is None else f"{self.power_cap_w:g}W"
        return f"{self.gpu}/tp{self.tp}/{cap}/b{self.max_num_seqs}"


@dataclass(frozen=True)
class Lengths:
    """Sampled prompt and output lengths of a service, tokens."""

    prompt: np.ndarray
    output: np.ndarray


@dataclass(frozen=True)
class Perf:
    """A configuration's predicted latencies and power at one load."""

    ok: bool  # stable, and the p99 batch fits in the KV cache
    ttft_p99_s: float
    tpot_p99_s: float
    e2e_p99_s: float
    gpu_power_w: float  # all tp GPUs of the replica


def service_lengths(svc: InferenceService, seed: int, base_dir: Path | None) -> Lengths:
    """Prompt and output lengths of the service: its trace rows, or SAMPLES draws; whole
    prompts as prefilled without a prefix cache (shared prefix and session history
    included: the model does not count cache hits, which errs towards more capacity)."""
    a = svc.arrival
    if svc.sessions is not None:
        rngs = tuple(np.random.default_rng(x) for x in np.random.SeedSequence(seed).spawn(5))
        starts = np.zeros(max(int(SAMPLES / expected_turns(svc.sessions)), 1))
        t = session_requests(svc, svc.sessions, starts, rngs, base_dir)
        return Lengths(t["prompt_tokens"].to_numpy(), t["output_tokens"].to_numpy())
    prefix = svc.shared_prefix.tokens if svc.shared_prefix is not None else 0
    if isinstance(a, TraceArrivals) and a.use_token_lengths:
        t = load_trace(resolve_trace_path(a.path, base_dir))
        return Lengths(np.maximum(t["prompt_tokens"].to_numpy(), 1) + prefix,
                       np.maximum(t["output_tokens"].to_numpy(), 1))
    rp, ro = (np.random.default_rng(x) for x in np.random.SeedSequence(seed).spawn(2))
    assert svc.prompt_tokens is not None and svc.output_tokens is not None
    return Lengths(sample_lengths(svc.prompt_tokens, SAMPLES, rp, "prompt_tokens", base_dir)
                   + prefix,
                   sample_lengths(svc.output_tokens, SAMPLES, ro, "output_tokens", base_dir))


def deployment_for(svc: InferenceService, cfg: Config, replicas: int) -> Deployment:
    """The service's deployment with a configuration's choices."""
    d = svc.deployment
    return d.model_copy(update={"gpu": cfg.gpu, "tp": cfg.tp, "power_cap_w": cfg.power_cap_w,
                                "max_num_seqs": cfg.max_num_seqs, "replicas": replicas,
                                "max_batched_tokens": max(d.max_batched_tokens,
                                                          cfg.max_num_seqs)})


class ReplicaModel:
    """Profile costs of one configuration for one service, tabulated once."""

    def __init__(self, store: ProfileStore, cat: Catalog, svc: InferenceService, cfg: Config,
                 lengths: Lengths) -> None:
        self.cfg = cfg
        dep = deployment_for(svc, cfg, 1)
        self.kv_tokens = kv_capacity_tokens(svc.model_copy(update={"deployment": dep}),
                                            cat.gpu(cfg.gpu), cat.model(svc.model))
        self.budget = dep.max_batched_tokens
        self.prefill_first = dep.scheduler == "prefill_first"
        self.idle_w = cat.gpu(cfg.gpu).idle_power_w * cfg.tp
        lay = deployment_layout(dep, cat.gpu(cfg.gpu))
        pre = store.resolve(cfg.gpu, svc.model, "prefill", cfg.tp, cfg.power_cap_w, lay)
        dec = store.resolve(cfg.gpu, svc.model, "decode", cfg.tp, cfg.power_cap_w, lay)
        p = np.maximum(lengths.prompt, 1).astype(float)
        out = pre.evaluate(np.ones_like(p), p)
        self.prefill_s, self.prefill_j = out.latency_s, out.energy_j
        self.p99_prompt_s = float(np.quantile(self.prefill_s, 0.99))
        self.p99_prompt = float(np.quantile(p, 0.99))
        self.decode_tokens = float(np.maximum(lengths.output - 1, 0).mean())
        self.d99 = float(np.quantile(lengths.output, 0.99))
        self.ctx = float((p + lengths.output / 2).mean())
        self.tokens_per_seq = float((p + lengths.output).mean())
        n = np.arange(1, cfg.max_num_seqs + 1, dtype=float)
        d = dec.evaluate(n, np.full_like(n, self.ctx))
        self.prompt = p
        # fixed draws for the TPOT tail (common random numbers across rates)
        rng = np.random.default_rng(0)
        self.k = np.maximum(lengths.output - 1, 1).astype(float)[:SAMPLES]
        self.u = rng.uniform(size=self.k.size)
        self.zu = np.array([_NORMAL.inv_cdf(min(max(v, 1e-12), 1 - 1e-12)) for v in self.u])
        self.z = rng.standard_normal(self.k.size)
        self.u2 = rng.uniform(size=self.k.size)
        self.e = rng.exponential(size=self.k.size)
        self.step_s, self.step_j = d.latency_s, d.energy_j

    def _step(self, n: float) -> float:
        """Decode step at batch n (interpolated between whole batches), s."""
        return float(np.interp(n, np.arange(1, self.step_s.size + 1), self.step_s))

    def perf(self, lam: float) -> Perf:
        """p99 latencies and GPU power at `lam` req/s."""
        rho = lam * float(self.prefill_s.mean())
        need = lam * self.decode_tokens
        b = self.step_s.size
        bad = Perf(False, math.inf, math.inf, math.inf, math.inf)
        if rho >= 1 or b * (1 - rho) / self._step(b) < need:
            return bad
        lo, hi = 0.0, float(b)
        for _ in range(50):  # n (1 - rho) / step(n) grows with n
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if max(mid, 1e-12) * (1 - rho) / self._step(max(mid, 1)) < need \
                else (lo, mid)
        n = hi
        n99 = _poisson_p99(n)
        if n99 > b or n99 * self.tokens_per_seq > self.kv_tokens:
            return bad  # admissions would queue for a batch slot or KV room > 1 % of the time
        step99 = self._step(max(n99, 1))
        if self.prefill_first:  # prefill-only iterations: the prompt has the GPU alone
            service = self.prefill_s
        else:
            # a prompt is prefilled in chunks of the token budget left by the decode batch,
            # each iteration also running one decode step
            chunk = max(self.budget - n, 1.0)
            service = self.prefill_s + np.ceil(self.prompt / chunk) * self._step(max(n, 1))
        rho_q = lam * float(service.mean())
        if rho_q >= 1:
            return bad
        wq = lam * float((service ** 2).mean()) / (2 * (1 - rho_q))
        wq99 = wq / rho_q * math.log(rho_q / 0.01) if rho_q > 0.01 else 0.0
        tpot = self._tpot_p99(lam, step99, rho_q, wq)
        ttft = step99 + float(np.quantile(service, 0.99)) + wq99
        e2e = ttft + max(self.d99 - 1, 0) * tpot
        busy = rho + (1 - rho) * (1 - math.exp(-n))
        per_token = float(np.interp(max(n, 1), np.arange(1, b + 1), self.step_j)) / max(n, 1)
        power = lam * float(self.prefill_j.mean()) + need * per_token + self.idle_w * (1 - busy)
        return Perf(True, ttft, tpot, e2e, power)

    def _tpot_p99(self, lam: float, step: float, rho_q: float, wq: float) -> float:
        """p99 over requests of (decode time + prefill work done meanwhile) / decode steps.

        The prefill work a request's k decode steps share the GPU with: the backlog it
        finds (the M/G/1 waiting work: none with probability 1 - rho, else exponential
        with mean W / rho) plus prompts arriving during its decode, compound Poisson:
        N ~ Poisson(lam x k x step) prefill times (normal approximation of their sum
        given N). Short outputs make the tail. Fixed draws keep it deterministic.
        """
        k = self.k
        window = k * step
        count = _poisson_ppf(self.u, self.zu, lam * window)
        m, sd = float(self.prefill_s.mean()), float(self.prefill_s.std())
        work = np.maximum(count * m + np.sqrt(count) * sd * self.z, 0.0)
        backlog = np.where(self.u2 < rho_q, self.e * wq / max(rho_q, 1e-12), 0.0)
        return float(np.quantile((window + work + backlog) / k, 0.99))

    def capacity(self, svc: InferenceService) -> float:
        """Largest rate (req/s) at which every SLO bound holds at p99; 0 if none does."""
        def meets(lam: float) -> bool:
            """Every SLO bound of the service holds at arrival rate lam (req/s)."""
            return _meets(self.perf(lam), svc)

        if not meets(1e-9):
            return 0.0
        hi = 1.0
        while meets(hi) and hi < 1e7:
            hi *= 2
        lo = hi / 2 if hi > 1.0 else 0.0
        while hi - lo > 1e-3 * hi:  # to 0.1 %
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if meets(mid) else (lo, mid)
        return lo


def _meets(p: Perf, svc: InferenceService) -> bool:
    if not p.ok:
        return False
    return all(bound is None or value <= bound for value, bound in (
        (p.ttft_p99_s, svc.slo.ttft_p99_s), (p.tpot_p99_s, svc.slo.tpot_p99_s),
        (p.e2e_p99_s, svc.slo.e2e_p99_s)))


def _poisson_p99(mean: float) -> float:
    """99th percentile of a Poisson count with this mean."""
    if mean <= 0:
        return 0.0
    k, term = 0, math.exp(-mean) if mean < 700 else 0.0
    if term == 0.0:  # large mean: the normal approximation
        return mean + 2.326 * math.sqrt(mean)
    total = term
    while total < 0.99:
        k += 1
        term *= mean / k
        total += term
    return float(k)


def _poisson_ppf(u: np.ndarray, zu: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Poisson quantiles at probabilities u (standard normal quantiles zu); vectorised,
    the normal approximation above a mean of 50."""
    mean = np.asarray(mean, dtype=float)
    out = np.zeros_like(mean)
    small = mean <= 50
    ms, us = mean[small], u[small]
    term = np.exp(-ms)
    total = term.copy()
    k = np.zeros_like(ms)
    for j in range(1, 200):
        more = total < us
        if not more.any():
            break
        term = term * ms / j
        k[more] += 1
        total = total + np.where(more, term, 0.0)
    out[small] = k
    big = ~small
    out[big] = np.maximum(np.round(mean[big] + np.sqrt(mean[big]) * zu[big]), 0)
    return out
