"""What a plan is compared with: the way fleets are often run, and a simple heuristic.

- peak: each service on its scenario deployment's GPU and TP at the default power
  limit, replicas for the peak period's demand, kept all day;
- greedy: every period, services in order of demand take the configuration with
  the least energy per request at planned load among those whose GPU type still has
  room, replicas = demand / planned rate, rounded up (no rack budgets checked).

Training jobs start when submitted and run at the default limit under `peak` and at
the limit with the least energy above idle that meets the deadline under `greedy`
(racks not chosen).

Both are priced with the plan's own formula (dcsim.optimize.model.replica_it_w).
"""

from __future__ import annotations

import math

import pandas as pd

from dcsim.optimize.model import Inputs
from dcsim.workloads.spec import InferenceService

COLUMNS = ["service", "service_index", "config", "role", "gpu", "tp", "power_cap_w",
           "max_num_seqs", "planned_rps", "power_a_w", "power_b_w_per_rps", "idle_w_per_gpu",
           "lead_s"]


def config_row(row: pd.Series) -> dict[str, object]:
    """A capacity-table row's fields a deployment row carries (lead_s where known)."""
    return row[[k for k in COLUMNS if k in row]].to_dict()


def colocated_rows(tab: pd.DataFrame) -> pd.DataFrame:
    """The capacity table's colocated configurations (the baselines split nothing)."""
    return tab[tab["role"] == ""] if "role" in tab else tab


def peak(x: Inputs, services: list[InferenceService]) -> pd.DataFrame:
    """Baseline `peak`: each service on its deployment's GPU and TP at the default limit,
    replicas for the peak period's demand in every period."""
    tab = colocated_rows(x.table)
    rows = []
    for i, svc in enumerate(services):
        d = svc.deployment
        mine = tab[(tab["service_index"] == i) & tab["power_cap_w"].isna()]
        same = mine[(mine["gpu"] == d.gpu) & (mine["tp"] == d.tp)]
        pick = same if len(same) else mine
        if pick.empty:
            continue
        near = (pick["max_num_seqs"] - d.max_num_seqs).abs()
        row = pick.loc[near.idxmin()] if len(same) else pick.loc[pick["planned_rps"].idxmax()]
        n = max(math.ceil(float(x.demand[i].max()) / float(row["planned_rps"]) - 1e-9),
                x.min_replicas)
        rows += [config_row(row) | {"period": t, "replicas": n,
                                            "load_rps": float(x.demand[i, t])}
                 for t in range(x.demand.shape[1])]
    return pd.DataFrame(rows)


def greedy(x: Inputs, services: list[InferenceService]) -> pd.DataFrame:
    """Baseline `greedy`: per period, services by demand take the configuration with the
    least energy per request whose GPU type still has room."""
    tab = colocated_rows(x.table)
    have = x.fleet.racks.assign(g=x.fleet.racks["servers"] * x.fleet.racks["gpus_per_server"]
                                ).groupby("gpu")["g"].sum().to_dict()
    rows = []
    for t in range(x.demand.shape[1]):
        left = dict(have)
        for i in sorted(range(len(services)), key=lambda k: -x.demand[k, t]):
            options = tab[tab["service_index"] == i].sort_values("j_per_request")
            for _, row in options.iterrows():
                n = max(math.ceil(float(x.demand[i, t]) / float(row["planned_rps"]) - 1e-9),
                        x.min_replicas)
                if n * int(row["tp"]) <= left.get(row["gpu"], 0):
                    left[row["gpu"]] -= n * int(row["tp"])
                    rows.append(config_row(row) | {"period": t, "replicas": n,
                                                          "load_rps": float(x.demand[i, t])})
                    break
    return pd.DataFrame(rows)


def peak_jobs(x: Inputs) -> pd.DataFrame:
    """Each job at the default power limit (its fastest option if that one is not offered)."""
    if x.jobs is None:
        return pd.DataFrame()
    jobs = _earliest(x.jobs)
    j = jobs.assign(default=jobs["power_cap_w"].isna())
    return jobs.loc[j.sort_values(["default", "runtime_s"], ascending=[False, True])
                    .groupby("job_index").head(1).index].sort_values("job_index")


def greedy_jobs(x: Inputs) -> pd.DataFrame:
    """Each job at its option with the least energy above idle (within its deadline)."""
    if x.jobs is None:
        return pd.DataFrame()
    jobs = _earliest(x.jobs)
    e = jobs["above_idle_w"] * jobs["runtime_s"]
    return jobs.loc[e.groupby(jobs["job_index"]).idxmin().to_numpy()]


def _earliest(jobs: pd.DataFrame) -> pd.DataFrame:
    """Options that start a job when it is submitted (baselines do not delay jobs)."""
    first = jobs.groupby("job_index")["start_s"].transform("min")
    return jobs[jobs["start_s"] == first]
