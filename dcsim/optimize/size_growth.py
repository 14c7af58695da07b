"""Sizing as demand grows: the fleet each month needs, and when what the scenario has
runs out.

Month m's demand is today's times (1 + g)^m; its fleet is the sizing MILP's answer on
the simulation-checked capacity table (per replica, a configuration's rate does not
depend on the demand, so no new simulation is needed). What the scenario has: its
GPUs per type, its racks and its facility power budget. A resource runs out in the
first month whose need exceeds it (month 0: it is short already); what to add in a
month is the need beyond both what the site has and the month before's need.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from dcsim.catalog import Catalog
from dcsim.engine.fleet import fleet_servers
from dcsim.optimize import fleet_size as fs
from dcsim.optimize.model import Inputs
from dcsim.optimize.plan import fleet_frame, period_energy
from dcsim.optimize.sizing import DEPLOYMENT_COLUMNS, SizingInputs, deployments, size
from dcsim.scenario import Scenario


def have(s: Scenario, cat: Catalog) -> dict[str, float]:
    """What the scenario's site has: GPUs per type, racks, facility budget (kW)."""
    out: dict[str, float] = {}
    for x in fleet_servers(s, cat):
        key = f"GPUs {x.gpu.id}"
        out[key] = out.get(key, 0) + x.spec.gpus_per_server
    out["racks"] = float(sum(r.count for r in s.fleet.racks))
    if s.facility.power_budget_kw is not None:
        out["facility power, kW"] = float(s.facility.power_budget_kw)
    return out


def needs(fleet: pd.DataFrame, periods: pd.DataFrame) -> dict[str, float]:
    """What a sized fleet needs, in have()'s terms (facility: its peak draw)."""
    out = {f"GPUs {r['gpu']}": float(r["gpus"]) for _, r in fleet.iterrows()}
    out["racks"] = float(fleet["racks"].sum())
    out["facility power, kW"] = float(periods["facility_w"].max()) / 1e3
    return out


def project(s: Scenario, cat: Catalog, x: SizingInputs, energy: Inputs,
            tpl: dict[str, fs.Template], held: dict[tuple[str, int], int], n: int,
            growth: float, months: int, time_limit_s: float, job_rows: pd.DataFrame | None
            ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per month and resource: need, have and what to add; and the run-out table."""
    site = have(s, cat)
    rows = []
    for m in range(months + 1):
        dem = x.demand * (1 + growth) ** m
        xm = replace(x, demand=dem)
        dep = (deployments(xm, size(xm, time_limit_s, least_power=False)) if x.services
               else pd.DataFrame(columns=DEPLOYMENT_COLUMNS))
        fleet = fs.hardware(dep, held, n, tpl)
        sized = fs.sized_scenario(s, fleet, tpl)
        em = replace(energy, demand=dem, fleet=fleet_frame(sized, cat))
        need = needs(fleet, period_energy(dep, em, job_rows))
        rows += [{"month": m, "demand_scale": (1 + growth) ** m, "resource": k,
                  "need": v, "have": site.get(k, 0.0)} for k, v in need.items()
                 if k in site or k.startswith("GPUs")]  # no facility budget: no limit
    g = pd.DataFrame(rows)
    prev = g.groupby("resource")["need"].shift(1).fillna(0.0)
    g["add"] = np.maximum(g["need"] - np.maximum(g["have"], prev), 0.0)
    return g, runout(g)


def runout(g: pd.DataFrame) -> pd.DataFrame:
    """Per resource: have, need now and at the horizon, the month it runs out (None:
    not within the horizon) and what to add by the horizon."""
    rows = []
    for res, r in g.groupby("resource", sort=False):
        short = r[r["need"] > r["have"] + 1e-9]
        rows.append({"resource": res, "have": float(r["have"].iloc[0]),
                     "need_now": float(r["need"].iloc[0]),
                     "need_at_horizon": float(r["need"].iloc[-1]),
                     "runs_out_month": int(short["month"].iloc[0]) if len(short) else None,
                     "add_by_horizon": max(float(r["need"].iloc[-1] - r["have"].iloc[0]),
                                           0.0)})
    return pd.DataFrame(rows)
