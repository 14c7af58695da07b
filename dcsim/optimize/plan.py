"""`dcsim optimize`: inputs from the scenario, the MILP, and the plan as tables and scenarios."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyomo.environ as pyo

from dcsim.catalog import Catalog
from dcsim.engine.context import Context
from dcsim.engine.fleet import fleet_servers
from dcsim.engine.site import grid_values as grid
from dcsim.engine.site import liquid_share, outdoor_c, site_overhead
from dcsim.errors import DcsimError, Problem
from dcsim.hardware.facility import facility_power_w
from dcsim.hardware.network import switch_power_w
from dcsim.optimize import jobs as jobs_
from dcsim.optimize.baselines import config_row
from dcsim.optimize.calibrate import calibrate
from dcsim.optimize.model import Fleet, Inputs, build, cold_starts_w, period_it_w
from dcsim.optimize.solver import (
    Solved,
    Values,
    budget_values,
    period_inputs,
    solve,
    solve_all,
)
from dcsim.optimize.spec import OptimizeSpec
from dcsim.optimize.table import capacity_table, demand, horizon, wall_per_gpu_w
from dcsim.scenario import Scenario
from dcsim.workloads.spec import InferenceService, TrainingJob

ROUNDS = 4  # solve, check the configurations used by simulation, solve again


@dataclass(frozen=True)
class Plan:
    """The optimizer's answer as frozen tables: what runs where per period, predicted
    energy, the inputs it came from, the jobs' plan and what more budget would be worth."""

    spec: OptimizeSpec
    services: list[InferenceService]
    demand: np.ndarray
    table: pd.DataFrame  # every (service, configuration) considered
    solved: Solved
    deployments: pd.DataFrame  # service, period, config..., replicas, load_rps, servers
    periods: pd.DataFrame  # period: predicted IT and facility energy, cost weight
    inputs: Inputs
    jobs: pd.DataFrame  # training: per job its power limit, racks, expected run and energy
    budget_values: pd.DataFrame  # per budget and period: objective saved per kW more


def fleet_frame(s: Scenario, cat: Catalog) -> Fleet:
    """The scenario's racks as the optimizer reads them: servers per (rack, GPU type), wall
    power per GPU idle and at the limits, budgets."""
    if not s.fleet.racks:
        raise DcsimError(Problem("fleet.racks", [], "the racks and servers the plan may use"))
    servers = fleet_servers(s, cat)
    rows = pd.DataFrame([{"rack": x.rack, "row": x.row, "gpu": x.gpu.id,
                          "gpus_per_server": x.spec.gpus_per_server} for x in servers])
    racks = rows.groupby(["rack", "row", "gpu", "gpus_per_server"], sort=False).size(
    ).rename("servers").reset_index()
    racks["idle_w_per_gpu"] = [wall_per_gpu_w(cat, g, cat.gpu(g).idle_power_w)
                               for g in racks["gpu"]]
    racks["max_w_per_gpu"] = [wall_per_gpu_w(cat, g, cat.gpu(g).power_limit_max_w)
                              for g in racks["gpu"]]
    racks["min_w_per_gpu"] = [wall_per_gpu_w(cat, g, cat.gpu(g).power_limit_min_w)
                              for g in racks["gpu"]]
    budgets = {n: r.power_budget_kw * 1e3 for r in s.fleet.racks for n in r.names()}
    fb = s.facility.power_budget_kw
    net = s.fleet.network
    leaf = [i // net.servers_per_leaf for i in range(len(servers))]
    idle_net = float(switch_power_w([x.spec.nics for x in servers], leaf,
                                    np.zeros((len(servers), 1)), np.zeros((max(leaf) + 1, 1)),
                                    net.oversubscription, net.switch_port_idle_w,
                                    net.switch_port_power_w)[0])
    return Fleet(racks, budgets, {r.name: r.power_budget_kw * 1e3 for r in s.fleet.rows},
                 fb * 1e3 if fb else None, idle_net)


def _check_reachable(table: pd.DataFrame, services: list[InferenceService]) -> None:
    if table.empty:
        raise DcsimError(Problem("optimize.candidates", "no configuration", "GPU types, TP "
                                 "degrees and models that fit the servers of fleet.racks "
                                 "(each TP degree inside one server, the weights in its GPUs)"))
    problems = []
    for i, svc in enumerate(services):
        mine = table[table["service_index"] == i]
        if (mine["capacity_rps"] > 0).any():
            continue
        best = {k: float(mine[f"idle_{k}_p99_s"].min()) if len(mine) else math.inf
                for k in ("ttft", "tpot", "e2e")}
        problems.append(Problem(f"workloads[{i}].slo", svc.slo.model_dump(exclude_none=True),
                                "a latency some candidate configuration meets even when idle; "
                                "best achievable p99: " + ", ".join(
                                    f"{k} {v:.3g} s" for k, v in best.items())))
    if problems:
        raise DcsimError(problems)


def _weights(s: Scenario, opt: OptimizeSpec, n: int, base_dir: Path, capacity_w: float,
             liquid: float) -> tuple[object, np.ndarray, np.ndarray, np.ndarray]:
    mid = (np.arange(n) + 0.5) * opt.period_s
    f = s.facility
    o = site_overhead(f, None if f.cooling is None else outdoor_c(f, base_dir, mid),
                      capacity_w, liquid)
    if f.cooling is None:
        o = type(o)(*(np.repeat(v, n) for v in (o.cool_a, o.cool_b, o.loss_a, o.loss_b)))
    carbon, price = grid(f, base_dir, mid)
    weight = {"energy": np.ones(n), "cost": price, "carbon": carbon / 1e3}[opt.objective]
    return o, weight, carbon / 1e3, price


def inputs_for(s: Scenario, ctx: Context, objective: str | None = None
               ) -> tuple[Inputs, pd.DataFrame, OptimizeSpec, list[InferenceService], Catalog]:
    """The optimizer's inputs: capacity table, demand, fleet, overheads and weights."""
    opt = s.optimize or OptimizeSpec()
    if objective is not None:
        if objective not in ("energy", "cost", "carbon"):
            raise DcsimError(Problem("--objective", objective, "energy, cost or carbon"))
        opt = opt.model_copy(update={"objective": objective})
    services = [w for w in s.workloads if isinstance(w, InferenceService)]
    if not services:
        raise DcsimError(Problem("workloads", [], "at least one inference service to plan"))
    unknown = sorted(set(opt.disaggregate) - {v.name for v in services})
    if unknown:
        raise DcsimError(Problem("optimize.disaggregate", unknown, "names of inference "
                                 f"services: {', '.join(v.name for v in services)}"))
    cat, store, base_dir = ctx.catalog, ctx.store, ctx.base_dir
    dem = demand(s, services, opt, base_dir)
    table = capacity_table(s, services, cat, store, opt, base_dir)
    _check_reachable(table, services)
    fleet = fleet_frame(s, cat)
    cap_w = fleet.facility_budget_w or float(
        (fleet.racks["servers"] * fleet.racks["gpus_per_server"] * fleet.racks["max_w_per_gpu"]
         ).sum())
    o, weight, carbon, price = _weights(s, opt, horizon(s, opt), base_dir, cap_w,
                         liquid_share([(x.spec, 1) for x in fleet_servers(s, cat)]))
    usable = undominated(table[table["planned_rps"] > 0]).reset_index(drop=True)
    jobs = [w for w in s.workloads if isinstance(w, TrainingJob)]
    n = horizon(s, opt)
    starts = [t * opt.period_s for t in range(n)] if opt.shift_training else None
    options = (jobs_.job_options(s, jobs, cat, store, opt.candidates.power_cap_fractions,
                                 starts) if jobs else None)
    x = Inputs(usable, dem, [v.name for v in services], fleet, opt.period_s, o, weight,
               opt.min_replicas, opt.max_replica_change, jobs=options,
               spares=s.fleet.training_scheduler.spare_servers,
               servers_off=s.fleet.unused_servers == "switched_off",
               cold_starts=opt.cold_starts, carbon_kg_per_kwh=carbon, usd_per_kwh=price)
    return x, table, opt, services, cat


def undominated(table: pd.DataFrame) -> pd.DataFrame:
    """Drop configurations another one beats on every count: same service, GPU type and
    TP, a power limit no higher (no more budget), at least the rate, and no more power
    at any load. They can never be needed, and they slow the solver down."""
    keep = []
    for _, g in table.groupby(["service_index", "role", "gpu", "tp"], sort=False):
        cap = g["power_cap_w"].fillna(np.inf).to_numpy()
        rate, a = g["planned_rps"].to_numpy(), g["power_a_w"].to_numpy()
        b = g["power_b_w_per_rps"].to_numpy()
        for i in range(len(g)):
            beaten = (cap <= cap[i]) & (rate >= rate[i]) & (a <= a[i]) & (b <= b[i]) & (
                (cap < cap[i]) | (rate > rate[i]) | (a < a[i]) | (b < b[i]))
            if not beaten.any():
                keep.append(g.index[i])
    return table.loc[sorted(keep)]


Progress = Callable[[str, str], None]  # (stage, message); stage "period" is transient


def optimize(s: Scenario, base_dir: Path, objective: str | None = None,
             context: Context | None = None, progress: Progress | None = None) -> Plan:
    """Build, solve, check and extract the plan; explain an infeasible one. `context`
    (catalog, profile store, base folder) is loaded from `s` and base_dir when not given;
    `progress` hears each stage: the capacity table per class of services, each MILP
    round (and each period as it is solved), each simulation check."""
    say = progress or (lambda _stage, _msg: None)
    ctx = context or Context.load(s, base_dir)
    x, table, opt, services, cat = inputs_for(s, ctx, objective)
    for line in capacity_lines(table, x.table):
        say("capacity", line)
    for r in range(ROUNDS):
        solved, values, bad = solve_all(x, opt.time_limit_s, opt.mip_gap,
                                        lambda t, sv, r=r: say("period", f"MILP round {r + 1}, "
                                                               f"period {t}: {sv.status}, "
                                                               f"gap {sv.gap:.2%}"))
        say("milp", f"MILP round {r + 1}: {solved.status}, gap {solved.gap:.2%} over "
                    f"{x.demand.shape[1]} periods, {solved.solve_s:.1f} s")
        if solved.status not in ("optimal", "time limit"):
            if bad is None:
                raise DcsimError(explain(x, opt, 0))
            raise DcsimError(explain(period_inputs(x, bad), opt, bad))
        used = {c for (c, _), n in values.N.items() if n > 0}
        if not opt.check_by_simulation:
            break
        checked, changed = calibrate(s, services, x.table, used, ctx, opt.verify_duration_s,
                                     say)
        x = replace(x, table=checked)
        if not changed:
            break
    checked = x.table.set_index(["service_index", "config"])[["planned_rps", "basis"]]
    table = table.set_index(["service_index", "config"])
    table.update(checked)
    table = table.reset_index()
    deployments = extract(values, x, s, cat)
    chosen = jobs_.chosen(x, values.z, values.J)
    return Plan(opt, services, x.demand, table, solved, deployments, period_energy(
        deployments, x, chosen), x, chosen, budget_values(x, values))


def capacity_lines(table: pd.DataFrame, usable: pd.DataFrame) -> list[str]:
    """Per class of alike services: its configurations, those that carry load within the
    SLOs, and the best rate one replica carries."""
    out = []
    for _, g in table.groupby("kind", sort=False):
        names = ", ".join(dict.fromkeys(g["service"]))
        ok = usable[usable["kind"] == g["kind"].iloc[0]]
        best = f"{ok['planned_rps'].max():.3g} req/s" if len(ok) else "none"
        out.append(f"capacity table: {names}: {g['config'].nunique()} configurations, "
                   f"{ok['config'].nunique()} usable, best {best} per replica")
    return out


def extract(v: Values, x: Inputs, s: Scenario, cat: Catalog) -> pd.DataFrame:
    """Replicas and load per (service, configuration, period), with the server of each."""
    tab = x.table
    rows = []
    for c in tab.index:
        for t in range(x.demand.shape[1]):
            n = v.N[(c, t)]
            if n > 0:
                rows.append(config_row(tab.loc[c]) | {"period": t, "replicas": n,
                                                      "load_rps": v.y[(c, t)]})
    dep = pd.DataFrame(rows)
    return _place(dep, v, s, cat) if len(dep) else dep


def _place(dep: pd.DataFrame, v: Values, s: Scenario, cat: Catalog) -> pd.DataFrame:
    """Pack each period's replicas onto the servers the MILP gave each (GPU, limit) level.

    TP degrees divide the server size, so largest-first packing never strands GPUs.
    """
    servers = fleet_servers(s, cat)
    out = []
    for t, group in dep.groupby("period"):
        free = {x_.name: x_.spec.gpus_per_server for x_ in servers}
        level_servers: dict[tuple[str, float], list[str]] = {}
        taken: set[str] = set()
        for (g, k, r, t2), n in v.S.items():
            if t2 != t:
                continue
            names = [x_.name for x_ in servers if x_.rack == r and x_.gpu.id == g
                     and x_.name not in taken][:n]
            taken.update(names)
            level_servers.setdefault((g, k), []).extend(names)
        for _, row in group.sort_values("tp", ascending=False).iterrows():
            key = (row["gpu"], -1.0 if pd.isna(row["power_cap_w"]) else row["power_cap_w"])
            names = []
            for _ in range(int(row["replicas"])):
                name = next(nm for nm in level_servers[key] if free[nm] >= row["tp"])
                free[name] -= int(row["tp"])
                names.append(name)
            out.append(row.to_dict() | {"servers": names})
    return pd.DataFrame(out)


def period_energy(dep: pd.DataFrame, x: Inputs, job_rows: pd.DataFrame | None = None
                  ) -> pd.DataFrame:
    """Predicted IT and facility power and energy per period (the MILP's own formula),
    training jobs' mean power above idle included."""
    rows = []
    n = x.demand.shape[1]
    train = np.zeros(n)
    if job_rows is not None and len(job_rows):
        inside, _ = jobs_.shares(job_rows, n, x.period_s)
        train = inside.T @ jobs_.draw_w(job_rows, x.servers_off)
    warming = cold_starts_w(dep, x)
    for t in range(n):
        mine = dep[dep["period"] == t] if len(dep) else dep
        it = period_it_w(dep, x, t) + float(train[t]) + float(warming[t])
        fac = float(facility_power_w(it, x.overhead, t))
        kwh = fac * x.period_s / 3.6e6
        rows.append({"period": t, "it_w": it, "training_it_w": float(train[t]),
                     "cold_start_it_w": float(warming[t]),
                     "facility_w": fac,
                     "facility_kwh": kwh,
                     "carbon_kg": _per_kwh(x.carbon_kg_per_kwh, t) * kwh,
                     "cost_usd": _per_kwh(x.usd_per_kwh, t) * kwh,
                     "objective_weight": float(x.weight[t]),
                     "replicas": int(mine["replicas"].sum()) if len(mine) else 0})
    return pd.DataFrame(rows)


def explain(x: Inputs, opt: OptimizeSpec, offset: int) -> list[Problem]:
    """Solve the elastic model and name the smallest changes that make the plan feasible
    (periods numbered from `offset`)."""
    elastic = replace(x, elastic=True)
    m = build(elastic)
    solved = solve(m, opt.time_limit_s, opt.mip_gap, 0.0)
    if solved.status not in ("optimal", "time limit"):
        return [Problem("optimize", "the scenario", f"a solvable plan (HiGHS: {solved.status})")]
    out = []
    for (s_, t), v in m.unmet.items():
        if pyo.value(v) > 1e-6:
            out.append(Problem(f"service {x.services[s_]} in period {t + offset}",
                               f"{x.demand[s_, t]:.3g} req/s",
                               f"at most what the fleet can serve within its SLO: "
                               f"{pyo.value(v):.3g} req/s short"))
    for (g, t), v in m.extra.items():
        if pyo.value(v) > 0.5:
            out.append(Problem(f"fleet {g} servers in period {t + offset}", "too few",
                               f"{round(pyo.value(v))} more {g} servers"))
    for (name, t), v in m.more_w.items():
        if pyo.value(v) > 1.0:
            out.append(Problem(f"power budget of {name} in period {t + offset}", "too small",
                               f"{pyo.value(v) / 1e3:.1f} kW more"))
    return out or [Problem("optimize", "the scenario", "a feasible plan (cause not isolated)")]


def _per_kwh(series: np.ndarray | None, t: int) -> float:
    """Period t of a per-period grid series (NaN where the inputs do not carry it)."""
    return float(series[t]) if series is not None and t < len(series) else float("nan")
