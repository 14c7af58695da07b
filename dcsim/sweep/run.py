"""Run a sweep's points in local worker processes or on a Dask cluster; collect one table.

Each point x seed writes its own results folder (`points/<id>/`, the same files as
`dcsim run`). A point whose folder holds a summary is done and skipped when the sweep
runs again; a point that fails is recorded with its error and the others go on.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

from dcsim import __version__, yamlfile
from dcsim.errors import DcsimError, Problem
from dcsim.output import MARKER, atomic_file, clean_stale_temps, plain_json, write_run
from dcsim.references import check_references
from dcsim.replications import point_intervals
from dcsim.scenario import load_scenario, parse_yaml, scenario_from_data
from dcsim.summary import RunSummary
from dcsim.sweep.points import check, field_title, point_id
from dcsim.sweep.spec import Scalar, SweepSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """One point and seed of a sweep: its axis values, scenario data and results folder."""

    point: str
    seed: int
    values: dict[str, Scalar]
    data: dict  # the point's scenario
    out: str  # its results folder
    base_dir: str


def load_sweep(path: Path) -> tuple[SweepSpec, list[Task], Path]:
    """Read the sweep file and check every point before anything runs."""
    from pydantic import ValidationError

    from dcsim.validation import pydantic_problems

    raw = parse_yaml(_read(path), str(path))
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise DcsimError(pydantic_problems(exc, SweepSpec, str(path))) from None
    base_path = (path.parent / spec.base).resolve()
    if not base_path.is_file():
        raise DcsimError(Problem("base", spec.base, "a scenario file (relative to the sweep "
                                 "file)", str(path)))
    base = load_scenario(base_path)
    combos = check(spec, base, str(path))
    tasks = []
    for combo, data in combos:
        for seed in spec.seeds:
            d = {**data, "simulation": {**data["simulation"], "seed": seed}}
            pid = point_id(combo)
            tasks.append(Task(pid, seed, dict(zip([a.path for a in spec.axes], combo,
                                                  strict=True)), d, f"points/{pid}-seed{seed}",
                              str(base_path.parent)))
    problems = check_references(scenario_from_data(tasks[0].data), base_path.parent)
    if problems:
        raise DcsimError(problems)
    return spec, tasks, base_path


def _read(path: Path) -> str:
    from dcsim.csvfiles import read_text

    return read_text(path, "sweep file")


def run_task(task: Task, root: str) -> dict[str, object]:
    """Run one point (in a worker): write its folder; return its row of the sweep table."""
    from dcsim.runner import run_tables

    t0 = time.perf_counter()
    row: dict[str, object] = {"point": task.point, "seed": task.seed, **task.values}
    try:
        s = scenario_from_data(task.data)
        problems = check_references(s, Path(task.base_dir))
        if problems:
            raise DcsimError(problems)
        tables, summary = run_tables(s, Path(task.base_dir))
        write_run(Path(root) / task.out, s, tables, summary.to_dict(), force=True)
        row |= {"status": "finished", "error": "", **metrics(summary)}
    except Exception as exc:  # a failed point is recorded, the sweep goes on
        row |= {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        log.debug("point %s failed:\n%s", task.point, traceback.format_exc())
    row["wall_s"] = time.perf_counter() - t0
    return row


def metrics(summary: RunSummary) -> dict[str, float]:
    """The sweep table's metrics from a run summary: totals, and per service and job."""
    tot = summary.total
    out = {k: getattr(tot, k) for k in ("it_energy_kwh", "facility_kwh", "effective_pue",
                                        "carbon_kg", "cost_usd", "gpu_hours",
                                        "requests_finished")}
    for name, v in summary.services.items():
        for k in ("throughput_req_s", "ttft_p99_s", "tpot_p99_s", "e2e_p99_s", "ttft_p50_s",
                  "slo_attainment", "energy_kwh", "j_per_output_token"):
            out[f"{name}/{k}"] = getattr(v, k)
    for j in summary.jobs:
        for k in ("runtime_s", "goodput", "restarts"):
            out[f"{j.job}/{k}"] = getattr(j, k)
    return {k: float(v) if v is not None else float("nan") for k, v in out.items()}


def run_sweep(path: Path, out: Path, workers: int, scheduler: str | None = None,
              timeout_s: float = 10.0, progress: Callable[[int, int], None] | None = None,
              loaded: tuple[SweepSpec, list[Task], Path] | None = None) -> pd.DataFrame:
    """Run every point not yet done; write sweep.parquet and sweep.json; return the table.
    `loaded`: what load_sweep(path) returned, if the caller has it already."""
    spec, tasks, base = loaded or load_sweep(path)
    _claim(out)
    with atomic_file(out / "sweep.yaml") as tmp:
        tmp.write_text(yamlfile.dump(spec.model_dump(mode="json")))
    done = [t for t in tasks if (out / t.out / "summary.json").is_file()]
    finished = {(t.point, t.seed) for t in done}
    todo = [t for t in tasks if (t.point, t.seed) not in finished]
    rows = [_finished_row(t, out) for t in done]
    if progress:
        progress(len(rows), len(tasks))
    runner = _dask(todo, out, scheduler, timeout_s) if scheduler else _local(todo, out, workers)
    for row in runner:
        rows.append(row)
        if progress:
            progress(len(rows), len(tasks))
    table = pd.DataFrame(rows).sort_values(["point", "seed"]).reset_index(drop=True)
    with atomic_file(out / "sweep.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_file(out / "sweep_points.parquet") as tmp:
        point_intervals(table, [a.path for a in spec.axes]).to_parquet(tmp, index=False)
    failed = table[table["status"] == "failed"]
    with atomic_file(out / "sweep.json") as tmp:
        tmp.write_text(plain_json({
            "name": spec.name, "base": str(base), "axes": [a.path for a in spec.axes],
            "axis_titles": _titles(base, [a.path for a in spec.axes]),
            "points": len(tasks), "finished": int((table["status"] == "finished").sum()),
            "failed": len(failed), "skipped_as_done": len(done),
            "errors": dict(zip(failed["point"], failed["error"], strict=True))}))
    return table


def _titles(base: Path, paths: list[str]) -> dict[str, str]:
    """Per axis, its field's description (the report's axis titles)."""
    s = load_scenario(base)
    return {p: field_title(s, p) for p in paths}


def _claim(out: Path) -> None:
    """Make `out` this sweep's folder: a new or empty folder, or one a sweep wrote before
    (it resumes); never a file or a folder of other files. Stale temporary files go."""
    if out.exists() and not (out.is_dir() and (
            (out / MARKER).is_file() or not any(out.iterdir()))):
        raise DcsimError(Problem("--out", str(out), "a new or empty folder, or a sweep folder "
                                 "to resume (this one holds files dcsim did not write)"))
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out)
    clean_stale_temps(out / "points")
    if not (out / MARKER).is_file():
        with atomic_file(out / MARKER) as tmp:
            tmp.write_text(plain_json({"dcsim_version": __version__, "summary": "sweep.json"}))


def _finished_row(t: Task, out: Path) -> dict[str, object]:
    path = out / t.out / "summary.json"
    summary = RunSummary.from_dict(json.loads(path.read_text()), str(path))
    return {"point": t.point, "seed": t.seed, **t.values, "status": "finished", "error": "",
            **metrics(summary), "wall_s": float("nan")}


def _local(todo: list[Task], out: Path, workers: int) -> Iterator[dict[str, object]]:
    if not todo:
        return
    # spawn: a clean interpreter per worker (no inherited threads or locks)
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=get_context("spawn")) as ex:
        futures = [ex.submit(run_task, t, str(out)) for t in todo]
        for f in as_completed(futures):
            yield f.result()


def _dask(todo: list[Task], out: Path, address: str, timeout_s: float
          ) -> Iterator[dict[str, object]]:
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError:
        raise DcsimError(Problem("--scheduler", address, "dask distributed installed "
                                 "(pip install 'dcsim[dist]')")) from None
    try:
        client = Client(address, timeout=timeout_s)
    except (OSError, TimeoutError) as exc:
        raise DcsimError(Problem("--scheduler", address, f"a reachable Dask scheduler (no "
                                 f"answer within {timeout_s:g} s: {exc})")) from None
    with client:
        futures = [client.submit(run_task, t, str(out.resolve()), pure=False) for t in todo]
        for f in dask_completed(futures):
            yield f.result()
