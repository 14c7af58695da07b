"""One simulated run in three stages: build (scenario -> RunModel), run (SimPy ->
RunRecord), account (-> Results). `simulate` chains them for callers that want tables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dcsim.engine.account import Results, account
from dcsim.engine.build import RunModel, build, kv_capacity_tokens
from dcsim.engine.context import Context
from dcsim.engine.run import RunRecord, run
from dcsim.profiles.store import ProfileStore
from dcsim.references import scenario_catalog
from dcsim.scenario import Scenario

__all__ = ["Context", "Results", "RunModel", "RunRecord", "account", "build",
           "kv_capacity_tokens", "run", "simulate"]


def simulate(s: Scenario, base_dir: Path | None = None, store: ProfileStore | None = None,
             coalesce: bool = True, progress: Callable[[float], None] | None = None,
             context: Context | None = None) -> Results:
    """Build, run and account scenario `s` for simulation.duration_s.

    `context` (catalog, profile store, base folder) is loaded from the scenario when not
    given; `store` replaces its profile store (the optimizer passes the one it built).
    """
    if context is None:
        base = Path(".") if base_dir is None else Path(base_dir)
        context = (Context(scenario_catalog(s), store, base) if store is not None
                   else Context.load(s, base))
    model = build(s, context.with_store(store))
    return account(model, run(model, coalesce, progress))
