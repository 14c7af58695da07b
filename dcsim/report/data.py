"""What a results folder holds, read back as tidy tables (the report's only input)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from dcsim.errors import DcsimError, Problem
from dcsim.summary import RunSummary

TABLES = ("requests", "timeseries", "replicas", "power", "budgets", "jobs", "failures",
          "checkpoints", "cluster", "plan", "periods", "verify", "verify_jobs", "sweep",
          "replications_power", "replications_latency", "replications_busy",
          "sizing_fleet", "sizing_check", "sizing_capex", "sizing_growth", "sizing_runout",
          "sizing_periods", "supply", "power_trace", "power_trace_phases", "scaling",
          "capping", "verify_continuous", "links")


@dataclass
class Results:
    """One folder of `dcsim run` (kind "run"), `dcsim optimize` ("optimize") or
    `dcsim sweep` ("sweep")."""

    path: Path
    kind: str
    summary: dict
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    slos: dict[str, dict[str, float]] = field(default_factory=dict)  # service -> bound, s
    run: RunSummary | None = None  # a run folder's summary.json as typed records
    resolved: dict = field(default_factory=dict)  # scenario.resolved.yaml, parsed

    def has(self, name: str) -> bool:
        """The folder holds a non-empty table of that name."""
        return name in self.tables and len(self.tables[name]) > 0


def load(path: Path) -> Results:
    """Read a results folder; a clear error when it is not one."""
    path = Path(path)
    kinds = {"summary.json": "run", "optimize.json": "optimize", "sweep.json": "sweep",
             "sizing.json": "size"}
    found = [(name, kind) for name, kind in kinds.items() if (path / name).is_file()]
    if not path.is_dir() or not found:
        raise DcsimError(Problem("DIR", str(path), "a results folder of dcsim run, optimize, "
                                 "sweep or size (with summary.json, optimize.json, sweep.json "
                                 "or sizing.json)"))
    name, kind = found[0]
    try:
        summary = json.loads((path / name).read_text())
    except UnicodeDecodeError:
        raise DcsimError(Problem(str(path / name), "not UTF-8 text",
                                 "the summary dcsim wrote")) from None
    except json.JSONDecodeError as exc:
        raise DcsimError(Problem(str(path / name), f"unreadable JSON ({exc.msg})",
                                 "the summary dcsim wrote")) from None
    tables = {t: _table(path / f"{t}.parquet") for t in TABLES
              if (path / f"{t}.parquet").is_file()}
    run = RunSummary.from_dict(summary, str(path / name)) if kind == "run" else None
    resolved = _resolved(path / "scenario.resolved.yaml")
    return Results(path, kind, summary, tables, _slos(resolved, path / "scenario.resolved.yaml"),
                   run, resolved)


def _table(path: Path) -> pd.DataFrame:
    """A results table; a damaged or foreign file is a DcsimError naming it."""
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several kinds for a damaged file
        raise DcsimError(Problem("", str(path), f"a parquet table dcsim wrote (it cannot be "
                                 f"read: {type(exc).__name__})")) from None


def _resolved(path: Path) -> dict:
    """The resolved scenario the folder holds ({} when it has none)."""
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        raise DcsimError(Problem("", str(path), "the resolved scenario dcsim wrote "
                                 "(it cannot be read)")) from None
    if not isinstance(data, dict):
        raise DcsimError(Problem("", str(path), "the resolved scenario dcsim wrote "
                                 "(it cannot be read)"))
    return data


def _slos(resolved: dict, path: Path) -> dict[str, dict[str, float]]:
    try:
        return slo_bounds(resolved.get("workloads", []))
    except (AttributeError, KeyError, TypeError, ValueError):
        raise DcsimError(Problem("", str(path), "the resolved scenario dcsim wrote "
                                 "(it cannot be read)")) from None


def slo_bounds(workloads: list[dict]) -> dict[str, dict[str, float]]:
    """Per inference service (workloads as a scenario's JSON), its p99 SLO bounds by
    metric (ttft, tpot, e2e), s: what the latency figure marks."""
    out = {}
    for w in workloads:
        if w.get("kind") == "inference":
            slo = w.get("slo") or {}
            out[str(w["name"])] = {k.removesuffix("_p99_s"): float(v) for k, v in
                                   slo.items() if v is not None and k.endswith("_p99_s")}
    return out
