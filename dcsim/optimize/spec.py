"""Scenario section `optimize`: horizon, demand forecast, candidate configurations, solver."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dcsim.schema_base import Spec

OBJECTIVES = ("energy", "cost", "carbon")


class Candidates(Spec):
    """Replica configurations the optimizer may pick from (every combination that fits)."""

    gpus: list[str] | None = Field(
        default=None, description="GPU catalog ids; default: every GPU type in fleet.racks.")
    tp: list[int] = Field(default=[1, 2, 4, 8], min_length=1,
                          description="Tensor-parallel degrees (each must divide a server).")
    power_cap_fractions: list[float] = Field(
        default=[1.0, 0.85, 0.7, 0.55], min_length=1,
        description="GPU power limits as fractions of the GPU's maximum limit (1.0 = "
        "default limit); clipped up to the GPU's lowest limit.")
    max_num_seqs: list[int] = Field(default=[64, 256], min_length=1,
                                    description="Batch-size limits to consider.")

    @model_validator(mode="after")
    def _positive(self) -> Candidates:
        if any(t < 1 for t in self.tp) or any(b < 1 for b in self.max_num_seqs):
            raise ValueError("tp and max_num_seqs values must be >= 1")
        if any(not 0 < f <= 1 for f in self.power_cap_fractions):
            raise ValueError("power_cap_fractions must lie in (0, 1]")
        return self


class OptimizeSpec(Spec):
    """The optimize section of a scenario: objective, horizon and periods, candidates,
    limits on change, solver options and the simulation check."""

    objective: Literal["energy", "cost", "carbon"] = Field(
        default="energy", description="Facility energy, electricity cost, or carbon.")
    period_s: float = Field(default=3600.0, gt=0, description="Length of one planning period, s.")
    periods: int | None = Field(default=None, ge=1, le=8760, description="Periods in the "
                                "horizon; default: simulation.duration_s / period_s, rounded up.")
    demand_per_s: dict[str, list[float]] | None = Field(
        default=None, description="Forecast request rate per service name and period, req/s; "
        "default: the mean rate of each service's arrival process in each period.")
    candidates: Candidates = Candidates()
    disaggregate: list[str] = Field(
        default_factory=list, max_length=1000, description="Services (by name) the plan "
        "may split into a prefill pool and a decode pool (each its own GPU type, tp, power "
        "limit and replicas, the KV cache moved between them over the NICs) where that "
        "costs less than serving them colocated.")
    min_replicas: int = Field(default=1, ge=0, description="Replicas each service keeps in "
                              "every period (availability).")
    cold_starts: bool = Field(
        default=True, description="Charge each replica a period adds its cold start (the "
        "lead dcsim run takes: boot where servers switch off, weights at the file system's "
        "per-client bandwidth, warm-up): it loads in the last lead of the period before, "
        "on GPUs free then, drawing idle power where servers switch off. Links the "
        "periods into one MILP.")
    max_replica_change: int | None = Field(
        default=None, ge=0, description="Most replicas a service may start from one period "
        "to the next (reconfiguration limit); none: unlimited.")
    utilization_target: float = Field(
        default=0.9, gt=0, le=1, description="Plan replicas for at most this share of the "
        "rate at which the queueing model says the SLO just holds (headroom for bursts).")
    shift_training: bool = Field(
        default=False, description="Let the plan delay a training job's start to a later "
        "period boundary (within its deadline), e.g. into hours of low carbon intensity or "
        "price.")
    time_limit_s: float = Field(default=60.0, gt=0, description="Solver time limit, s.")
    mip_gap: float = Field(default=0.01, ge=0, le=1, description="Relative MIP gap to stop at.")
    check_by_simulation: bool = Field(
        default=True, description="Simulate one replica of every configuration a plan uses at "
        "its planned rate; lower the rate where an SLO fails, and solve again.")
    verify_duration_s: float = Field(
        default=600.0, gt=0, description="Simulated seconds per period when --verify replays "
        "the plan.")
    verify_mode: Literal["periods", "continuous", "both"] = Field(
        default="periods", description="What --verify simulates: periods (each period alone "
        "for verify_duration_s), continuous (plan.yaml: the whole horizon as one run with "
        "its cold starts, drains and servers switching), or both. A continuous run "
        "simulates every request of the horizon: minutes for a day at tens of req/s.")


class SizingSpec(Spec):
    """The sizing section of a scenario (`dcsim size`): what "least" means, and unit
    costs that replace the shipped ones (dcsim/catalog/data/costs.csv)."""

    objective: Literal["gpus", "capex"] = Field(
        default="gpus", description="Fewest GPUs, or least server capital cost (then the "
        "least power among them).")
    capex_usd: dict[str, float] = Field(
        default_factory=dict, description="Unit capital cost per item of the cost table, "
        "USD: a server catalog id (per server), `rack` (per rack), `facility` (per kW of "
        "the fleet's nameplate power).")
    amortisation_years: dict[str, float] = Field(
        default_factory=dict, description="Years over which an item's capital cost is "
        "spread (same items as capex_usd).")

    @model_validator(mode="after")
    def _positive(self) -> SizingSpec:
        for name, d in (("capex_usd", self.capex_usd),
                        ("amortisation_years", self.amortisation_years)):
            bad = {k: v for k, v in d.items() if not v > 0 or v != v or v == float("inf")}
            if bad:
                raise ValueError(f"{name} values must be positive finite numbers: {bad}")
        return self
