"""Terminal numbers in the units a planner reads."""

from __future__ import annotations

from dcsim import units as u


def test_each_quantity_takes_the_prefix_that_keeps_three_digits():
    assert u.energy_kwh(3450.0) == "3.45 MWh" and u.energy_kwh(0.07) == "70 Wh"
    assert u.energy_kwh(2.5e6) == "2.5 GWh" and u.energy_kwh(12.3) == "12.3 kWh"
    assert u.power_w(37_300.0) == "37.3 kW" and u.power_w(1.2e6) == "1.2 MW"
    assert u.power_w(648.0) == "648 W"
    assert u.duration_s(86_400.0) == "1 day" and u.duration_s(172_800.0) == "2 days"
    assert u.duration_s(5400.0) == "1.5 h" and u.duration_s(0.0123) == "12.3 ms"
    assert u.duration_s(0.0) == "0 s"
    assert u.count(1.15e10) == "11.5 G" and u.count(12_345) == "12,345"
    assert u.money_usd(0.547) == "$0.55" and u.money_usd(12_345.6) == "$12,346"
    assert u.mass_kg(3820.0) == "3.82 t" and u.mass_kg(2.74) == "2.74 kg"
    assert u.power_w(float("nan")) == "-"
