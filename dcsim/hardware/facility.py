"""Facility overhead on top of IT power, and what the energy costs in carbon and money.

Constant PUE: all overhead, IT x (PUE - 1), is reported as cooling; losses are 0.

Modelled (facility.cooling), per time bucket with outdoor temperature T:

- free cooling carries the whole load when the tower water (T + approach) is no
  warmer than the supply water, none when T reaches the supply temperature, and a
  linear share between;
- the chiller carries the rest at COP = carnot_fraction x T_supply / (T + approach -
  T_supply) (kelvin), at most max_cop;
- fans and pumps: a share of IT power;
- UPS: IT / efficiency - IT, plus a no-load loss on the facility's capacity;
  distribution: a share of IT power. The heat of the losses is cooled too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dcsim.hardware.series import load_hourly, synthetic_temperature, values_at
from dcsim.scenario import Cooling, Facility, SyntheticWeather

KELVIN = 273.15


def supply_c(c: Cooling) -> float:
    """Supply temperature of the cooling loop, degC: the medium's setpoint."""
    return c.supply_water_c if c.supply_water_c is not None else (
        10.0 if c.medium == "air" else 30.0)


def chiller_cop(t_out_c: np.ndarray, c: Cooling) -> np.ndarray:
    """Chiller COP at outdoor temperature t_out_c (a share of the Carnot COP)."""
    ts = supply_c(c)
    lift = np.maximum(np.asarray(t_out_c) + c.approach_k - ts, 1e-3)
    return np.minimum(c.carnot_fraction * (ts + KELVIN) / lift, c.max_cop)


def free_cooling_share(t_out_c: np.ndarray, c: Cooling) -> np.ndarray:
    """Share of the heat removed without the chiller."""
    ts = supply_c(c)
    if c.approach_k == 0:
        return (np.asarray(t_out_c) <= ts).astype(float)
    return np.clip((ts - np.asarray(t_out_c)) / c.approach_k, 0.0, 1.0)


@dataclass(frozen=True)
class Overhead:
    """Facility overhead affine in IT power: cooling = cool_a x IT + cool_b, likewise losses.

    Arrays (one value per time) or floats; None of the model is non-linear in IT
    power, so the optimizer uses exactly the simulator's numbers.
    """

    cool_a: np.ndarray
    cool_b: np.ndarray
    loss_a: np.ndarray
    loss_b: np.ndarray


def overhead(f: Facility, t_out_c: np.ndarray | None, capacity_w: float) -> Overhead:
    """Coefficients at outdoor temperatures t_out_c (constant PUE: all overhead is cooling).

    Modelled: losses = IT (1 / UPS efficiency - 1 + distribution share) + UPS no-load
    share x capacity; chiller = (IT + losses) x (1 - free-cooling share) / COP; fans
    and pumps = share x IT.
    """
    if f.cooling is None:
        zero = np.zeros(1 if t_out_c is None else np.shape(t_out_c))
        return Overhead(zero + (f.pue - 1.0), zero, zero, zero)
    c = f.cooling
    assert t_out_c is not None
    loss_a = 1 / c.ups_efficiency - 1 + c.distribution_loss_fraction
    loss_b = c.ups_fixed_loss_fraction * capacity_w
    q = (1 - free_cooling_share(t_out_c, c)) / chiller_cop(t_out_c, c)
    fans = c.fan_pump_fraction if c.fan_pump_fraction is not None else (
        0.05 if c.medium == "air" else 0.02)
    ones = np.ones(np.shape(q))
    return Overhead((1 + loss_a) * q + fans, loss_b * q, loss_a * ones, loss_b * ones)


def facility_power_w(it_w: Any, o: Overhead, i: int | slice = slice(None)) -> Any:
    """Facility power = IT + cooling + losses, W, at time index i (floats, arrays or
    Pyomo expressions alike)."""
    return it_w * (1 + o.cool_a[i] + o.loss_a[i]) + o.cool_b[i] + o.loss_b[i]


def cooling_and_losses(it_w: np.ndarray, t_out_c: np.ndarray, c: Cooling, capacity_w: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Cooling power (chiller, fans, pumps) and electrical losses (UPS, distribution), W."""
    it = np.asarray(it_w, dtype=float)
    o = overhead(Facility(cooling=c), t_out_c, capacity_w)
    return o.cool_a * it + o.cool_b, o.loss_a * it + o.loss_b


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


def facility_rows(power: pd.DataFrame, it_w: np.ndarray, dt: np.ndarray, f: Facility,
                  base_dir: Path, capacity_w: float) -> pd.DataFrame:
    """Fill the facility rows with cooling, losses, outdoor temperature, carbon and cost."""
    mid = np.concatenate([[0.0], np.cumsum(dt)[:-1]]) + dt / 2
    t_out = None if f.cooling is None else outdoor_c(f, base_dir, mid)
    o = overhead(f, t_out, capacity_w)
    cooling, losses = o.cool_a * it_w + o.cool_b, o.loss_a * it_w + o.loss_b
    if t_out is None:
        t_out = np.full_like(it_w, np.nan)
    carbon, price = grid_values(f, base_dir, mid)
    total_kwh = (it_w + cooling + losses) * dt / 3.6e6
    sel = power["domain"] == "facility"
    power.loc[sel, "cooling_w"] = cooling
    power.loc[sel, "losses_w"] = losses
    power.loc[sel, "outdoor_c"] = t_out
    power.loc[sel, "carbon_intensity_g_per_kwh"] = carbon
    power.loc[sel, "carbon_g"] = total_kwh * carbon
    power.loc[sel, "cost_usd"] = total_kwh * price
    return power
