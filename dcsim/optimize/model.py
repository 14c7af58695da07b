"""The plan as a MILP, in stages: check inputs -> variables -> constraint families
(dcsim.optimize.constraints) -> expressions and objective; then solve (HiGHS), check
termination and extract (dcsim.optimize.solver).

Decisions per period t: replicas N[s,c,t] of each (service, configuration), the load
y[s,c,t] they carry (req/s), and servers S[g,k,r,t] of GPU type g in rack r run at
power-limit level k (a server's GPUs share one limit, as the simulator sets them).

  demand[s,t]      sum_c y = demand (- unmet, only when explaining infeasibility)
  capacity[s,c,t]  y <= planned rate per replica x N
  min_replicas     sum_c N >= min_replicas
  gpus_at[g,k,t]   sum of tp x N over configurations on (g, k) <= GPUs of S[g,k,.,t]
  rack_servers     sum_k S[g,k,r,t] <= servers of g in rack r
  rack/row/facility_power  worst case (GPUs at their limit, hosts at full load, through
                   the PSUs; servers without replicas parked at the lowest limit, as
                   the simulator enforces budgets) <= budget
  reconfig         replicas started per service from t-1 to t <= max_replica_change
  balance[s,t]     a split service (optimize.disaggregate): its prefill rows' load (part
                   of its demand) = its decode rows' load
  kv_ports[c,t]    a pool's replicas move their requests' KV within their NICs' bytes/s
  one_pool[s,p,t]  one configuration a pool and period (binaries pick[c,t], picked[c,t])

Objective: sum over t of period length x facility power (IT through the facility
model's affine overhead) [x price or carbon intensity]; IT = every GPU idle plus,
per replica, its power line above idle.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyomo.environ as pyo

from dcsim.errors import DcsimError, Problem
from dcsim.hardware.facility import Overhead, facility_power_w
from dcsim.optimize import jobs
from dcsim.optimize.constraints import FAMILIES, Family

# configurations of a service (pool) that differ only in GPU limit: a limit changes in place
FAMILY = ["service_index", "role", "gpu", "tp", "max_num_seqs"]


@dataclass(frozen=True)
class Fleet:
    """Racks as (rack, row, gpu, servers, GPUs per server, wall W/GPU idle and at limits)."""

    racks: pd.DataFrame  # rack, row, gpu, servers, gpus_per_server, idle/max/min_w_per_gpu
    rack_budget_w: dict[str, float]
    row_budget_w: dict[str, float]
    facility_budget_w: float | None
    network_w: float = 0.0  # the leaf-spine fabric's ports at idle (inference moves little)


@dataclass(frozen=True)
class Inputs:
    """Everything the MILP reads, frozen: a change (calibrated rates, the elastic model,
    one period) is a new Inputs (dataclasses.replace)."""

    table: pd.DataFrame  # capacity table rows with planned_rps > 0
    demand: np.ndarray  # services x periods, req/s
    services: list[str]
    fleet: Fleet
    period_s: float
    overhead: Overhead  # per period
    weight: np.ndarray  # per period: 1 (energy), USD/kWh (cost) or kg/kWh (carbon)
    min_replicas: int
    max_change: int | None
    elastic: bool = False  # explain infeasibility: unmet demand, extra servers and budget
    jobs: pd.DataFrame | None = None  # training: one row per (job, power limit) option
    spares: int = 0  # servers per GPU type the job scheduler keeps free as hot spares
    servers_off: bool = False  # unused servers are switched off (fleet.unused_servers)
    cold_starts: bool = False  # replicas added for a period pre-warm in the one before
    # per period, the grid's carbon intensity (kg/kWh) and price (USD/kWh): what the
    # periods table reports whatever the objective (None: not known to this Inputs)
    carbon_kg_per_kwh: np.ndarray | None = None
    usd_per_kwh: np.ndarray | None = None


@dataclass
class _Data:
    """The table and fleet as plain lists and dicts: Pyomo rules read them fast."""

    tp: list[int]
    rate: list[float]
    above: list[float]  # W above idle GPUs per replica
    slope: list[float]  # W per req/s
    by_svc: dict[int, list[int]]
    levels: dict[str, list[float]]
    users: dict[tuple[str, float], list[int]]
    per: dict[str, int]  # GPUs per server
    at_level: dict[tuple[str, float], list[str]]  # racks with that GPU type
    rack_rows: dict[str, list[tuple[str, int, int, float]]]  # gpu, GPUs/server, servers, min W
    peak: dict[tuple[str, float], float]
    have: dict[tuple[str, str], int]
    twins: list[tuple[str, str]]  # consecutive racks that differ only in name
    warm_w: list[float]  # W a replica's cold start adds over the period before it is used
    families: list[list[int]]  # configurations that differ only in GPU limit
    gpu: list[str]  # per configuration
    # disaggregated serving: per service, its prefill and its decode pools' rows; per
    # configuration, the KV bytes a request moves and a replica's NIC bytes/s
    pools: dict[int, tuple[list[int], list[int]]]
    kv_bytes: list[float]
    port: list[float]


def _data(x: Inputs) -> _Data:
    tab = x.table.reset_index(drop=True)
    caps = tab["power_cap_w"].fillna(-1.0).tolist()
    gpu = tab["gpu"].tolist()
    levels = _levels(tab)
    users: dict[tuple[str, float], list[int]] = {(g, k): [] for g, ks in levels.items()
                                                 for k in ks}
    for c, key in enumerate(zip(gpu, caps, strict=True)):
        users[key].append(c)
    rows = x.fleet.racks.groupby(["rack", "gpu"], sort=False).agg(
        servers=("servers", "sum"), gps=("gpus_per_server", "first"),
        min_w=("min_w_per_gpu", "first")).reset_index()
    rack_rows: dict[str, list[tuple[str, int, int, float]]] = {}
    for r in rows.itertuples(index=False):
        rack_rows.setdefault(r.rack, []).append((r.gpu, int(r.gps), int(r.servers),
                                                 float(r.min_w)))
    peak_w = tab["peak_w_per_gpu"].tolist()
    role = tab["role"] if "role" in tab else pd.Series("", index=tab.index)
    pools: dict[int, tuple[list[int], list[int]]] = {}
    for s_, g in tab[role != ""].groupby("service_index"):
        pools[int(s_)] = (list(g.index[role[g.index] == "prefill"]),
                          list(g.index[role[g.index] == "decode"]))
    out = _Data(
        tp=tab["tp"].astype(int).tolist(), rate=tab["planned_rps"].astype(float).tolist(),
        above=[float(replica_it_w(r, 1, 0.0)) for r in tab.to_dict("records")],
        slope=tab["power_b_w_per_rps"].astype(float).tolist(),
        # a service's demand is met by its colocated and prefill rows (decode rows carry
        # what prefill rows pass on: constraints.pools)
        by_svc={int(k): list(v) for k, v in tab[role != "decode"].groupby(
            "service_index").groups.items()},
        levels=levels, users=users,
        per={g: gps for rs in rack_rows.values() for g, gps, _, _ in rs},
        at_level={(g, k): [r for r, rs in rack_rows.items() if any(g == q[0] for q in rs)]
                  for g, ks in levels.items() for k in ks},
        rack_rows=rack_rows,
        peak={key: float(peak_w[cs[0]]) for key, cs in users.items()},
        have={(r, g): n for r, rs in rack_rows.items() for g, _, n, _ in rs}, twins=[],
        warm_w=[cold_start_w(r, x.period_s, x.servers_off) for r in tab.to_dict("records")],
        families=[[int(c) for c in v] for v in tab.groupby(
            [k for k in FAMILY if k in tab], sort=False).indices.values()],
        gpu=tab["gpu"].tolist(), pools=pools,
        kv_bytes=tab.get("kv_bytes_per_request", pd.Series(0.0, index=tab.index)).tolist(),
        port=tab.get("port_byte_s", pd.Series(0.0, index=tab.index)).tolist())
    out.twins = _twins(x, out)
    return out


def check_inputs(x: Inputs) -> list[Problem]:
    """What makes a model pointless to build: demand that is not a finite number >= 0, a
    service with demand and no configuration, periods of no length, weights that are
    not finite."""
    out = []
    dem = np.asarray(x.demand, dtype=float)
    if dem.shape != (len(x.services), dem.shape[1] if dem.ndim == 2 else 0):
        return [Problem("optimize", f"demand of shape {dem.shape}",
                        f"one row per service ({len(x.services)}) and one column per period")]
    if not np.isfinite(dem).all() or (dem < 0).any():
        out.append(Problem("optimize demand", "not finite or negative", "req/s >= 0"))
    served = set(x.table["service_index"].astype(int)) if len(x.table) else set()
    for s_, name in enumerate(x.services):
        if dem[s_].max(initial=0.0) > 0 and s_ not in served:
            out.append(Problem(f"service {name}", "no configuration",
                               "at least one configuration that meets its SLO"))
    if not x.period_s > 0:
        out.append(Problem("optimize.period_s", x.period_s, "a positive number of seconds"))
    if not np.isfinite(np.asarray(x.weight, dtype=float)).all():
        out.append(Problem("optimize objective weights", "not finite", "finite numbers"))
    return out


def build(x: Inputs, extra: Family | None = None) -> pyo.ConcreteModel:
    """The MILP of inputs x: variables, every constraint family, `extra` (a callable
    f(m, x, d) adding constraints of the caller's), then IT power and the objective."""
    problems = check_inputs(x)
    if problems:
        raise DcsimError(problems)
    d = _data(x)
    m = variables(x, d)
    expressions(m, x, d)
    for family in FAMILIES:
        family(m, x, d)
    if extra is not None:
        extra(m, x, d)
    objective(m, x, d)
    return m


def variables(x: Inputs, d: _Data) -> pyo.ConcreteModel:
    """Sets and variables: replicas N and load y per configuration and period, servers S
    per (GPU type, limit level, rack) and period, the jobs' z and J, and the elastic
    model's slack."""
    m = pyo.ConcreteModel()
    m.C = pyo.Set(initialize=range(len(d.tp)))
    m.T = pyo.Set(initialize=range(x.demand.shape[1]))
    m.N = pyo.Var(m.C, m.T, domain=pyo.NonNegativeIntegers)
    m.y = pyo.Var(m.C, m.T, domain=pyo.NonNegativeReals)
    m.G = pyo.Set(initialize=[(g, k, r) for (g, k), rs in d.at_level.items() for r in rs],
                  dimen=3)
    m.S = pyo.Var(m.G, m.T, domain=pyo.NonNegativeIntegers)
    racks_of: dict[str, list[str]] = {}
    for r, rs in d.rack_rows.items():
        for g, _, _, _ in rs:
            racks_of.setdefault(g, []).append(r)
    jobs.variables(m, x, racks_of)
    if x.elastic:  # unmet demand, extra servers of each type, extra budget
        m.unmet = pyo.Var(range(len(x.services)), m.T, domain=pyo.NonNegativeReals)
        m.extra = pyo.Var(list(d.levels), m.T, domain=pyo.NonNegativeIntegers)
        m.more_w = pyo.Var(list(d.rack_rows) + list(x.fleet.row_budget_w) + ["facility"], m.T,
                           domain=pyo.NonNegativeReals)
    return m


def expressions(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    """Shared terms: each rack's worst-case wall power per period."""
    m.rack_w = pyo.Expression(list(d.rack_rows), m.T,
                              rule=lambda m, r, t: _rack_worst_w(m, x, d, r, t))


def objective(m: pyo.ConcreteModel, x: Inputs, d: _Data) -> None:
    """IT power per period, its facility power x period x weight, summed; jobs' energy
    after the horizon; the elastic model's penalty."""
    idle = (0.0 if x.servers_off else fleet_idle_w(x.fleet.racks)) + x.fleet.network_w
    m.it_w = pyo.Expression(m.T, rule=lambda m, t: idle + _on_idle_w(m, x, d, t) + pyo.quicksum(
        d.above[c] * m.N[c, t] + d.slope[c] * m.y[c, t] for c in m.C) + jobs.it_w(m, x, t) + (
        _extra_idle_w(m, x, d, t) if x.elastic else 0.0) + _warming_w(m, d, t))
    m.cost = pyo.Expression(m.T, rule=lambda m, t: facility_power_w(m.it_w[t], x.overhead, t)
                            * x.period_s / 3.6e6 * float(x.weight[t]))
    penalty = _elastic_penalty(m, x) if x.elastic else 0.0
    m.objective = pyo.Objective(expr=pyo.quicksum(m.cost[t] for t in m.T)
                                + jobs.after_cost(m, x) + penalty)


def _warming_w(m: pyo.ConcreteModel, d: _Data, t: int) -> object:
    """Power the cold starts for period t + 1 draw in period t, W (0 without them)."""
    if (0, t + 1) not in m.warm:  # the last period, or no cold starts
        return 0.0
    return pyo.quicksum(d.warm_w[fs[0]] * m.warm[f, t + 1] for f, fs in enumerate(d.families)
                        if d.warm_w[fs[0]] > 0)


def cold_start_w(row: pd.Series | dict, period_s: float, servers_off: bool) -> float:
    """Mean power over a period of one replica loading in its last lead, W: its GPUs' share
    of their server's idle wall power for min(lead, period) (lead_s of the capacity
    table). Nothing where unused servers stay on: their GPUs draw idle power anyway.

    The one definition the MILP's objective and the predicted periods share."""
    if not servers_off or "lead_s" not in row:
        return 0.0
    lead = min(float(row["lead_s"]), period_s)
    return int(row["tp"]) * float(row["idle_w_per_gpu"]) * lead / period_s


def cold_starts_w(dep: pd.DataFrame, x: Inputs) -> np.ndarray:
    """Per period, the power of the cold starts for the next period's added replicas, W
    (a plan's or a baseline's deployment rows), per family of configurations (a change
    of GPU limit alone starts nothing)."""
    n = x.demand.shape[1]
    out = np.zeros(n)
    if not x.cold_starts or not len(dep):
        return out
    for _, g in dep.groupby([k for k in FAMILY if k in dep], sort=False):
        per = g.groupby("period")["replicas"].sum().reindex(range(n), fill_value=0).to_numpy()
        added = np.maximum(np.diff(per), 0)  # for periods 1..n-1, loading in 0..n-2
        out[:-1] += added * cold_start_w(g.iloc[0], x.period_s, x.servers_off)
    return out


def period_it_w(dep: pd.DataFrame, x: Inputs, t: int) -> float:
    """Predicted IT power in period t of a plan or baseline (deployment rows), W: every
    GPU idle (or, with unused servers switched off, those of the servers in use) plus
    each replica's power above idle."""
    mine = dep[dep["period"] == t] if len(dep) else dep
    idle = servers_on_idle_w(mine, x) if x.servers_off else fleet_idle_w(x.fleet.racks)
    return idle + x.fleet.network_w + sum(
        float(replica_it_w(r, r["replicas"], r["load_rps"])) for _, r in mine.iterrows())


def servers_on_idle_w(dep: pd.DataFrame, x: Inputs) -> float:
    """Idle wall power of the servers one period's replicas occupy, W: the servers the plan
    names, or (baselines) as few as hold each GPU type's replicas."""
    if not len(dep):
        return 0.0
    r = x.fleet.racks.groupby("gpu").agg(gps=("gpus_per_server", "first"),
                                          idle=("idle_w_per_gpu", "first"))
    if "servers" in dep:
        names = dep.explode("servers").drop_duplicates("servers")
        count = names.groupby("gpu").size()
    else:
        gpus = (dep["tp"] * dep["replicas"]).groupby(dep["gpu"]).sum()
        count = np.ceil(gpus / r["gps"].reindex(gpus.index))
    return float((count * r["gps"].reindex(count.index) * r["idle"].reindex(count.index)).sum())


def _levels(tab: pd.DataFrame) -> dict[str, list[float]]:
    """Power-limit levels per GPU type (the default limit as its own level, -1)."""
    caps = tab["power_cap_w"].fillna(-1.0)
    return {g: sorted(set(caps[tab["gpu"] == g])) for g in tab["gpu"].unique()}


def _twins(x: Inputs, d: _Data) -> list[tuple[str, str]]:
    """Consecutive pairs of racks that differ only in name."""
    row_of = dict(zip(x.fleet.racks["rack"], x.fleet.racks["row"], strict=False))
    groups: dict[tuple[object, ...], list[str]] = {}
    for r, rows in d.rack_rows.items():
        row = row_of.get(r)
        key = (tuple(rows), x.fleet.rack_budget_w.get(r),
               row if row in x.fleet.row_budget_w else None)
        groups.setdefault(key, []).append(r)
    return [(a, b) for g in groups.values() for a, b in itertools.pairwise(g)]


def _rack_worst_w(m: pyo.ConcreteModel, x: Inputs, d: _Data, rack: str, t: int) -> object:
    parked = {g: 0.0 if x.servers_off else w for g, _, _, w in d.rack_rows[rack]}
    total = jobs.rack_w(m, rack, t, parked)
    for g, gps, servers, _ in d.rack_rows[rack]:
        min_w = parked[g]  # a server without work draws this per GPU (nothing when off)
        ks = d.levels.get(g, [])
        total += gps * (pyo.quicksum((d.peak[(g, k)] - min_w) * m.S[g, k, rack, t] for k in ks)
                        + min_w * servers)
    return total


def _on_idle_w(m: pyo.ConcreteModel, x: Inputs, d: _Data, t: int) -> object:
    """With unused servers switched off: idle power of the servers replicas use, W."""
    if not x.servers_off:
        return 0.0
    r = x.fleet.racks
    per = dict(zip(r["gpu"], r["gpus_per_server"] * r["idle_w_per_gpu"], strict=False))
    return pyo.quicksum(per[g] * m.S[g, k, rack, t] for g, k, rack in m.G)


def _extra_idle_w(m: pyo.ConcreteModel, x: Inputs, d: _Data, t: int) -> object:
    r = x.fleet.racks
    per = dict(zip(r["gpu"], r["gpus_per_server"] * r["idle_w_per_gpu"], strict=False))
    return pyo.quicksum(per.get(g, 0.0) * m.extra[g, t] for g in d.levels)


def fleet_idle_w(racks: pd.DataFrame) -> float:
    """Wall power of the fleet with every GPU idle, W."""
    return float((racks["servers"] * racks["gpus_per_server"] * racks["idle_w_per_gpu"]).sum())


def replica_it_w(row: pd.Series | dict, replicas: object, load_rps: object) -> object:
    """IT power replicas add above idle GPUs, W: (a - tp x idle per GPU) x N + b x load.

    The one definition the MILP (on Pyomo variables), the plan's predicted energy and
    the baselines (on numbers) share.
    """
    above_idle = float(row["power_a_w"]) - int(row["tp"]) * float(row["idle_w_per_gpu"])
    return above_idle * replicas + float(row["power_b_w_per_rps"]) * load_rps


def _elastic_penalty(m: pyo.ConcreteModel, x: Inputs) -> object:
    """Prefer extra budget (per kW) to extra servers to unmet demand (per req/s)."""
    scale = max(float(x.demand.max()), 1e-9)
    return (1e6 * sum(v for v in m.unmet.values()) / scale
            + 1e2 * sum(v for v in m.extra.values())
            + 1e-1 * sum(v for v in m.more_w.values()) / 1e3)
