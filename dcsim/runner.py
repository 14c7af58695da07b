"""One simulated run as the tables and summary `dcsim run` writes (CLI and sweeps share it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pandas as pd

from dcsim.engine.context import Context
from dcsim.engine.simulation import simulate
from dcsim.power_summary import request_carbon_and_cost
from dcsim.results import summarize
from dcsim.scenario import Scenario
from dcsim.summary import RunSummary


def run_tables(s: Scenario, base_dir: Path, coalesce: bool = True,
               progress: Callable[[float], None] | None = None,
               context: Context | None = None
               ) -> tuple[dict[str, pd.DataFrame], RunSummary]:
    """Simulate `s`; return the results tables (by file stem) and the summary."""
    result = simulate(s, base_dir, coalesce=coalesce, progress=progress, context=context)
    summary = summarize(s, result.requests, result.replicas, result.provenance, result.power,
                        result.budgets, result.jobs, result.cluster_pods, result.cluster)
    tables = {"requests": request_carbon_and_cost(result.requests, result.power),
              "timeseries": result.timeseries, "replicas": result.replicas,
              "power": result.power, "budgets": result.budgets}
    if not result.jobs.empty:
        tables.update(jobs=result.jobs, failures=result.failures,
                      checkpoints=result.checkpoints, links=result.links)
    if not result.scaling.empty:  # replicas started, drained, limits changed
        tables["scaling"] = result.scaling
        if result.jobs.empty:
            tables["links"] = result.links  # weight loads on the file system
    if "pool" in result.replicas and "links" not in tables:
        tables["links"] = result.links  # KV transfers' ports and uplinks
    if result.capping_domains:  # the power-capping controller ran
        tables["capping"] = result.capping
        summary = replace(summary, power_capping=result.capping_domains)
    if not result.cluster_pods.empty:
        tables["cluster_pods"] = result.cluster_pods
    if not result.cluster.empty:
        tables["cluster"] = result.cluster
    if s.simulation.power_trace is not None and not result.jobs.empty:
        from dcsim.power_trace import trace

        ctx = context or Context.load(s, base_dir)
        tables["power_trace_phases"], tables["power_trace"], entry = trace(s, ctx, tables)
        summary = replace(summary, power_trace=entry)
    if s.facility.supply is not None:  # where the meter's power came from
        from dcsim.supply.apply import supply_tables

        tables["supply"], entry = supply_tables(result.power, s.facility, base_dir)
        summary = replace(summary, supply=entry)
    return tables, summary
