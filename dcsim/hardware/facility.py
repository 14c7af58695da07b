"""Facility overhead on top of IT power, and what the energy costs in carbon and money."""

from __future__ import annotations

import numpy as np
import pandas as pd

from dcsim.scenario import Facility


def overhead_w(it_w: np.ndarray, f: Facility) -> tuple[np.ndarray, np.ndarray]:
    """Cooling and electrical-loss power for IT power it_w.

    Constant PUE: all overhead, IT x (PUE - 1), is reported as cooling; losses 0.
    """
    return it_w * (f.pue - 1.0), np.zeros_like(it_w)


def facility_rows(power: pd.DataFrame, it_w: np.ndarray, dt: np.ndarray, f: Facility
                  ) -> pd.DataFrame:
    """Fill the facility rows with cooling, losses, carbon (g) and cost (USD) per bucket."""
    cooling, losses = overhead_w(it_w, f)
    total_kwh = (it_w + cooling + losses) * dt / 3.6e6
    sel = power["domain"] == "facility"
    power.loc[sel, "cooling_w"] = cooling
    power.loc[sel, "losses_w"] = losses
    power.loc[sel, "carbon_g"] = total_kwh * f.carbon_intensity_g_per_kwh
    power.loc[sel, "cost_usd"] = total_kwh * f.electricity_price_usd_per_kwh
    return power
