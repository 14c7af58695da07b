"""Build stage for the site: the scenario's facility section as plain values for
dcsim.hardware.facility (a Plant, a constant PUE) and its weather, carbon-intensity and
price series read from files or synthesised at given times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dcsim.catalog import ServerSpec
from dcsim.hardware.facility import (
    Overhead,
    Plant,
    constant_overhead,
    facility_rows,
    hybrid_overhead,
    overhead,
)
from dcsim.hardware.series import load_hourly, synthetic_temperature, values_at
from dcsim.scenario import Cooling, Facility, SyntheticWeather


def plant_of(c: Cooling, medium: str | None = None) -> Plant:
    """The plant of facility.cooling (or of its `medium` loop), its defaults resolved:
    supply water 10 degC for air, 30 for liquid (by_server: supply_water_c is the air
    loop's, liquid_supply_water_c the warm loop's); fans and pumps 5 % of IT for air, 2 %
    for liquid."""
    medium = medium or c.medium
    if c.medium == "by_server" and medium == "liquid":
        supply = c.liquid_supply_water_c
    else:
        supply = c.supply_water_c if c.supply_water_c is not None else (
            30.0 if medium == "liquid" else 10.0)
    fans = c.fan_pump_fraction if c.fan_pump_fraction is not None else (
        0.02 if medium == "liquid" else 0.05)
    return Plant(supply, c.approach_k, c.carnot_fraction, c.max_cop, fans, c.ups_efficiency,
                 c.ups_fixed_loss_fraction, c.distribution_loss_fraction)


def liquid_share(specs: list[tuple[ServerSpec, int]]) -> float:
    """Share of the hall's heat its servers send to liquid: their liquid_cooled_fraction
    weighted by nameplate power x count (a constant, so the optimizer sees the same
    overhead as the simulation)."""
    total = sum(x.max_power_w * n for x, n in specs)
    return sum(x.max_power_w * n * x.liquid_cooled_fraction for x, n in specs) / total \
        if total > 0 else 0.0


def site_overhead(f: Facility, t_out_c: np.ndarray | None, capacity_w: float,
                  liquid: float = 0.0) -> Overhead:
    """The facility's overhead: its constant PUE, or its plant at outdoor temperatures
    (by_server: `liquid` of the heat to the warm-water loop, the rest to air)."""
    if f.cooling is None:
        return constant_overhead(f.pue, 1 if t_out_c is None else int(np.size(t_out_c)))
    assert t_out_c is not None
    if f.cooling.medium == "by_server":
        return hybrid_overhead(plant_of(f.cooling, "air"), plant_of(f.cooling, "liquid"),
                               t_out_c, capacity_w, liquid)
    return overhead(plant_of(f.cooling), t_out_c, capacity_w)


def outdoor_c(f: Facility, base_dir: Path, t_s: np.ndarray) -> np.ndarray:
    """Outdoor dry-bulb temperature at times t_s (s after the facility's start time), degC."""
    assert f.cooling is not None
    w = f.cooling.weather
    if isinstance(w, SyntheticWeather):
        return synthetic_temperature(w, f.start_time, t_s)
    path = Path(w.path) if Path(w.path).is_absolute() else base_dir / w.path
    return values_at(load_hourly(path, "dry_bulb_c"), f.start_time, t_s,
                     "facility.cooling.weather")


def grid_values(f: Facility, base_dir: Path, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Carbon intensity (g/kWh) and price (USD/kWh) at times t_s: series or constants."""
    out = []
    for file, column, const, what in (
        (f.carbon_intensity_file, "g_per_kwh", f.carbon_intensity_g_per_kwh,
         "facility.carbon_intensity_file"),
        (f.electricity_price_file, "usd_per_kwh", f.electricity_price_usd_per_kwh,
         "facility.electricity_price_file"),
    ):
        if file is None:
            out.append(np.full(np.shape(t_s), const, dtype=float))
        else:
            path = Path(file) if Path(file).is_absolute() else base_dir / file
            out.append(values_at(load_hourly(path, column), f.start_time, t_s, what))
    return out[0], out[1]


def facility_table(power: pd.DataFrame, it_w: np.ndarray, dt: np.ndarray, f: Facility,
                   base_dir: Path, capacity_w: float, liquid: float = 0.0) -> pd.DataFrame:
    """The power table with its facility rows filled (cooling, losses, outdoor
    temperature, carbon, cost) for the scenario's facility over buckets dt."""
    mid = np.concatenate([[0.0], np.cumsum(dt)[:-1]]) + dt / 2
    t_out = None if f.cooling is None else outdoor_c(f, base_dir, mid)
    carbon, price = grid_values(f, base_dir, mid)
    return facility_rows(power, it_w, dt, site_overhead(f, t_out, capacity_w, liquid), t_out,
                         carbon, price)
