"""Scenario section `facility.supply`: where the facility's power comes from."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dcsim.schema_base import Spec


class Renewable(Spec):
    """On-site solar or wind: installed power times an hourly capacity factor."""

    name: str = Field(min_length=1)
    kind: Literal["solar", "wind"]
    installed_kw: float = Field(gt=0, le=1e7, description="Nameplate power, kW.")
    capacity_factor_file: str | None = Field(
        default=None, description="Hourly CSV: timestamp, capacity_factor (0-1). Without "
        "one, dcsim's synthetic profile, labelled as such in the results: solar a clear-sky "
        "half sine from 06:00 to 18:00 peaking at 0.8; wind a constant 0.35.")


class Generator(Spec):
    """A dispatchable generator (gas turbine, engine, fuel cell)."""

    name: str = Field(min_length=1)
    power_kw: float = Field(gt=0, le=1e7, description="Most it delivers, kW.")
    fuel_usd_per_kwh: float = Field(ge=0, description="Fuel and variable cost per kWh made.")
    carbon_kg_per_kwh: float = Field(ge=0, description="kg CO2e per kWh made.")
    ramp_kw_per_s: float | None = Field(
        default=None, gt=0, description="Fastest change of its output, kW/s (none: any).")
    start_up_s: float = Field(
        default=0.0, ge=0, le=86400, description="From a start to its first power, s (0: at "
        "once). Off, it delivers in a bucket only after its start-up: the rule starts it "
        "when the load needs it, the optimal dispatch may start it ahead.")
    start_cost_usd: float = Field(
        default=0.0, ge=0, description="Cost of one start (wear, fuel to warm up), USD.")

    @property
    def commits(self) -> bool:
        """Its starts are modelled (a start-up time or a start cost)."""
        return self.start_up_s > 0 or self.start_cost_usd > 0


class Battery(Spec):
    """A battery behind the meter."""

    name: str = Field(min_length=1)
    energy_kwh: float = Field(gt=0, le=1e8, description="Usable capacity at 100 % charge, kWh.")
    power_kw: float = Field(gt=0, le=1e7, description="Most it charges or discharges, kW.")
    round_trip_efficiency: float = Field(
        default=0.88, gt=0, le=1, description="Energy out / energy in. Default 0.88: an "
        "assumption in the range reported for utility Li-ion systems (85-90 %); set yours.")
    soc_min: float = Field(default=0.1, ge=0, lt=1, description="Lowest state of charge, "
                           "share of energy_kwh.")
    soc_max: float = Field(default=0.9, gt=0, le=1, description="Highest state of charge.")
    soc_initial: float = Field(default=0.5, ge=0, le=1, description="State of charge at t = 0.")
    degradation_usd_per_kwh: float = Field(
        default=0.0, ge=0, description="Wear cost per kWh discharged (0: not counted).")

    @model_validator(mode="after")
    def _order(self) -> Battery:
        if not self.soc_min <= self.soc_initial <= self.soc_max:
            raise ValueError(f"need soc_min <= soc_initial <= soc_max, got {self.soc_min}, "
                             f"{self.soc_initial}, {self.soc_max}")
        return self


class Supply(Spec):
    """The grid connection, on-site generation and storage, and how they are dispatched."""

    grid_limit_kw: float | None = Field(
        default=None, gt=0, description="Most the grid connection imports, kW (none: any).")
    renewables: list[Renewable] = Field(default_factory=list)
    generators: list[Generator] = Field(default_factory=list)
    batteries: list[Battery] = Field(default_factory=list)
    policy: Literal["cost", "carbon", "peak_shaving"] = Field(
        default="cost", description="What the dispatch minimises: electricity and fuel cost, "
        "carbon, or cost with grid import above import_cap_kw charged at "
        "excess_usd_per_kwh.")
    import_cap_kw: float | None = Field(
        default=None, gt=0, description="peak_shaving: the grid import to stay under, kW.")
    excess_usd_per_kwh: float = Field(
        default=100.0, ge=0, description="peak_shaving: what a kWh imported above the cap "
        "costs (a demand charge or the contract's penalty; the default is an assumption "
        "that makes exceeding the cap a last resort before unmet load).")

    on_shortfall: Literal["report", "cap"] = Field(
        default="report", description="When the site's firm supply (grid_limit_kw, the "
        "renewables' output at the hour, the generators' power; not the batteries, whose "
        "charge the dispatch decides after the run) cannot carry the facility: report the "
        "shortfall as unmet load, or cap the GPUs at run time through the power-capping "
        "controller (fleet.power_capping kind controller) so the IT load fits it.")

    @model_validator(mode="after")
    def _cap(self) -> Supply:
        if self.policy == "peak_shaving" and self.import_cap_kw is None:
            raise ValueError("policy peak_shaving needs import_cap_kw")
        if self.on_shortfall == "cap" and self.grid_limit_kw is None:
            raise ValueError("on_shortfall cap needs grid_limit_kw (without a grid limit "
                             "the supply has no shortfall to cap)")
        names = [x.name for x in (*self.renewables, *self.generators, *self.batteries)]
        if len(set(names)) != len(names):
            raise ValueError(f"supply names must be unique, got {names}")
        return self
