"""Sweep files: a base scenario, axes over any of its fields, seeds, and how to sample."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from dcsim.schema_base import Spec

Scalar = float | int | str | bool | None


class Range(Spec):
    """Evenly spaced numbers from start to stop (both included)."""

    start: float
    stop: float
    num: int = Field(ge=2, le=10_000, description="How many values.")
    integer: bool = Field(default=False, description="Round to whole numbers (e.g. replicas).")


class Axis(Spec):
    """One scenario field to vary, with its values or range."""

    path: str = Field(min_length=1, description="Scenario field, dotted: list items by index "
                      "or by name, e.g. `workloads.chat.deployment.power_cap_w` or "
                      "`fleet.racks.0.power_budget_kw`.")
    values: list[Scalar] | None = Field(default=None, min_length=1,
                                        description="The values to try.")
    range: Range | None = Field(default=None, description="Or a range of numbers.")

    @model_validator(mode="after")
    def _one(self) -> Axis:
        if (self.values is None) == (self.range is None):
            raise ValueError("give exactly one of values or range")
        return self


class Grid(Spec):
    """Every combination of the axes' values."""

    kind: Literal["grid"] = "grid"


class RandomSample(Spec):
    """Points drawn uniformly from the axes' values or ranges."""

    kind: Literal["random"] = "random"
    points: int = Field(ge=1, le=100_000, description="Points drawn.")


class LatinHypercube(Spec):
    """A Latin-hypercube sample of the axes (each stratum of each axis used once)."""

    kind: Literal["latin_hypercube"] = "latin_hypercube"
    points: int = Field(ge=1, le=100_000, description="Points; each axis is cut into this "
                        "many strata, each used once.")


class Sobol(Spec):
    """A scrambled Sobol' sequence over the axes: low-discrepancy, so fewer points cover
    a space as evenly as many random ones (scipy.stats.qmc)."""

    kind: Literal["sobol"] = "sobol"
    points: int = Field(ge=1, le=65_536, description="Points: the first of the sequence; "
                        "a power of two keeps its balance properties.")


Sample = Annotated[Grid | RandomSample | LatinHypercube | Sobol, Field(discriminator="kind")]
SAMPLES = {"grid": Grid, "random": RandomSample, "latin_hypercube": LatinHypercube,
           "sobol": Sobol}


MAX_RUNS = 100_000  # points x seeds of one sweep


class SweepSpec(Spec):
    """A sweep file: the base scenario, axes, how to sample them, seeds."""

    name: str = Field(min_length=1)
    base: str = Field(description="Base scenario file, relative to the sweep file.")
    axes: list[Axis] = Field(min_length=1)
    seeds: list[int] = Field(default=[1], min_length=1,
                             description="Each point runs once per seed (simulation.seed).")
    sample: Sample = Field(default_factory=Grid)
    sample_seed: int = Field(default=0, ge=0, lt=2**63,
                             description="Seed of random, Latin-hypercube and Sobol' draws.")

    @model_validator(mode="after")
    def _bounded(self) -> SweepSpec:
        # counted before anything is built: a grid of 10^24 points must not be allocated
        points = 1
        if isinstance(self.sample, Grid):
            for a in self.axes:
                points *= len(a.values) if a.values is not None else a.range.num  # type: ignore[union-attr]
        else:
            points = self.sample.points
        runs = points * len(self.seeds)
        if runs > MAX_RUNS:
            raise ValueError(f"the sweep has {runs:.3g} runs (points x seeds); at most "
                             f"{MAX_RUNS:,}: sample (random or latin_hypercube) instead")
        return self
