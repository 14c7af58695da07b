"""Inputs of the plan: demand per service and period, and what each configuration can do.

One row per (service, configuration) that fits: the rate one replica carries within
the SLOs (queueing model of dcsim.optimize.capacity, times the utilisation target),
and its wall power as a line in its load, through the same server/PSU model the
simulator uses (dcsim.hardware.server). The line passes through the power at half
and at full planned load: GPU power rises steeply at low load (the GPU iterates
whenever a request is in flight), so a line from idle would undercount partly
loaded replicas.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from dcsim.catalog import Catalog
from dcsim.engine.build import deployment_layout
from dcsim.engine.build_scaling import cold_start_lead_s
from dcsim.errors import DcsimError, Problem
from dcsim.hardware.server import server_power_w
from dcsim.optimize.capacity import Config, ReplicaModel, deployment_for, service_lengths
from dcsim.optimize.pools import ROLES, PoolModel
from dcsim.optimize.spec import OptimizeSpec
from dcsim.profiles.store import ProfileStore
from dcsim.profiles.work import weight_bytes_per_gpu
from dcsim.scenario import Scenario
from dcsim.workloads.arrivals import diurnal_rate, step_rate
from dcsim.workloads.requests import expected_turns, service_requests
from dcsim.workloads.spec import (
    DiurnalArrivals,
    GammaArrivals,
    InferenceService,
    PoissonArrivals,
    StepArrivals,
    TraceArrivals,
)


def horizon(s: Scenario, opt: OptimizeSpec) -> int:
    """Number of periods the plan covers."""
    return opt.periods or max(1, math.ceil(s.simulation.duration_s / opt.period_s - 1e-9))


def demand(s: Scenario, services: list[InferenceService], opt: OptimizeSpec,
           base_dir: Path) -> np.ndarray:
    """Mean request rate per service (rows) and period (columns), req/s."""
    n = horizon(s, opt)
    out = np.zeros((len(services), n))
    for i, svc in enumerate(services):
        given = (opt.demand_per_s or {}).get(svc.name)
        if given is not None:
            if len(given) != n:
                raise DcsimError(Problem(f"optimize.demand_per_s.{svc.name}", f"{len(given)} "
                                         "values", f"one rate per period: {n} values"))
            out[i] = given
        else:
            # sessions: each started session sends expected_turns requests
            turns = expected_turns(svc.sessions) if svc.sessions is not None else 1.0
            out[i] = turns * _arrival_rates(svc, n, opt.period_s, s.simulation.seed,
                                            base_dir)
    return out


def _arrival_rates(svc: InferenceService, n: int, period_s: float, seed: int,
                   base_dir: Path) -> np.ndarray:
    a = svc.arrival
    if isinstance(a, PoissonArrivals | GammaArrivals):
        return np.full(n, a.rate_per_s)
    if isinstance(a, DiurnalArrivals):
        t = (np.arange(n)[:, None] + (np.arange(60)[None, :] + 0.5) / 60) * period_s
        return diurnal_rate(a, t).mean(axis=1)
    if isinstance(a, StepArrivals):
        t = (np.arange(n)[:, None] + (np.arange(60)[None, :] + 0.5) / 60) * period_s
        return step_rate(a, t).mean(axis=1)
    assert isinstance(a, TraceArrivals)
    times = service_requests(svc, n * period_s, np.random.SeedSequence(seed), base_dir)[
        "arrival_s"].dropna().to_numpy()  # (a session's later turns: counted by the caller)
    span = float(times.max()) if times.size else 0.0
    if span < (n - 1) * period_s:
        raise DcsimError(Problem(f"optimize.demand_per_s.{svc.name}", "missing",
                                 f"a forecast for every period: the trace covers {span:.0f} s "
                                 f"of the {n} x {period_s:g} s horizon"))
    counts = np.bincount(np.minimum((times // period_s).astype(int), n - 1), minlength=n)
    return counts / period_s


def configurations(s: Scenario, svc: InferenceService, cat: Catalog, opt: OptimizeSpec
                   ) -> list[Config]:
    """Every candidate (GPU, TP, cap, batch) whose weights fit and whose TP fits a server."""
    c = opt.candidates
    gpus = c.gpus or list(dict.fromkeys(cat.server(g.type).gpu for r in s.fleet.racks
                                         for g in r.servers))
    model, d = cat.model(svc.model), svc.deployment
    if d.ep > 1:
        raise DcsimError(Problem(f"workloads[{svc.name}].deployment.ep", d.ep, "1 for dcsim "
                                 "optimize, which plans tp only (simulate ep > 1 with dcsim "
                                 "run)"))
    out = []
    for gid in gpus:
        g = cat.gpu(gid)
        per_server = max((x.gpus_per_server for x in cat.servers.values() if x.gpu == gid),
                         default=0)
        try:
            lay = deployment_layout(d, g)
        except DcsimError:
            continue  # the deployment's weight type has no tensor cores on this GPU
        for tp in c.tp:
            room = g.memory_gb * 1e9 * d.gpu_memory_utilization
            if per_server % tp or room <= weight_bytes_per_gpu(model, tp, lay) * 1.05:
                continue
            for f in c.power_cap_fractions:
                cap = None if f >= 1 else round(max(f * g.power_limit_max_w,
                                                    g.power_limit_min_w), 1)
                out += [Config(gid, tp, cap, b) for b in c.max_num_seqs]
    return out


def capacity_table(s: Scenario, services: list[InferenceService], cat: Catalog,
                   store: ProfileStore, opt: OptimizeSpec, base_dir: Path) -> pd.DataFrame:
    """One row per (service, configuration): planned rate per replica, power line, peaks,
    and the lead of a cold start (engine.build_scaling.cold_start_lead_s)."""
    rows = []
    done: dict[str, list[dict[str, object]]] = {}  # services alike share their rows
    for i, svc in enumerate(services):
        split = svc.name in opt.disaggregate
        key = _kind(svc) + ("|pools" if split else "")
        if key in done:
            rows += [r | {"service": svc.name, "service_index": i} for r in done[key]]
            continue
        lengths = service_lengths(svc, s.simulation.seed, base_dir)
        first = len(rows)
        for cfg in configurations(s, svc, cat, opt):
            for role in ("", *(ROLES if split else ())):
                m = (PoolModel(store, cat, svc, cfg, lengths, role) if role
                     else ReplicaModel(store, cat, svc, cfg, lengths))
                rows.append(_row(s, svc, i, key, cfg, role, m, cat, opt))
        done[key] = rows[first:]
    return pd.DataFrame(rows)


def _row(s: Scenario, svc: InferenceService, i: int, key: str, cfg: Config, role: str,
         m: ReplicaModel, cat: Catalog, opt: OptimizeSpec) -> dict[str, object]:
    """One capacity-table row: a configuration of service i, colocated (role "") or as a
    replica of its prefill or decode pool (with the KV bytes a request moves and the
    replica's NIC bytes/s)."""
    mu = m.capacity(svc)
    idle = m.perf(1e-9)
    row = {"service": svc.name, "service_index": i, "kind": key, "basis": "model",
           "config": f"{role}:{cfg.label}" if role else cfg.label, "role": role,
           "gpu": cfg.gpu, "tp": cfg.tp, "power_cap_w": cfg.power_cap_w,
           "max_num_seqs": cfg.max_num_seqs, "capacity_rps": mu,
           "idle_ttft_p99_s": idle.ttft_p99_s, "idle_tpot_p99_s": idle.tpot_p99_s,
           "idle_e2e_p99_s": idle.e2e_p99_s,
           "kv_bytes_per_request": m.kv_bytes_mean if isinstance(m, PoolModel) else 0.0,
           "port_byte_s": m.port_byte_s if isinstance(m, PoolModel) else 0.0,
           "lead_s": cold_start_lead_s(s.fleet, deployment_for(svc, cfg, 1),
                                       cat.gpu(cfg.gpu), cat.model(svc.model))}
    return row | _power_line(m, cat, cfg, mu * opt.utilization_target)


def _kind(svc: InferenceService) -> str:
    """What a replica's capacity depends on: model, lengths, SLO, memory and token budget."""
    lengths = svc.arrival.model_dump_json() if isinstance(svc.arrival, TraceArrivals) else ""
    return "|".join([svc.model, lengths, str(svc.prompt_tokens), str(svc.output_tokens),
                     str(svc.shared_prefix), str(svc.sessions),
                     svc.slo.model_dump_json(), str(svc.deployment.gpu_memory_utilization),
                     str(svc.deployment.max_batched_tokens), svc.deployment.weights_dtype,
                     svc.deployment.kv_cache_dtype])


def wall_per_gpu_w(cat: Catalog, gpu: str, gpu_w: float) -> float:
    """Wall power per GPU when every GPU of its server draws gpu_w (GPU + host + PSU), W."""
    srv = max((x for x in cat.servers.values() if x.gpu == gpu),
              key=lambda x: x.gpus_per_server)
    wall, _, _ = server_power_w(gpu_w * srv.gpus_per_server, srv, cat.gpu(gpu))
    return float(wall) / srv.gpus_per_server


def _power_line(m: ReplicaModel, cat: Catalog, cfg: Config, rate: float) -> dict[str, float]:
    g = cat.gpu(cfg.gpu)
    limit = cfg.power_cap_w or g.power_limit_max_w
    out = {"planned_rps": rate, "peak_w_per_gpu": wall_per_gpu_w(cat, cfg.gpu, limit),
           "idle_w_per_gpu": wall_per_gpu_w(cat, cfg.gpu, g.idle_power_w)}
    if rate <= 0:
        return out | {"power_a_w": math.nan, "power_b_w_per_rps": math.nan,
                      "j_per_request": math.nan}
    walls = [cfg.tp * wall_per_gpu_w(cat, cfg.gpu, m.perf(x).gpu_power_w / cfg.tp)
             for x in (rate / 2, rate)]
    b = max((walls[1] - walls[0]) / (rate / 2), 0.0)  # power does not fall with load
    idle = cfg.tp * out["idle_w_per_gpu"]
    if walls[1] - b * rate < idle:  # a replica never draws less than its idle GPUs: the
        b = max((walls[1] - idle) / rate, 0.0)  # line from idle to the full-load point
    return out | {"power_a_w": walls[1] - b * rate, "power_b_w_per_rps": b,
                  "j_per_request": walls[1] / rate}
