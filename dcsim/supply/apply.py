"""The supply side of a run: from the facility's meter, per bucket, to where the power
came from (rule-based dispatch, and the LP's optimal dispatch beside it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dcsim.engine.site import grid_values
from dcsim.hardware.series import load_hourly, values_at
from dcsim.scenario import Facility
from dcsim.supply import lp
from dcsim.supply.dispatch import (
    Inputs,
    above_cap_kwh,
    carbon_kg,
    cost_usd,
    dispatch,
    objective,
)
from dcsim.supply.spec import Renewable, Supply

SYNTHETIC = {"solar": "synthetic (dcsim): clear-sky half sine 06:00-18:00, peak 0.8",
             "wind": "synthetic (dcsim): constant 0.35"}


def capacity_factor(r: Renewable, f: Facility, base_dir: Path, t_s: np.ndarray
                    ) -> np.ndarray:
    """Hourly capacity factor at times t_s (s from t = 0): the file's, or the synthetic
    profile (solar: 0.8 sin(pi (hour - 6) / 12) between 6 and 18 h, else 0; wind 0.35)."""
    if r.capacity_factor_file is not None:
        p = Path(r.capacity_factor_file)
        path = p if p.is_absolute() else base_dir / p
        v = values_at(load_hourly(path, "capacity_factor"), f.start_time, t_s,
                      f"facility.supply.renewables[{r.name}].capacity_factor_file")
        return v
    if r.kind == "wind":
        return np.full(np.shape(t_s), 0.35)
    start = f.start_time.hour + f.start_time.minute / 60 + f.start_time.second / 3600
    hour = (start + np.asarray(t_s) / 3600.0) % 24.0
    return np.where((hour > 6) & (hour < 18), 0.8 * np.sin(np.pi * (hour - 6) / 12), 0.0)


def inputs(power: pd.DataFrame, f: Facility, base_dir: Path) -> tuple[Inputs, pd.DataFrame]:
    """Per bucket: the meter's load (IT + cooling + losses) and what supply has to meet it."""
    fac = power[power["domain"] == "facility"].sort_values("t_start_s")
    t0, t1 = fac["t_start_s"].to_numpy(float), fac["t_end_s"].to_numpy(float)
    load = (fac["power_w"] + fac["cooling_w"].fillna(0) + fac["losses_w"].fillna(0)
            ).to_numpy(float) / 1e3
    mid = (t0 + t1) / 2
    s = f.supply
    assert s is not None
    ren = sum((r.installed_kw * capacity_factor(r, f, base_dir, mid) for r in s.renewables),
              np.zeros(len(mid)))
    carbon_g, price = grid_values(f, base_dir, mid)
    return Inputs(t1 - t0, load, ren, price, carbon_g / 1e3), pd.DataFrame(
        {"t_start_s": t0, "t_end_s": t1})


def supply_tables(power: pd.DataFrame, f: Facility, base_dir: Path
                  ) -> tuple[pd.DataFrame, dict[str, object]]:
    """The supply table (per bucket and dispatch: rule, lp) and summary.json's entry."""
    s = f.supply
    assert s is not None
    x, times = inputs(power, f, base_dir)
    rule, best = dispatch(x, s), lp.optimal(x, s)
    table = pd.concat([times.join(rule).assign(dispatch="rule"),
                       times.join(best).assign(dispatch="lp")], ignore_index=True)
    out: dict[str, object] = {
        "policy": s.policy, "objective_unit": {"cost": "USD", "carbon": "kg CO2e",
                                               "peak_shaving": "USD"}[s.policy],
        "rule": totals(rule, x, s), "lp": totals(best, x, s),
        "renewable_profiles": {r.name: r.capacity_factor_file or SYNTHETIC[r.kind]
                               for r in s.renewables}}
    return table, out


def totals(d: pd.DataFrame, x: Inputs, s: Supply) -> dict[str, float]:
    """Energy by source (kWh), peak import (kW), cost (USD) and carbon (kg): location-based
    (the whole load at the grid's intensity) and with the site's own supply, the
    batteries put back to their initial charge at the run's mean grid rates
    (battery_net_kwh: what they gave beyond what they took)."""
    h = x.dt_s / 3600.0

    def kwh(col: str) -> float:
        return float((d[col] * h).sum())

    net = sum(b.soc_initial * b.energy_kwh - float(d[f"soc_kwh:{b.name}"].iloc[-1])
              for b in s.batteries)
    return {
        "objective": objective(d, x, s), "load_kwh": kwh("load_kw"),
        "grid_kwh": kwh("grid_kw"), "renewable_used_kwh": kwh("renewable_used_kw"),
        "curtailed_kwh": kwh("curtailed_kw"), "generators_kwh": kwh("generators_kw"),
        "battery_charge_kwh": kwh("battery_charge_kw"),
        "battery_discharge_kwh": kwh("battery_discharge_kw"), "unmet_kwh": kwh("unmet_kw"),
        "grid_peak_kw": float(d["grid_kw"].max()),
        "import_above_cap_kwh": above_cap_kwh(d, x, s), "battery_net_kwh": net,
        "cost_usd": cost_usd(d, x, s), "carbon_kg": carbon_kg(d, x, s),
        "carbon_kg_location_based": float((x.carbon * d["load_kw"] * h).sum())}
