"""Stage 3 of a run: from what happened (RunRecord) to power, energy, carbon and cost.

Power per GPU, server, rack, row, network and facility and time bucket; the budgets
table; the requests, replicas and time-series tables. Results is frozen and built
once; summaries (dcsim.results) read only its tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dcsim.engine.build import RunModel
from dcsim.engine.jobs import server_training_power
from dcsim.engine.metrics import STATUS
from dcsim.engine.run import RunRecord
from dcsim.engine.site import facility_table, liquid_share
from dcsim.hardware.network import switch_power_w
from dcsim.hardware.placement import Domain, Server, idle_w, worst_case_w
from dcsim.hardware.power import bucket_seconds, domain_power


@dataclass(frozen=True)
class Results:
    """The tidy tables of one simulated run (what `dcsim run` writes, and more)."""

    requests: pd.DataFrame  # one row per request
    timeseries: pd.DataFrame  # per replica and time bucket
    replicas: pd.DataFrame  # one row per replica: config, placement, cap, energy totals
    power: pd.DataFrame  # per domain (gpu, server, rack, row, network, facility) and bucket
    budgets: pd.DataFrame  # per rack / row / facility: budget and enforced GPU limit
    jobs: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per training job
    failures: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per job failure
    checkpoints: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per write
    cluster_pods: pd.DataFrame = field(default_factory=pd.DataFrame)  # replayed trace pods
    cluster: pd.DataFrame = field(default_factory=pd.DataFrame)  # replay metrics over time
    links: pd.DataFrame = field(default_factory=pd.DataFrame)  # uplinks, storage over time
    provenance: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    events: int = 0  # SimPy events the run scheduled
    scaling: pd.DataFrame = field(default_factory=pd.DataFrame)  # scaling events (if any)
    capping: pd.DataFrame = field(default_factory=pd.DataFrame)  # controller's caps (if any)
    capping_domains: list[dict[str, object]] = field(default_factory=list)  # its totals


def account(model: RunModel, rec: RunRecord) -> Results:
    """Every table of the run: requests, time series, replicas, power, budgets, jobs."""
    return Results(_requests(model, rec), _timeseries(model, rec), _replicas(model, rec),
                   _power(model, rec), _budgets(model), rec.jobs, rec.failures,
                   rec.checkpoints, rec.cluster_pods, rec.cluster, rec.links, rec.provenance,
                   rec.events, rec.scaling, *_capping(model, rec))


def _capping(model: RunModel, rec: RunRecord) -> tuple[pd.DataFrame, list[dict[str, object]]]:
    """The power-capping controller's actions and its per-domain totals (none: empty)."""
    if rec.capper is None:
        return pd.DataFrame(), []
    return rec.capper.table(), rec.capper.summary(model.scenario.simulation.duration_s)


def _requests(model: RunModel, rec: RunRecord) -> pd.DataFrame:
    reqs, log = model.requests, rec.log
    first, finish = log.first_token_s, log.finish_s
    arrival = log.arrival_s
    out = reqs["output_tokens"].to_numpy()
    table = pd.DataFrame({
        "service": pd.Categorical.from_codes(reqs["service"].to_numpy(),
                                             categories=[svc.name for svc in model.services]),
        "replica": log.replica, "arrival_s": arrival,
        "first_token_s": first, "finish_s": finish,
        "prompt_tokens": reqs["prompt_tokens"].to_numpy(), "output_tokens": out,
        "ttft_s": first - arrival,
        "tpot_s": np.where(out > 1, (finish - first) / np.maximum(out - 1, 1), np.nan),
        "e2e_s": finish - arrival,
        "preemptions": log.preemptions, "energy_j": log.energy_j,
        "prefix_group": reqs["prefix_group"].to_numpy(), "cached_tokens": log.cached,
        "session": reqs["session"].to_numpy(), "turn": reqs["turn"].to_numpy(),
        "priority_class": _class_names(model, reqs), "priority": reqs["priority"].to_numpy(),
        "status": pd.Categorical.from_codes(log.status, categories=list(STATUS)),
        "in_warmup": arrival < model.scenario.simulation.warmup_s,
    })
    if rec.kv is not None:
        table = _with_kv_moves(model, rec, table)
    # a session's turn whose previous answer came too late (or never) was never sent
    sent = ~np.isnan(arrival)
    if sent.all() and not (reqs["session"].to_numpy() >= 0).any():
        return table  # in arrival order already
    return table[sent].sort_values("arrival_s", kind="stable", ignore_index=True)


def _with_kv_moves(model: RunModel, rec: RunRecord, table: pd.DataFrame) -> pd.DataFrame:
    """Disaggregated services' columns: the prefill and decode replica of each request
    (a colocated request's one replica in both; -1: not there), its KV bytes, its wait
    for decode room and its transfer time (NaN: not moved)."""
    kv, replica = rec.kv, rec.log.replica
    assert kv is not None
    pools = np.array([svc.disaggregated for svc in model.services])
    split = pools[model.requests["service"].to_numpy()]
    admitted = kv.kv_bytes > 0  # a decode replica took it (its log replica since)
    return table.assign(
        prefill_replica=np.where(split & (kv.prefill_replica >= 0), kv.prefill_replica,
                                 replica),
        decode_replica=np.where(~split | admitted, replica, -1),
        kv_bytes=kv.kv_bytes, kv_wait_s=kv.kv_wait_s, kv_transfer_s=kv.kv_transfer_s)


def _class_names(model: RunModel, reqs: pd.DataFrame) -> pd.Categorical:
    """Each request's priority class by name ("" where its service has none)."""
    names = [[c.name for c in svc.classes or ()] for svc in model.services]
    labels = sorted({x for n in names for x in n} | {""})
    # per service, the label code of each class index, then of -1 (none) at the end
    lut = [np.array([labels.index(x) for x in n] + [labels.index("")]) for n in names]
    codes = np.zeros(len(reqs), dtype=np.int64)
    svc, cls = reqs["service"].to_numpy(), reqs["priority_class"].to_numpy()
    for i, table in enumerate(lut):
        mine = svc == i
        codes[mine] = table[cls[mine]]  # -1 reads the last entry: none
    return pd.Categorical.from_codes(codes, categories=labels)


def _replicas(model: RunModel, rec: RunRecord) -> pd.DataFrame:
    t = rec.replica_totals
    return model.replica_rows.assign(energy_j=t["energy_j"].tolist(),
                                     idle_energy_j=t["idle_energy_j"].tolist(),
                                     in_system_x_s=t["in_system_x_s"].tolist(),
                                     kv_transfer_s=t["kv_transfer_s"].tolist(),
                                     busy_s=t["busy_s"].tolist(),
                                     in_use_s=t["in_use_s"].tolist(),
                                     cold_start_energy_j=t["cold_start_energy_j"].tolist())


def _timeseries(model: RunModel, rec: RunRecord) -> pd.DataFrame:
    series = rec.series
    w = series.bucket_s
    energy = series.array("energy_j")
    n_rep, n = energy.shape
    t0 = np.tile(np.arange(n) * w, n_rep)
    kv = series.array("kv_x_s").ravel() / w
    return pd.DataFrame({
        "replica": np.repeat([r.index for r in model.replicas], n),
        "service": np.repeat([model.services[r.service].name for r in model.replicas], n),
        "t_start_s": t0, "t_end_s": t0 + w,
        "energy_j": energy.ravel(), "power_w": energy.ravel() / w,
        "busy_fraction": series.array("busy_s").ravel() / w,
        "batch_size": series.array("batch_x_s").ravel() / w,
        "kv_tokens": kv,
        "kv_use": kv / np.repeat([r.kv_capacity for r in model.replicas], n),
        "queue_length": series.array("queue_x_s").ravel() / w,
        "cache_tokens": series.array("cache_x_s").ravel() / w,
        "prefix_hit_rate": _ratio(series.array("cached_tokens").ravel(),
                                  series.array("prompt_tokens").ravel()),
    })


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0 (no admission counted: none, or no prefix cache)."""
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _power(model: RunModel, rec: RunRecord) -> pd.DataFrame:
    """Per domain and bucket: GPUs, servers, racks, rows, network and facility power."""
    s, pl = model.scenario, model.placement
    sim = s.simulation
    n = rec.series.n
    dt = bucket_seconds(n, sim.time_bucket_s, sim.duration_s)
    off = s.fleet.unused_servers == "switched_off"
    train_w, busy, on = server_training_power(rec.pool, rec.job_series, pl.servers, dt, off)
    if rec.kv_port_use is not None:  # switch ports carrying KV transfers are active too
        busy = np.maximum(busy, rec.kv_port_use)
    if rec.server_on is not None:  # serving servers a scaling switched on and off
        on = on * rec.server_on
    power, it_w = domain_power(pl.servers, pl.domains, rec.series.array("energy_j"), dt,
                               pl.server_caps, train_w if model.jobs or off else None, on)
    net = s.fleet.network
    util = rec.uplink_load_byte_s / np.maximum(model.uplink_byte_s[:, None], 1e-9)
    net_w = switch_power_w([x.spec.nics for x in pl.servers], model.leaf, busy, util,
                           net.oversubscription, net.switch_port_idle_w,
                           net.switch_port_power_w)
    fac = power["domain"] == "facility"
    power.loc[fac, "power_w"] = power.loc[fac, "power_w"].to_numpy() + net_w
    power = pd.concat([power, pd.DataFrame({
        "domain": "network", "name": "leaf-spine", "t_start_s": np.cumsum(dt) - dt,
        "t_end_s": np.cumsum(dt), "power_w": net_w, "cap_w": np.nan, "throttled": False})],
        ignore_index=True)
    capacity = (s.facility.power_budget_kw * 1e3 if s.facility.power_budget_kw
                else sum(x.spec.max_power_w for x in pl.servers))
    return facility_table(power, it_w + net_w, dt, s.facility, model.context.base_dir,
                          capacity, liquid_share([(x.spec, 1) for x in pl.servers]))


def _budgets(model: RunModel) -> pd.DataFrame:
    pl = model.placement
    table = budget_table(pl.domains, pl.servers, pl.server_caps, pl.off)
    if pl.capped_caps is not None:  # the controller: its caps, and the worst case under them
        low = budget_table(pl.domains, pl.servers, pl.capped_caps, pl.off)
        table["capped_gpu_limit_w"] = low["gpu_limit_w"]
        table["capped_worst_case_w"] = low["worst_case_w"]
    return table


def budget_table(doms: list[Domain], servers: list[Server], caps: np.ndarray,
                 off: np.ndarray) -> pd.DataFrame:
    """Per rack, row and facility: budget, worst-case and idle draw, GPUs, enforced limit."""
    return pd.DataFrame([{
        "domain": d.kind, "name": d.name, "servers": len(d.servers),
        "budget_w": np.nan if d.budget_w is None else d.budget_w,
        "worst_case_w": worst_case_w(servers, tuple(i for i in d.servers if not off[i]), caps),
        "idle_w": idle_w(servers, d.servers),
        "gpus": sum(servers[i].spec.gpus_per_server for i in d.servers),
        "gpu_limit_w": float(caps[list(d.servers)].min()) if d.servers else np.nan,
        "throttled": any(caps[i] < servers[i].gpu.power_limit_max_w for i in d.servers),
    } for d in doms])
