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

Everything here takes plain values (a Plant, arrays of outdoor temperature, carbon
intensity and price); reading them from a scenario and its files is the build
stage's (dcsim.engine.site).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

KELVIN = 273.15


@dataclass(frozen=True)
class Plant:
    """A cooling plant and power chain: supply temperature (degC), tower approach (K),
    chiller COP as a share of Carnot and its ceiling, fans and pumps, UPS and
    distribution losses as shares."""

    supply_c: float
    approach_k: float
    carnot_fraction: float
    max_cop: float
    fan_pump_fraction: float
    ups_efficiency: float
    ups_fixed_loss_fraction: float
    distribution_loss_fraction: float


def chiller_cop(t_out_c: np.ndarray, p: Plant) -> np.ndarray:
    """Chiller COP at outdoor temperature t_out_c (a share of the Carnot COP)."""
    ts = p.supply_c
    lift = np.maximum(np.asarray(t_out_c) + p.approach_k - ts, 1e-3)
    return np.minimum(p.carnot_fraction * (ts + KELVIN) / lift, p.max_cop)


def free_cooling_share(t_out_c: np.ndarray, p: Plant) -> np.ndarray:
    """Share of the heat removed without the chiller."""
    ts = p.supply_c
    if p.approach_k == 0:
        return (np.asarray(t_out_c) <= ts).astype(float)
    return np.clip((ts - np.asarray(t_out_c)) / p.approach_k, 0.0, 1.0)


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


def constant_overhead(pue: float, n: int = 1) -> Overhead:
    """A constant PUE: all overhead, IT x (PUE - 1), counted as cooling; n times."""
    zero = np.zeros(n)
    return Overhead(zero + (pue - 1.0), zero, zero, zero)


def overhead(p: Plant, t_out_c: np.ndarray, capacity_w: float) -> Overhead:
    """Coefficients of a modelled plant at outdoor temperatures t_out_c.

    losses = IT (1 / UPS efficiency - 1 + distribution share) + UPS no-load share x
    capacity; chiller = (IT + losses) x (1 - free-cooling share) / COP; fans and pumps =
    share x IT.
    """
    loss_a = 1 / p.ups_efficiency - 1 + p.distribution_loss_fraction
    loss_b = p.ups_fixed_loss_fraction * capacity_w
    q = (1 - free_cooling_share(t_out_c, p)) / chiller_cop(t_out_c, p)
    ones = np.ones(np.shape(q))
    return Overhead((1 + loss_a) * q + p.fan_pump_fraction, loss_b * q, loss_a * ones,
                    loss_b * ones)


def hybrid_overhead(air: Plant, liquid: Plant, t_out_c: np.ndarray, capacity_w: float,
                    liquid_share: float) -> Overhead:
    """Overhead of a hall whose servers send `liquid_share` of their heat to a warm-water
    loop (cold plates, plant `liquid`) and the rest to air (plant `air`); the electrical
    losses' heat goes to air. Power chain (UPS, distribution) from the air plant.

    chiller = IT s q_liquid + (IT (1 - s) + losses) q_air; fans and pumps = IT (s f_liquid
    + (1 - s) f_air), with q = (1 - free-cooling share) / COP of each loop. s = 0 gives
    overhead(air) exactly, s = 1 overhead(liquid) but for the losses' cooling.
    """
    s = liquid_share
    loss_a = 1 / air.ups_efficiency - 1 + air.distribution_loss_fraction
    loss_b = air.ups_fixed_loss_fraction * capacity_w
    q_air = (1 - free_cooling_share(t_out_c, air)) / chiller_cop(t_out_c, air)
    q_liq = (1 - free_cooling_share(t_out_c, liquid)) / chiller_cop(t_out_c, liquid)
    fans = s * liquid.fan_pump_fraction + (1 - s) * air.fan_pump_fraction
    ones = np.ones(np.shape(q_air))
    return Overhead(s * q_liq + (1 - s + loss_a) * q_air + fans, loss_b * q_air,
                    loss_a * ones, loss_b * ones)


def facility_power_w(it_w: Any, o: Overhead, i: int | slice = slice(None)) -> Any:
    """Facility power = IT + cooling + losses, W, at time index i (floats, arrays or
    Pyomo expressions alike)."""
    return it_w * (1 + o.cool_a[i] + o.loss_a[i]) + o.cool_b[i] + o.loss_b[i]


def cooling_and_losses(it_w: np.ndarray, t_out_c: np.ndarray, p: Plant, capacity_w: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Cooling power (chiller, fans, pumps) and electrical losses (UPS, distribution), W."""
    it = np.asarray(it_w, dtype=float)
    o = overhead(p, t_out_c, capacity_w)
    return o.cool_a * it + o.cool_b, o.loss_a * it + o.loss_b


def facility_rows(power: pd.DataFrame, it_w: np.ndarray, dt: np.ndarray, o: Overhead,
                  t_out_c: np.ndarray | None, carbon_g_per_kwh: np.ndarray,
                  price_usd_per_kwh: np.ndarray) -> pd.DataFrame:
    """Fill the facility rows with cooling, losses, outdoor temperature, carbon and cost."""
    cooling, losses = o.cool_a * it_w + o.cool_b, o.loss_a * it_w + o.loss_b
    t_out = np.full_like(it_w, np.nan) if t_out_c is None else t_out_c
    total_kwh = (it_w + cooling + losses) * dt / 3.6e6
    sel = power["domain"] == "facility"
    power.loc[sel, "cooling_w"] = cooling
    power.loc[sel, "losses_w"] = losses
    power.loc[sel, "outdoor_c"] = t_out
    power.loc[sel, "carbon_intensity_g_per_kwh"] = carbon_g_per_kwh
    power.loc[sel, "carbon_g"] = total_kwh * carbon_g_per_kwh
    power.loc[sel, "cost_usd"] = total_kwh * price_usd_per_kwh
    return power
