"""The Python API: what the commands do, as calls returning DataFrames and figures.

    import dcsim

    s = dcsim.load("scenarios/default.yaml")
    busy = s.with_(**{"workloads.chat.arrival.rate_scale": 2.0})
    r = dcsim.run(busy, seed=1)
    r.summary()                  # one row per inference service
    r.requests, r.power          # the tables `dcsim run` writes, as DataFrames
    r.plot.latency()             # the report's figures, as plotly figures
    plan = dcsim.optimize(s)     # plan.deployments, plan.periods, plan.summary
    need = dcsim.size(s, growth_per_month=0.05, months=24)  # need.fleet, need.runout

Scenarios are the validated, frozen records `dcsim.load` reads; `Scenario.with_`
changes fields by the paths sweep axes use and validates again. Relative paths in a
scenario (traces, profiles) resolve against its file's folder, which `load` records;
a scenario built otherwise resolves them against `base_dir` (default: the current
folder).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from dcsim.scenario import Scenario, load_scenario
from dcsim.summary import RunSummary

if TYPE_CHECKING:  # plotly is imported by the figures themselves, when one is drawn
    import plotly.graph_objects as go


def load(path: str | Path) -> Scenario:
    """Read, validate and cross-check a scenario file (as `dcsim validate` does)."""
    return load_scenario(path)


def _base(s: Scenario, base_dir: str | Path | None) -> Path:
    if base_dir is not None:
        return Path(base_dir)
    return s.base_dir if s.base_dir is not None else Path(".")


def _table(name: str, doc: str) -> property:
    """A Results property: the results table of that file stem."""
    return property(lambda self: self.table(name), doc=doc)


@dataclass(frozen=True)
class Results:
    """One simulated run (and its replications): tables, typed summary, figures."""

    scenario: Scenario
    tables: dict[str, pd.DataFrame]
    record: RunSummary  # the first replication's summary, typed (dcsim.summary)
    replications: dict | None = None  # summary.json's `replications` block, N > 1
    plot: Plots = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "plot", Plots(self))

    def table(self, name: str) -> pd.DataFrame:
        """A results table by its file stem (empty when the run has none of it)."""
        return self.tables.get(name, pd.DataFrame())

    requests = _table("requests", "Per request: times, lengths, status, energy, carbon "
                      "and cost.")
    timeseries = _table("timeseries", "Per replica and time bucket: power, batch, KV use, "
                        "queue.")
    replicas = _table("replicas", "Per replica: energy, idle energy, time in system.")
    power = _table("power", "Per power domain and bucket: IT, cooling and loss power.")
    budgets = _table("budgets", "Per rack, row and facility: budget and worst-case draw.")
    jobs = _table("jobs", "Per training job: start, end, goodput, restarts, energy.")

    def training(self) -> pd.DataFrame:
        """One row per training job: GPUs, finish, goodput, restarts, energy
        (summary.json's `jobs`)."""
        return pd.DataFrame([asdict(j) for j in self.record.jobs])

    def summary(self) -> pd.DataFrame:
        """One row per inference service: throughput, latency percentiles, SLO
        attainment, energy, carbon and cost (summary.json's `services`)."""
        rows = {name: {k: v for k, v in asdict(svc).items() if not isinstance(v, dict)}
                for name, svc in self.record.services.items()}
        return pd.DataFrame.from_dict(rows, orient="index").rename_axis("service")

    def totals(self) -> pd.Series:
        """The run's totals: energy split, effective PUE, carbon, cost, GPUs."""
        return pd.Series(asdict(self.record.total), name="total")

    def intervals(self) -> pd.DataFrame:
        """Per figure path, the mean across replications and its 95 % t-interval (empty
        for a single run)."""
        metrics = (self.replications or {}).get("metrics", {})
        return pd.DataFrame.from_dict(metrics, orient="index",
                                      columns=["mean", "low", "high"]).rename_axis("figure")

    def dispatch(self, supply: dict | None = None) -> pd.DataFrame:
        """Where this run's meter power came from under `supply` (a `facility.supply`
        mapping, validated as the file's; default: the scenario's own), without
        simulating again: one row per dispatch (rule, lp) with its totals."""
        from dcsim.supply.apply import supply_tables

        s = self.scenario if supply is None else self.scenario.with_(
            **{"facility.supply": supply})
        if s.facility.supply is None:
            from dcsim.errors import DcsimError, Problem

            raise DcsimError(Problem("facility.supply", None, "a supply to dispatch (give "
                                     "one, or run a scenario that has one)"))
        _, entry = supply_tables(self.power, s.facility, s.base_dir or Path("."))
        return pd.DataFrame([{"dispatch": k, **entry[k]} for k in ("rule", "lp")])

    def save(self, out: str | Path, force: bool = False) -> Path:
        """Write the folder `dcsim run --out` writes (all or nothing)."""
        from dcsim.output import plain_json, write_run

        record = self.record.to_dict()
        if self.replications is not None:
            record = json.loads(plain_json(record)) | {"replications": self.replications}
        return write_run(Path(out), self.scenario, self.tables, record, force=force)


class Plots:
    """The report's figures of one run, as plotly figures (dcsim.report.figures_run)."""

    def __init__(self, results: Results) -> None:
        self._r = results

    def latency(self) -> go.Figure:
        """TTFT, TPOT and E2E distributions per service, SLO bounds marked (with
        replications: mean curves and 95 % bands)."""
        from dcsim.report import figures_run as fr
        from dcsim.report.data import slo_bounds

        slos = slo_bounds(self._r.scenario.model_dump(mode="json")["workloads"])
        bands = self._r.table("replications_latency")
        return fr.latency_cdfs(self._r.requests, slos, bands if len(bands) else None)

    def power(self) -> go.Figure:
        """Power over time per budgeted domain against its budget."""
        from dcsim.report import figures_run as fr

        return fr.power_vs_budgets(self._r.power, self._r.budgets)

    def energy(self) -> go.Figure:
        """Where the energy went: GPUs, hosts, network, cooling, losses; per workload."""
        from dcsim.report import figures_run as fr

        return fr.energy_breakdown(self._r.record.total, fr.workload_energy(self._r.record))

    def utilisation(self) -> go.Figure:
        """Per replica and bucket: GPU busy share and KV-cache use (heatmaps)."""
        from dcsim.report import figures_run as fr

        return fr.heatmaps(self._r.timeseries)

    def utilisation_bands(self) -> go.Figure:
        """Per service busy share and KV use across replications: mean and 95 % band."""
        from dcsim.report import figures_run as fr

        return fr.busy_bands(self._r.table("replications_busy"))

    def power_bands(self) -> go.Figure:
        """IT and facility power across replications: mean and 95 % band."""
        from dcsim.report import figures_run as fr

        return fr.power_bands(self._r.table("replications_power"))


def run(scenario: Scenario, *, seed: int | None = None, replications: int = 1,
        workers: int | None = None, profile_uncertainty: bool = False,
        base_dir: str | Path | None = None,
        progress: Callable[[float], None] | None = None, step_by_step: bool = False
        ) -> Results:
    """Simulate a scenario as `dcsim run` does: `seed` replaces simulation.seed;
    `replications` N > 1 runs N seeds (the first the scenario's) in `workers` processes
    (default: CPUs - 1) and adds every figure's 95 % interval; `profile_uncertainty`
    also draws the profile's error in each replication. `progress` gets the simulated
    clock (s) of the first; `step_by_step` runs one event per decode step (a check of
    the fast path: same results, slower)."""
    from dcsim import replications as reps
    from dcsim.errors import DcsimError, Problem
    from dcsim.output import plain_json
    from dcsim.runner import run_tables

    s = scenario if seed is None else scenario.with_(**{"simulation.seed": seed})
    base = _base(scenario, base_dir)
    if profile_uncertainty and replications < 2:
        raise DcsimError(Problem("replications", replications, "2 or more with "
                                 "profile_uncertainty (the interval needs draws)"))
    seeds = reps.replication_seeds(s.simulation.seed, replications)
    ctx = reps.context_for(s, base, seeds[0], profile_uncertainty)
    (tables, summary), others = reps.with_replications(
        s, base, seeds, workers or reps.default_workers(),
        lambda: run_tables(s, base, coalesce=not step_by_step, progress=progress,
                           context=ctx), profile_uncertainty)
    if replications < 2:
        return Results(s, tables, summary)
    samples = [reps.sample(json.loads(plain_json(summary.to_dict())), tables), *others]
    block = reps.block(seeds, [x.summary for x in samples], profile_uncertainty)
    tables = tables | reps.band_tables(samples)
    return Results(s, tables, summary, block)


def _frame(name: str, doc: str) -> property:
    """A Plan or Sizing property: its table of that name (empty when it has none)."""
    return property(lambda self: self.tables.get(name, pd.DataFrame()), doc=doc)


@dataclass(frozen=True)
class Plan:
    """What `dcsim optimize` finds: per service and period the deployment, the periods'
    energy, the training jobs' schedule, optimize.json's record, plan.yaml's text."""

    tables: dict[str, pd.DataFrame]
    summary: dict
    files: dict[str, str]

    deployments = _frame("plan", "Per service and period: GPU type, tp, replicas, power "
                         "limit, batch limit.")
    periods = _frame("periods", "Per period: IT and facility power and energy, carbon and "
                     "cost of the plan.")
    jobs = _frame("jobs", "Per training job: power limit, racks, start, end, energy.")


def optimize(scenario: Scenario, *, objective: str | None = None, verify: bool = False,
             quantile: float | None = None, base_dir: str | Path | None = None) -> Plan:
    """Plan as `dcsim optimize` does: `objective` energy | cost | carbon (default the
    scenario's), `verify` replays the plan and the baselines in the simulator,
    `quantile` plans at that quantile of every profile answer's error."""
    from dcsim.optimize.run import run_optimize

    tables, summary, files, _ = run_optimize(scenario, _base(scenario, base_dir), objective,
                                             verify, quantile)
    return Plan(tables, summary, files)


@dataclass(frozen=True)
class Sizing:
    """What `dcsim size` finds: the least fleet, how simulation confirmed it, its money
    and, with growth, when the scenario's site runs out; sizing.json's record."""

    scenario: Scenario
    tables: dict[str, pd.DataFrame]
    summary: dict
    files: dict[str, str]

    fleet = _frame("sizing_fleet", "Per GPU type: GPUs, server type, servers, racks, "
                   "nameplate power.")
    check = _frame("sizing_check", "Per service at its peak: replicas, simulated p99s, SLO "
                   "met, and with one replica fewer.")
    capex = _frame("sizing_capex", "Per item: count, unit and total capital cost, "
                   "amortisation, provenance and source.")
    deployments = _frame("sizing_deployments", "Per service, configuration and period: "
                         "replicas and load.")
    growth = _frame("sizing_growth", "Per month and resource: need, have, what to add.")
    runout = _frame("sizing_runout", "Per resource: have, need now and at the horizon, "
                    "run-out month.")

    def save(self, out: str | Path, force: bool = False) -> Path:
        """Write the folder `dcsim size --out` writes (all or nothing)."""
        from dcsim.output import write_run

        return write_run(Path(out), self.scenario, self.tables, self.summary, "sizing.json",
                         self.files, force=force)


def size(scenario: Scenario, *, growth_per_month: float = 0.0, months: int = 0,
         objective: str | None = None, base_dir: str | Path | None = None) -> Sizing:
    """Size as `dcsim size` does: the least fleet meeting every SLO at peak demand,
    confirmed by simulation; `objective` gpus | capex (default sizing.objective);
    with `months`, size each month of `growth_per_month` growth too."""
    from dcsim.optimize.size_run import run_size

    tables, summary, files = run_size(scenario, _base(scenario, base_dir), growth_per_month,
                                      months, objective)
    return Sizing(scenario, tables, summary, files)


def sweep(path: str | Path, out: str | Path, *, workers: int = 1,
          scheduler: str | None = None) -> pd.DataFrame:
    """Run a sweep file as `dcsim sweep` does (resumable, into `out`); its table."""
    from dcsim.sweep.run import run_sweep

    return run_sweep(Path(path), Path(out), workers, scheduler)
