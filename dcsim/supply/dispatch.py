"""Rule-based dispatch of a site's supply, bucket by bucket, and the objective both it
and the LP (dcsim.supply.lp) are judged by.

Per bucket of length dt, with load L (the facility's meter: IT + cooling + losses) and
renewables available R, all in kW:
1. renewables serve the load; their surplus charges the batteries; the rest is
   curtailed;
2. batteries discharge when the signal is not low (cost: grid price at or above its
   median over the run; carbon: grid intensity at or above its median; peak_shaving:
   load above import_cap_kw, by the excess) and charge from the grid when it is low
   (cost and carbon: below the median; peak_shaving: up to the cap);
3. generators cheaper than the grid on the policy's measure (fuel cost, or carbon)
   run before it; the grid imports up to its limit (peak_shaving: first up to the cap,
   then generators, then the grid above the cap); the remaining generators, cheapest
   first, cover the rest; a generator's output rises by at most ramp_kw_per_s x dt
   from one bucket to the next (falls at any rate);
4. what none covers is unmet load.

A generator with a start-up time that was off starts when the load needs it (its
output or unmet load in the bucket), delivers nothing until start_up_s has passed
(in the bucket where it ends, up to its power x the share of the bucket after it),
finishes a start-up once begun, and goes off in a bucket where it is ready and not
needed; each start costs start_cost_usd.

A battery of round-trip efficiency eta stores sqrt(eta) of what it takes and
delivers sqrt(eta) of what it gives up: soc += (charge sqrt(eta) - discharge /
sqrt(eta)) dt, within [soc_min, soc_max] x energy.

Balance, every bucket: L = grid + renewables used + generators + discharge - charge
+ unmet, and renewables used + curtailed = available.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dcsim.supply.spec import Battery, Generator, Supply

UNMET = 1000.0  # objective weight of unmet load per kWh (USD or kg): a last resort


@dataclass(frozen=True)
class Inputs:
    """Per bucket: length (s), load and renewables available (kW), grid price (USD/kWh)
    and carbon (kg/kWh)."""

    dt_s: np.ndarray
    load_kw: np.ndarray
    renewable_kw: np.ndarray
    price: np.ndarray
    carbon: np.ndarray


@dataclass
class Unit:
    """A generator's commitment as the rule runs it: running (starting or on), and the
    start-up seconds still to run."""

    running: bool = False
    left_s: float = 0.0

    def share(self, g: Generator, dt_s: float) -> float:
        """Share of the bucket it can deliver in (it starts at the bucket's start if off)."""
        left = (self.left_s if self.running else g.start_up_s) if g.start_up_s > 0 else 0.0
        return max(dt_s - left, 0.0) / dt_s

    def advance(self, g: Generator, out_kw: float, short_kw: float, dt_s: float) -> float:
        """After the bucket: start if needed and off (1.0: a start), run the start-up
        down, go off when ready and unused."""
        started = 0.0
        if g.commits and not self.running and (out_kw > 0 or short_kw > 0):
            self.running, self.left_s, started = True, g.start_up_s, 1.0
        if self.running:
            starting = self.left_s > 0
            self.left_s = max(self.left_s - dt_s, 0.0)
            if not starting and out_kw <= 0:
                self.running = False
        return started


def dispatch(x: Inputs, s: Supply) -> pd.DataFrame:
    """The rule's dispatch, one row per bucket (columns: see `COLUMNS`)."""
    n = len(x.dt_s)
    soc = [b.soc_initial * b.energy_kwh for b in s.batteries]
    gen_prev = [0.0] * len(s.generators)
    units = [Unit() for _ in s.generators]
    mid_p, mid_c = float(np.median(x.price)), float(np.median(x.carbon))
    return pd.DataFrame([_bucket(x, s, t, x.dt_s[t] / 3600.0, soc, gen_prev, units, mid_p,
                                 mid_c) for t in range(n)])


def _bucket(x: Inputs, s: Supply, t: int, h: float, soc: list[float], prev: list[float],
            units: list[Unit], mid_p: float, mid_c: float) -> dict[str, float]:
    load, avail = float(x.load_kw[t]), float(x.renewable_kw[t])
    direct = min(avail, load)
    need, surplus = load - direct, avail - direct
    charge = [0.0] * len(s.batteries)
    discharge = [0.0] * len(s.batteries)
    for i, b in enumerate(s.batteries):  # the surplus first
        c = min(surplus, b.power_kw, _room(b, soc[i]) / (math.sqrt(b.round_trip_efficiency) * h))
        charge[i], surplus = c, surplus - c
    curtailed = surplus
    cap = s.import_cap_kw
    if s.policy == "peak_shaving":
        want_out, want_in = max(need - (cap or 0.0), 0.0), max((cap or 0.0) - need, 0.0)
    else:
        high = x.price[t] >= mid_p if s.policy == "cost" else x.carbon[t] >= mid_c
        low = x.price[t] < mid_p if s.policy == "cost" else x.carbon[t] < mid_c
        want_out, want_in = (need if high else 0.0), (math.inf if low else 0.0)
    for i, b in enumerate(s.batteries):
        eta = math.sqrt(b.round_trip_efficiency)
        if charge[i] == 0.0 and want_out > 0:
            d = min(want_out, b.power_kw, (soc[i] - b.soc_min * b.energy_kwh) * eta / h)
            discharge[i], want_out, need = d, want_out - d, need - d
    grid_limit = s.grid_limit_kw if s.grid_limit_kw is not None else math.inf
    grid_in = 0.0  # grid power into the batteries
    for i, b in enumerate(s.batteries):
        if discharge[i] == 0.0 and want_in > 0:
            c = min(want_in, b.power_kw - charge[i], grid_limit - need - grid_in,
                    _room(b, soc[i] + charge[i] * math.sqrt(b.round_trip_efficiency) * h)
                    / (math.sqrt(b.round_trip_efficiency) * h))
            c = max(c, 0.0)
            charge[i] += c
            grid_in, want_in = grid_in + c, want_in - c
    gen, grid, unmet = _cover(x, s, t, h, need, grid_limit - grid_in, prev, units)
    for i, b in enumerate(s.batteries):
        eta = math.sqrt(b.round_trip_efficiency)
        soc[i] += (charge[i] * eta - discharge[i] / eta) * h
    prev[:] = gen
    starts = [u.advance(g, gen[i], unmet, float(x.dt_s[t]))
              for i, (g, u) in enumerate(zip(s.generators, units, strict=True))]
    return _row(x, s, t, load, avail, curtailed, charge, discharge, soc, gen, grid + grid_in,
                unmet) | {f"start:{g.name}": starts[i] for i, g in enumerate(s.generators)
                          if g.commits}


def _room(b: Battery, soc: float) -> float:
    return max(b.soc_max * b.energy_kwh - soc, 0.0)


def _cover(x: Inputs, s: Supply, t: int, h: float, need: float, grid_room: float,
           prev: list[float], units: list[Unit]) -> tuple[list[float], float, float]:
    """Generators and grid for the load left: cheaper generators, grid, the others (each
    within its ramp and the share of the bucket its start-up leaves)."""
    price = float(x.price[t]) if s.policy != "carbon" else float(x.carbon[t])
    gens = s.generators
    measure = [g.carbon_kg_per_kwh if s.policy == "carbon" else g.fuel_usd_per_kwh
               for g in gens]
    top = [min(g.power_kw, prev[i] + (g.ramp_kw_per_s or math.inf) * h * 3600)
           * units[i].share(g, h * 3600) for i, g in enumerate(gens)]
    out = [0.0] * len(gens)
    order = sorted(range(len(gens)), key=lambda i: measure[i])

    def run(i: int, need: float) -> float:
        take = min(need, top[i] - out[i])
        out[i] += take
        return need - take

    grid = 0.0
    if s.policy == "peak_shaving":
        first = min(need, grid_room, s.import_cap_kw or 0.0)
        grid, need = first, need - first
        for i in order:
            need = run(i, need)
    else:
        for i in order:
            if measure[i] < price:
                need = run(i, need)
    more = min(need, grid_room - grid)
    grid, need = grid + more, need - more
    for i in order:
        need = run(i, need)
    return out, grid, max(need, 0.0)


def _row(x: Inputs, s: Supply, t: int, load: float, avail: float, curtailed: float,
         charge: list[float], discharge: list[float], soc: list[float], gen: list[float],
         grid: float, unmet: float) -> dict[str, float]:
    row = {"load_kw": load, "renewable_available_kw": avail,
           "renewable_used_kw": avail - curtailed, "curtailed_kw": curtailed,
           "battery_charge_kw": sum(charge), "battery_discharge_kw": sum(discharge),
           "battery_soc_kwh": sum(soc), "generators_kw": sum(gen), "grid_kw": grid,
           "unmet_kw": unmet}
    for i, b in enumerate(s.batteries):
        row |= {f"soc_kwh:{b.name}": soc[i], f"charge_kw:{b.name}": charge[i],
                f"discharge_kw:{b.name}": discharge[i]}
    row |= {f"generator_kw:{g.name}": gen[i] for i, g in enumerate(s.generators)}
    return row


def cost_usd(d: pd.DataFrame, x: Inputs, s: Supply) -> float:
    """Grid, fuel and battery wear, USD, the batteries put back to their initial charge."""
    h = x.dt_s / 3600.0
    gens = sum(g.fuel_usd_per_kwh * d[f"generator_kw:{g.name}"] for g in s.generators)
    wear = sum(b.degradation_usd_per_kwh * d[f"discharge_kw:{b.name}"] for b in s.batteries)
    starts = sum(g.start_cost_usd * float(d[f"start:{g.name}"].sum())
                 for g in s.generators if g.commits)
    return float(((x.price * d["grid_kw"] + gens + wear) * h).sum()) + restore(
        d, x.price, s) + starts


def carbon_kg(d: pd.DataFrame, x: Inputs, s: Supply) -> float:
    """Grid and generators, kg CO2e, the batteries put back to their initial charge."""
    h = x.dt_s / 3600.0
    gens = sum(g.carbon_kg_per_kwh * d[f"generator_kw:{g.name}"] for g in s.generators)
    return float(((x.carbon * d["grid_kw"] + gens) * h).sum()) + restore(d, x.carbon, s)


def above_cap_kwh(d: pd.DataFrame, x: Inputs, s: Supply) -> float:
    """Grid import above import_cap_kw, kWh (0 without a cap)."""
    if s.import_cap_kw is None:
        return 0.0
    return float((np.maximum(d["grid_kw"] - s.import_cap_kw, 0.0) * x.dt_s / 3600.0).sum())


def objective(d: pd.DataFrame, x: Inputs, s: Supply) -> float:
    """The policy's measure of a dispatch: cost (USD), carbon (kg), or for peak_shaving
    cost plus import above the cap at excess_usd_per_kwh; unmet load at UNMET per kWh."""
    unmet = UNMET * float((d["unmet_kw"] * x.dt_s / 3600.0).sum())
    if s.policy == "carbon":
        return carbon_kg(d, x, s) + unmet
    excess = s.excess_usd_per_kwh * above_cap_kwh(d, x, s) if s.policy == "peak_shaving" \
        else 0.0
    return cost_usd(d, x, s) + excess + unmet


def restore(d: pd.DataFrame, rate: np.ndarray, s: Supply) -> float:
    """What putting the batteries back to their initial charge costs, at the run's mean
    grid rate (USD or kg per kWh): (initial - final) / sqrt(eta) per battery, negative
    when they end fuller. Without it, a run would count the charge it started with as
    free energy."""
    mean = float(np.mean(rate))
    return sum((b.soc_initial * b.energy_kwh - float(d[f"soc_kwh:{b.name}"].iloc[-1]))
               / math.sqrt(b.round_trip_efficiency) * mean for b in s.batteries)
