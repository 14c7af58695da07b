"""Scenario files: one YAML document validated by frozen pydantic models.

Units are in field names (``power_budget_kw``, ``duration_s``) and descriptions.
``load_scenario`` reads a file and returns a ``Scenario`` or raises ``DcsimError``
whose problems name the file, the field path, the bad value and what is expected.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from dcsim.catalog.specs import GpuSpec, ModelSpec, ServerSpec
from dcsim.engine.gang import Policy
from dcsim.errors import DcsimError, Problem
from dcsim.hardware.capping_spec import PowerCapping, StaticCapping
from dcsim.optimize.spec import OptimizeSpec, SizingSpec
from dcsim.schema_base import Spec
from dcsim.supply.spec import Supply
from dcsim.validation import pydantic_problems
from dcsim.workloads.spec import WorkloadSpec


class SyntheticWeather(Spec):
    """Outdoor dry-bulb temperature as a yearly plus a daily sinusoid (a stated assumption)."""

    kind: Literal["synthetic"] = "synthetic"
    mean_c: float = Field(default=15.0, ge=-40, le=40, description="Annual mean, deg C.")
    seasonal_amplitude_c: float = Field(default=10.0, ge=0, le=30, description="deg C.")
    daily_amplitude_c: float = Field(default=5.0, ge=0, le=20, description="deg C.")
    warmest_day_of_year: int = Field(default=200, ge=1, le=366)


class WeatherFile(Spec):
    """Hourly weather CSV: columns timestamp, dry_bulb_c."""

    kind: Literal["file"] = "file"
    path: str = Field(description="CSV path, relative to the scenario file.")


WeatherSpec = Annotated[SyntheticWeather | WeatherFile, Field(discriminator="kind")]


class Cooling(Spec):
    """Modelled cooling and electrical losses (replaces the constant PUE).

    Defaults are typical engineering values, not measurements of any site: set yours.
    """

    medium: Literal["air", "liquid", "by_server"] = Field(
        default="air", description="Air (CRAH, cold chilled water), direct liquid (warm "
        "water), or by_server: each server type's liquid_cooled_fraction of its heat to a "
        "warm-water loop and the rest to air (a hall of rack-scale liquid-cooled systems "
        "beside air-cooled ones)."
    )
    supply_water_c: float | None = Field(
        default=None, ge=0, le=45,
        description="Chilled / facility water supply, deg C (default 10 air, 30 liquid; "
        "by_server: the air loop's, default 10).",
    )
    liquid_supply_water_c: float = Field(
        default=30.0, ge=0, le=45, description="by_server: the warm-water loop's supply, "
        "deg C (cold-plate loops run at 25-45).")
    approach_k: float = Field(default=5.0, ge=0, le=20,
                              description="Cooling tower / dry cooler approach, K.")
    carnot_fraction: float = Field(default=0.5, ge=0.1, le=1, description="Chiller COP as a "
                                   "share of the Carnot COP (0.1-1; real chillers reach "
                                   "0.3-0.6, and below 0.1 the PUE runs away).")
    max_cop: float = Field(default=12.0, ge=1, le=50, description="Upper bound on the "
                           "chiller COP (1-50).")
    fan_pump_fraction: float | None = Field(
        default=None, ge=0, le=0.5,
        description="CRAH/CDU fans and pumps as a share of IT power (default 0.05 air, 0.02 "
        "liquid).",
    )
    ups_efficiency: float = Field(default=0.96, gt=0.5, le=1,
                                  description="UPS efficiency at full load.")
    ups_fixed_loss_fraction: float = Field(
        default=0.01, ge=0, le=0.2,
        description="UPS no-load loss as a share of the facility IT capacity.",
    )
    distribution_loss_fraction: float = Field(
        default=0.015, ge=0, le=0.2, description="Transformers, PDUs and cables, share of IT power."
    )
    weather: WeatherSpec = SyntheticWeather()


class Facility(Spec):
    """The site: PUE or a cooling model, power budget, start time, and grid carbon intensity
    and price (constant or hourly files)."""

    pue: float = Field(
        default=1.3, ge=1.0, le=3.0,
        description="Facility / IT energy (constant). Default 1.3: between hyperscale fleets "
        "(~1.1) and the industry average (~1.57, Uptime Institute 2023-24); set yours.",
    )
    cooling: Cooling | None = Field(
        default=None, description="Model cooling and losses from weather instead of a constant PUE."
    )
    start_time: datetime = Field(
        default=datetime(2025, 1, 1), ge=datetime(1900, 1, 1), le=datetime(2200, 1, 1),
        description="Calendar time of t = 0 (weather, grid series); 1900-2200 (calendar "
        "arithmetic on time series is defined up to 2262).")
    carbon_intensity_file: str | None = Field(
        default=None, description="Hourly CSV: timestamp, g_per_kwh (replaces the constant)."
    )
    electricity_price_file: str | None = Field(
        default=None, description="Hourly CSV: timestamp, usd_per_kwh (replaces the constant)."
    )
    power_budget_kw: float | None = Field(
        default=None, gt=0, description="Facility IT power budget, kW (none = unlimited)."
    )
    carbon_intensity_g_per_kwh: float = Field(
        default=400.0, ge=0,
        description="Grid carbon intensity, gCO2e per kWh (constant; the default is an assumed "
        "round figure for a fossil-heavy grid mix: set your grid's).",
    )
    electricity_price_usd_per_kwh: float = Field(
        default=0.08, ge=0,
        description="Electricity price, USD per kWh (constant; the default is an assumed "
        "round industrial tariff: set yours).",
    )
    supply: Supply | None = Field(
        default=None, description="Grid connection, on-site generation and batteries, and "
        "how they are dispatched (none: the grid supplies everything).")


class ServerGroup(Spec):
    """Servers of one catalog type in a rack."""

    type: str = Field(description="Server catalog id.")
    count: int = Field(ge=1, le=1000, description="Servers of this type in one rack (at most "
                       "1,000: no rack holds more).")


class Rack(Spec):
    """A rack (or `count` identical ones): its row, power budget and servers."""

    name: str = Field(min_length=1)
    row: str = Field(default="row-1", min_length=1, description="Row / PDU the rack hangs off.")
    count: int = Field(default=1, ge=1, le=1_000_000, description="Identical racks of this "
                       "kind (at most a million).")
    power_budget_kw: float = Field(gt=0, description="Power budget of one rack, kW.")
    servers: list[ServerGroup] = Field(min_length=1)

    def names(self) -> list[str]:
        """The racks this entry stands for: its name, or NAME-1 ... NAME-count."""
        return [self.name] if self.count == 1 else [f"{self.name}-{k + 1}"
                                                    for k in range(self.count)]


class Network(Spec):
    """The leaf-spine fabric: servers per leaf, oversubscription, link latency and
    switch-port power."""

    topology: Literal["leaf_spine", "fat_tree"] = Field(
        default="leaf_spine", description="Both are modelled as a two-tier Clos: servers on "
        "leaves, each leaf's uplinks (down / oversubscription) into a non-blocking spine.")
    oversubscription: float = Field(default=1.0, ge=1.0, description="Leaf down/up bandwidth ratio.")
    servers_per_leaf: int = Field(default=16, ge=1)
    switch_port_power_w: float = Field(
        default=15.0, ge=0,
        description="Switch port power when carrying traffic, W (an assumed typical figure for "
        "a 400 Gb/s port with optics; set yours).",
    )
    switch_port_idle_w: float = Field(
        default=10.0, ge=0, description="Switch port power when idle, W (assumed; set yours)."
    )
    link_latency_us: float = Field(
        default=5.0, ge=0, description="Per-step latency of a collective across servers, us "
        "(alpha of the alpha-beta model; a typical RDMA figure, set yours)."
    )


class Storage(Spec):
    """The shared parallel file system (defaults are assumed round figures: set yours)."""

    read_bandwidth_gbyte_s: float = Field(default=100.0, gt=0, description="Aggregate read, GB/s.")
    write_bandwidth_gbyte_s: float = Field(default=50.0, gt=0, description="Aggregate write, GB/s.")
    per_client_gbyte_s: float = Field(default=5.0, gt=0, description="Per-server limit, GB/s.")
    capacity_tb: float = Field(default=1000.0, gt=0, description="Capacity, TB.")


class Row(Spec):
    """A row of racks with a power budget of its own."""

    name: str = Field(min_length=1)
    power_budget_kw: float = Field(gt=0, description="Power budget of the row / PDU, kW.")


class TrainingScheduler(Spec):
    """How the scenario's training jobs queue for and are placed on whole servers."""

    policy: Policy = Field(
        default="fifo", description="fifo: in submission order; priority: higher first; "
        "easy_backfill: FIFO, later jobs may jump ahead if they do not delay the first blocked "
        "job's reserved start (run-time estimates from the profiles, without failures).")
    placement: Literal["topology", "first_fit"] = Field(
        default="topology", description="topology: the fewest leaves (best-fit leaf, then rack); "
        "first_fit: free servers in fleet order.")
    spare_servers: int = Field(
        default=0, ge=0, description="Hot spares per GPU type that training uses: held back "
        "from jobs and swapped in for a failed server.")


# An assumption, stated as such: an 8-GPU server's power-on to OS ready (BMC, firmware
# POST with its memory training, PCIe and NVSwitch bring-up, OS) takes minutes.
SERVER_BOOT_S = 300.0


class Fleet(Spec):
    """Racks, rows, network, storage, the training scheduler and what unused servers do."""

    racks: list[Rack] = Field(default_factory=list, description="Empty: sized from deployments.")
    rows: list[Row] = Field(default_factory=list, description="Row budgets (optional).")
    network: Network = Network()
    storage: Storage = Storage()
    training_scheduler: TrainingScheduler = TrainingScheduler()
    unused_servers: Literal["idle", "switched_off"] = Field(
        default="idle", description="Servers with no replica and, at the time, no training "
        "job: stay powered at idle, or are switched off and draw nothing (hot spares stay "
        "on). Switched-off servers do not count in budgets. A serving server whose "
        "replicas a service's scaling stopped switches off server_off_after_s later and "
        "boots (server_boot_s) when one is needed again; training servers switch at once.")
    server_boot_s: float = Field(
        default=SERVER_BOOT_S, ge=0, le=3600, description="Power-on to ready of a switched-"
        "off server, s, drawing idle power meanwhile (an assumption unless set: GPU servers "
        "take minutes through firmware POST and OS boot).")
    server_off_after_s: float = Field(
        default=600.0, ge=0, le=86400, description="A serving server with no replica left "
        "running switches off after this long idle (switched_off only), s.")
    power_capping: PowerCapping = Field(
        default=StaticCapping(), description="How budgets are enforced: static (worst-case "
        "limits for the whole run) or controller (limits lowered at run time when a "
        "domain's measured draw nears its budget).")

    @model_validator(mode="after")
    def _unique_names(self) -> Fleet:
        # a rack with count > 1 is expanded to NAME-1, NAME-2, ...: those names count too
        racks = [n for r in self.racks for n in r.names()]
        for what, names in (("rack", racks), ("row", [r.name for r in self.rows])):
            dup = sorted(n for n, k in Counter(names).items() if k > 1)
            if dup:
                raise ValueError(f"{what} names must be unique (racks with count > 1 are "
                                 f"named NAME-1, NAME-2, ...); repeated: {dup[:5]}")
        return self


class CatalogOverrides(Spec):
    """GPUs, servers and models to add to or override in the built-in catalog."""

    gpus: list[GpuSpec] = Field(default_factory=list)
    servers: list[ServerSpec] = Field(default_factory=list)
    models: list[ModelSpec] = Field(default_factory=list)


MAX_DURATION_S = 10 * 365.25 * 86400
MAX_REQUESTS = 5e7  # of one service in one run: ~15 GB of request state at ~300 B each
MAX_BUCKETS = 1_000_000


class PowerTrace(Spec):
    """A window in which training jobs' power is traced phase by phase (compute, pipeline
    bubble, exposed all-reduce, checkpoint, restart) instead of as bucket means."""

    start_s: float = Field(ge=0, description="Start of the window, s.")
    duration_s: float = Field(gt=0, le=86400.0, description="Length of the window, s "
                              "(at most a day: one record per phase change of each job).")
    ramp_window_s: float = Field(
        default=1.0, gt=0, description="Ramps are changes of the mean power over windows "
        "of this length, per second (what a meter sampling this often sees).")
    grid_ramp_kw_per_s: float | None = Field(
        default=None, gt=0, description="Fastest change of grid import the connection "
        "allows, kW/s: the trace says what battery keeps the import within it.")


class Simulation(Spec):
    """How long to simulate, warm-up, seed and time-bucket width."""

    duration_s: float = Field(default=3600.0, gt=0, le=MAX_DURATION_S,
                              description="Simulated time, s (at most 10 years).")
    warmup_s: float = Field(default=0.0, ge=0, description="Excluded from statistics, s.")
    seed: int = Field(default=0, ge=0, lt=2**63, description="Root of every random stream "
                      "(0 to 2^63 - 1).")
    time_bucket_s: float = Field(default=60.0, ge=1e-3, description="Width of time-series "
                                 f"buckets, s (at least 1 ms; at most {MAX_BUCKETS:,} buckets "
                                 "in a run, whose series are held in memory per replica).")
    power_trace: PowerTrace | None = Field(
        default=None, description="Trace training power phase by phase in this window.")

    @model_validator(mode="after")
    def _warmup_short(self) -> Simulation:
        if self.warmup_s >= self.duration_s:
            raise ValueError(f"warmup_s ({self.warmup_s}) must be below duration_s "
                             f"({self.duration_s})")
        if self.duration_s / self.time_bucket_s > MAX_BUCKETS:
            raise ValueError(f"duration_s / time_bucket_s = {self.duration_s / self.time_bucket_s:,.0f}"
                             f" buckets; at most {MAX_BUCKETS:,} (make time_bucket_s larger)")
        w = self.power_trace
        if w is not None and w.start_s + w.duration_s > self.duration_s:
            raise ValueError(f"power_trace ends at {w.start_s + w.duration_s:g} s, after the "
                             f"run's duration_s ({self.duration_s:g})")
        return self


class Scenario(Spec):
    """A scenario file: facility, fleet, catalog additions, profiles, workloads, simulation
    and optimizer settings."""

    name: str = Field(default="scenario", min_length=1)
    description: str = ""
    facility: Facility = Facility()
    fleet: Fleet = Fleet()
    catalog: CatalogOverrides = CatalogOverrides()
    profiles: list[str] = Field(
        default_factory=list, description="Extra profile CSVs (relative to the scenario file)."
    )
    workloads: list[WorkloadSpec] = Field(default_factory=list)
    simulation: Simulation = Simulation()
    optimize: OptimizeSpec | None = Field(
        default=None, description="Planning horizon and choices for `dcsim optimize`.")
    sizing: SizingSpec | None = Field(
        default=None, description="What `dcsim size` minimises and the unit costs it uses.")
    # the folder relative paths resolve against: the file's, for a scenario load_scenario
    # read (not a field: two scenarios differing only in it are the same scenario)
    _base_dir: Path | None = PrivateAttr(default=None)

    @property
    def base_dir(self) -> Path | None:
        """The scenario file's folder (None for a scenario built in code)."""
        return self._base_dir

    def with_(self, **changes: object) -> Scenario:
        """This scenario with fields changed by path, as sweep axes and `--set` name them
        (``s.with_(**{"workloads.chat.deployment.replicas": 8})``), validated and
        cross-checked again like a file; its folder kept."""
        from dcsim.references import check_references
        from dcsim.sweep.points import set_path

        data = self.model_dump(mode="json")
        for path, value in changes.items():
            data = set_path(data, path, value, path)  # type: ignore[arg-type]
        out = scenario_from_data(data)
        problems = check_references(out, self._base_dir or Path("."))
        if problems:
            raise DcsimError(problems)
        out._base_dir = self._base_dir
        return out

    @model_validator(mode="after")
    def _unique_names(self) -> Scenario:
        names = [w.name for w in self.workloads]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"workload names must be unique; repeated: {dup}")
        for w in self.workloads:
            rate = getattr(getattr(w, "arrival", None), "rate_per_s", None)
            if rate is not None and rate * self.simulation.duration_s > MAX_REQUESTS:
                raise ValueError(
                    f"workload {w.name}: rate_per_s x duration_s = "
                    f"{rate * self.simulation.duration_s:.3g} requests; at most "
                    f"{MAX_REQUESTS:.0e} in one run (its tables take ~300 bytes a request)")
            steps = getattr(getattr(w, "scaling", None), "steps", None) or []
            if steps and steps[-1].at_s >= self.simulation.duration_s:
                raise ValueError(
                    f"workload {w.name}: scaling.steps[{len(steps) - 1}].at_s "
                    f"({steps[-1].at_s:g}) is beyond the run (simulation.duration_s = "
                    f"{self.simulation.duration_s:g})")
        return self


def parse_yaml(text: str, origin: str) -> object:
    """Load YAML strictly (dcsim.yamlfile: no aliases, no duplicate keys, bounded nesting);
    errors become a Problem with line and column."""
    from dcsim import yamlfile

    try:
        return yamlfile.load(text)
    except yamlfile.StrictYamlError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        raise DcsimError(Problem(where, None, str(exc.problem), origin)) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        raise DcsimError(Problem(where, exc.problem, "valid YAML", origin)) from None
    except yaml.YAMLError as exc:
        raise DcsimError(Problem("", str(exc), "valid YAML", origin)) from None


def scenario_from_data(data: object, origin: str = "") -> Scenario:
    """Validate parsed data as a Scenario (schema only)."""
    if not isinstance(data, dict):
        raise DcsimError(Problem("", type(data).__name__, "a mapping of scenario fields", origin))
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise DcsimError(pydantic_problems(exc, Scenario, origin)) from None


def load_scenario(path: str | Path) -> Scenario:
    """Read, validate and cross-check a scenario file."""
    from dcsim.csvfiles import read_text
    from dcsim.references import check_references  # the catalog checks need the store

    path = Path(path)
    text = read_text(path, "scenario file")
    scenario = scenario_from_data(parse_yaml(text, str(path)), str(path))
    problems = check_references(scenario, path.parent)
    if problems:
        raise DcsimError([Problem(p.path, p.value, p.expected, str(path)) for p in problems])
    scenario._base_dir = path.parent
    return scenario
