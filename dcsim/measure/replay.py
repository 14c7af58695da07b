"""`dcsim profile replay`: serve a trace for real, simulate the same trace, compare.

Steps: take requests from an Azure-format trace (optionally clipped lengths and
compressed gaps) and write them as `trace.csv`; serve them on the device
(dcsim.measure.serve); write `scenario.yaml`, one replica of the profiled model on
the profiled device with the profile folder's `points.csv`, and run it exactly as
`dcsim run` does (`sim/`); print per-metric real and simulated figures side by side
(`comparison.csv`). Energy is compared over each side's makespan (first arrival to
last completion), idle gaps included; a CPU profile has no energy and says so.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dcsim import yamlfile
from dcsim.calibration.fit import latencies
from dcsim.catalog import Catalog
from dcsim.errors import DcsimError, Problem
from dcsim.measure import TINY
from dcsim.measure.device_spec import device_entries
from dcsim.measure.serve import serve
from dcsim.measure.timing import open_target
from dcsim.measure.torch_model import build
from dcsim.output import atomic_file, write_run
from dcsim.results import served_energy_j
from dcsim.workloads.traces import load_trace, resolve_trace_path, write_trace

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class ReplayRequest:
    """Options of `dcsim profile replay`: profile folder, trace window, scaling and
    clipping, and the serving loop's limits."""

    profile: Path
    trace: str = "builtin:azure-conv-2023"
    requests: int = 200
    start_row: int = 0
    time_scale: float = 1.0
    max_prompt: int | None = None
    max_output: int | None = None
    max_num_seqs: int = 32
    max_batched_tokens: int = 4096
    device: str = "cuda"
    model: str | None = None
    seed: int = 0
    scheduler: str = "mixed"  # the iteration policy of both the real loop and the simulator


def pick_requests(req: ReplayRequest, base_dir: Path) -> pd.DataFrame:
    """Trace rows to replay: a window of rows, lengths clipped to [1, max], gaps scaled."""
    trace = load_trace(resolve_trace_path(req.trace, base_dir))
    rows = trace.iloc[req.start_row:req.start_row + req.requests].reset_index(drop=True)
    if rows.empty:
        raise DcsimError(Problem("--start-row", req.start_row, f"a row below {len(trace)}"))
    arrival = (rows["arrival_s"] - rows["arrival_s"].iloc[0]) * req.time_scale
    return pd.DataFrame({
        "arrival_s": arrival.round(6),
        "prompt_tokens": rows["prompt_tokens"].clip(1, req.max_prompt),
        "output_tokens": rows["output_tokens"].clip(1, req.max_output)})


def replay(req: ReplayRequest, out: Path, catalog: Catalog, base_dir: Path = Path("."),
           progress: Callable[[int, int], None] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Run the whole check (module docstring); returns the comparison and notes on it."""
    if req.scheduler not in ("mixed", "prefill_first"):
        raise DcsimError(Problem("--scheduler", req.scheduler, "mixed or prefill_first"))
    if req.max_batched_tokens < req.max_num_seqs:  # the simulator's deployment rule, up front
        raise DcsimError(Problem("--max-batched-tokens", req.max_batched_tokens,
                                 f"at least --max-num-seqs ({req.max_num_seqs})"))
    machine = json.loads(_need(req.profile / "machine.json").read_text())
    points = pd.read_csv(_need(req.profile / "points.csv"))
    model_id = _model(req)
    spec = catalog.model(model_id)
    target = open_target(req.device)
    here = target.meter.facts()["gpu"]
    if here != machine["gpu"]:
        raise DcsimError(Problem("--profile", str(req.profile), f"a profile of this device "
                                 f"({here}); it was measured on {machine['gpu']}"))
    reqs = pick_requests(req, base_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_trace(reqs, out / "trace.csv")
    torch.manual_seed(req.seed)
    model = build(spec, target.device, target.dtype).eval()
    real = serve(model, target, reqs, req.max_num_seqs, req.max_batched_tokens, req.seed, progress,
                 req.scheduler)
    with atomic_file(out / "real_requests.csv") as tmp:
        real.requests.to_csv(tmp, index=False)
    scenario = _scenario(req, machine, points, model_id, catalog, out, real.wall_s)
    sim = _simulate(out, scenario)
    table = compare(real.requests, sim["requests"], real_energy_j=real.energy_j,
                    sim_energy_j=_sim_energy(sim, scenario))
    with atomic_file(out / "comparison.csv") as tmp:
        table.to_csv(tmp, index=False)
    facts = {"device": machine["gpu"], "model": model_id, "requests": len(reqs),
             "scheduler": req.scheduler, "iterations": real.iterations, "wall_s": real.wall_s,
             "energy_j": None if math.isnan(real.energy_j) else real.energy_j,
             "energy_method": machine.get("energy_method"), "torch": torch.__version__}
    notes = _notes(points, machine)
    facts["notes"] = notes
    with atomic_file(out / "replay.json") as tmp:
        tmp.write_text(json.dumps(facts, indent=1) + "\n")
    return table, notes


def _notes(points: pd.DataFrame, machine: dict) -> list[str]:
    """What limits the comparison, for the user to read beside it."""
    notes = []
    if (points.loc[points["phase"].isin(["prefill", "decode"]), "mode"] == "graph").any():
        notes.append("the profile timed inference as CUDA graphs while this loop runs eagerly "
                     "(kernel launch overhead is in the real figures only): profile with "
                     "--no-graphs for a like-for-like check")
    if machine.get("energy_method") == "none":
        notes.append("no energy counter on this device: energy is not compared")
    return notes


def _need(path: Path) -> Path:
    if not path.is_file():
        raise DcsimError(Problem("--profile", str(path.parent), f"a folder `dcsim profile` "
                                 f"wrote (no {path.name} there)"))
    return path


def _model(req: ReplayRequest) -> str:
    """The full model (with embedding and head) of the profile folder, or the one asked."""
    models = pd.read_csv(_need(req.profile / "models.csv"))
    full = models[models["includes_embedding_and_head"].astype(str).str.lower() == "true"]
    names = list(full["model"])
    if req.model is not None:
        if req.model not in names:
            raise DcsimError(Problem("--model", req.model, f"a full model of the profile: {names}"))
        return req.model
    if len(names) != 1:
        raise DcsimError(Problem("--model", None, f"one of the profile's full models {names} "
                                 "(a layer slice cannot generate tokens)"))
    return names[0]


def _scenario(req: ReplayRequest, machine: dict, points: pd.DataFrame, model_id: str,
              catalog: Catalog, out: Path, wall_s: float) -> dict:
    gpus, servers, gpu_id = device_entries(machine, points, catalog)
    profile_file = req.profile / "points.csv"
    if points["energy_j"].isna().any():  # timing only: the simulator needs some energy
        profile_file = out / "timing_points.csv"
        with atomic_file(profile_file) as tmp:
            points.assign(energy_j=points["energy_j"].fillna(0.0),
                          energy_method="none (filled with 0 for a timing-only replay)"
                          ).to_csv(tmp, index=False)
    models = [TINY.model_dump()] if model_id == TINY.id else []
    return {
        "name": "replay-check",
        "description": f"Replay check of {model_id} on {machine['gpu']} (dcsim profile replay).",
        "catalog": {"gpus": gpus, "servers": servers, "models": models},
        "profiles": [os.path.relpath(profile_file.resolve(), out.resolve())],
        "fleet": {"racks": [{"name": "bench", "power_budget_kw": 2 * servers[0]["max_power_w"] / 1e3,
                             "servers": [{"type": servers[0]["id"], "count": 1}]}]},
        "workloads": [{
            "kind": "inference", "name": "replay", "model": model_id,
            "arrival": {"kind": "trace", "path": "trace.csv"},
            "deployment": {"gpu": gpu_id, "tp": 1, "replicas": 1, "max_num_seqs": req.max_num_seqs,
                           "max_batched_tokens": req.max_batched_tokens, "chunked_prefill": False,
                           "scheduler": req.scheduler},
        }],
        # long enough for a simulator slower than the device to finish every request
        "simulation": {"duration_s": float(math.ceil(3 * wall_s + 10)), "seed": req.seed,
                       "time_bucket_s": 1.0},
    }


def _simulate(out: Path, scenario: dict) -> dict[str, pd.DataFrame]:
    from dcsim.runner import run_tables
    from dcsim.scenario import load_scenario

    path = out / "scenario.yaml"
    with atomic_file(path) as tmp:
        tmp.write_text(yamlfile.dump(scenario))
    s = load_scenario(path)
    tables, summary = run_tables(s, out)
    write_run(out / "sim", s, tables, summary.to_dict(), force=True)
    return tables


def _sim_energy(sim: dict[str, pd.DataFrame], scenario: dict) -> float:
    """Simulated device energy from the first arrival to the last completion."""
    idle_w = float(scenario["catalog"]["gpus"][0]["idle_power_w"])
    return served_energy_j(sim["replicas"], sim["requests"], idle_w,
                           scenario["simulation"]["duration_s"])[0]


def compare(real: pd.DataFrame, sim: pd.DataFrame, real_energy_j: float, sim_energy_j: float
            ) -> pd.DataFrame:
    """Per metric: the real and simulated figure and the simulator's relative error."""
    rows = []
    measured = latencies(real)
    for name in ("ttft_s", "tpot_s", "e2e_s"):
        r, s = measured[name], sim[name].dropna().to_numpy(float)
        r = r[np.isfinite(r)]
        rows.append((f"{name} mean", r.mean(), s.mean()))
        rows += [(f"{name} p{q}", np.percentile(r, q), np.percentile(s, q)) for q in PERCENTILES]
    rows.append(("makespan_s", float(real["finish_s"].max()), float(sim["finish_s"].max())))
    if not math.isnan(real_energy_j):
        rows.append(("energy_j", real_energy_j, sim_energy_j))
    table = pd.DataFrame(rows, columns=["metric", "real", "simulated"])
    table["error_pct"] = 100 * (table["simulated"] - table["real"]) / table["real"]
    return table
