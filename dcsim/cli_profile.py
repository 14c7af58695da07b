"""`dcsim profile` and `dcsim profile replay`: measure this machine, then check the simulator.

Kept apart from dcsim.cli because it is the only command that needs torch (extra
`gpu`); torch is imported when a measurement starts, so `dcsim --help` stays quick.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from dcsim.cli_common import err, fail, out
from dcsim.errors import DcsimError, Problem

if TYPE_CHECKING:
    from dcsim.measure.profiler import ProfileOutcome

profile_app = typer.Typer(help="Measure the local GPU (or CPU) into a profile folder.")


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise DcsimError(Problem(name, text, "whole numbers separated by commas")) from None
    if any(v < 1 for v in vals):
        raise DcsimError(Problem(name, text, "positive whole numbers"))
    return vals


def _need_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise DcsimError(Problem("", None, "PyTorch for measuring: pip install 'dcsim[gpu]'")) from None


@profile_app.callback(invoke_without_command=True)
def profile(
    ctx: typer.Context,
    model: str | None = typer.Option(None, "--model", help="Catalog model, a slice NAME/<n>L, "
                                     "or tiny-llama (CPU test model)."),
    out_dir: Path = typer.Option(Path("profiles/local"), "--out", help="Profile folder."),
    device: str = typer.Option("cuda", "--device", help="cuda, cuda:N or cpu."),
    grid: str = typer.Option("standard", "--grid", help="quick | standard (the H200 set's grid)."),
    phases: str = typer.Option("prefill,decode,train", "--phases", help="Phases to measure."),
    batch: str = typer.Option("", "--batch", help="Batch sizes, e.g. 1,4,16 (overrides the grid)."),
    seq: str = typer.Option("", "--seq", help="Lengths, e.g. 128,512 (overrides the grid)."),
    max_tokens: int = typer.Option(32768, "--max-tokens", min=1, help="Largest prefill/train run."),
    min_time_s: float = typer.Option(0.6, "--min-time-s", min=0.001, help="Timed window per point."),
    budget_s: float | None = typer.Option(None, "--budget-s", min=0, help="Stop starting points "
                                          "after this many seconds."),
    graphs: bool = typer.Option(True, "--graphs/--no-graphs", help="CUDA graphs for inference."),
    seed: int = typer.Option(0, "--seed", min=0),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Measure prefill, decode and train points (and compute/memory ceilings) of a model on
    this device; never changes the GPU's power limit or clocks. Safe to interrupt; a rerun
    into the same folder measures only what is missing."""
    if ctx.invoked_subcommand is not None:
        return
    try:
        outcome = _run_profile(model, out_dir, device, grid, phases, batch, seq, max_tokens,
                               min_time_s, budget_s, graphs, seed, quiet)
    except DcsimError as exc:
        raise fail(exc) from None
    _print_outcome(outcome, out_dir)
    if outcome.interrupted:
        raise typer.Exit(130)


def _run_profile(model: str | None, out_dir: Path, device: str, grid: str, phases: str,
                 batch: str, seq: str, max_tokens: int, min_time_s: float,
                 budget_s: float | None, graphs: bool, seed: int, quiet: bool
                 ) -> ProfileOutcome:
    if model is None:
        raise DcsimError(Problem("--model", None, "a model to measure (e.g. llama-3.2-1b, "
                                 "llama-3.1-70b/8L, or tiny-llama with --device cpu)"))
    _need_torch()
    from dcsim.catalog import load_catalog
    from dcsim.measure import measure_catalog
    from dcsim.measure.profiler import ProfileRequest, run_profile

    req = ProfileRequest(model=model, device=device, grid=grid,
                         phases=tuple(p.strip() for p in phases.split(",") if p.strip()),
                         batches=_ints(batch, "--batch"), seqs=_ints(seq, "--seq"),
                         max_tokens=max_tokens, min_time_s=min_time_s, budget_s=budget_s,
                         seed=seed, graphs=graphs)
    catalog = measure_catalog(load_catalog())
    if quiet:
        return run_profile(req, out_dir, catalog)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("measuring", total=None)
        return run_profile(req, out_dir, catalog, progress=lambda i, n, d: bar.update(
            task, completed=i, total=n, description=f"measuring {d}"))


def _print_outcome(o: ProfileOutcome, out_dir: Path) -> None:
    out.print(f"measured {len(o.measured)} points ({o.already} already in the folder): "
              f"{out_dir / 'points.csv'}", highlight=False)
    if o.failed:
        for p, why in o.failed:
            out.print(f"skipped {p.phase} b={p.batch_size} s={p.seq_len}: {why}", highlight=False)
    if o.not_reached:
        why = "interrupted" if o.interrupted else "time budget spent"
        out.print(f"{why}: {len(o.not_reached)} points not measured; rerun with the same --out "
                  "to measure them", highlight=False)


@profile_app.command("replay")
def replay_cmd(
    profile_dir: Path = typer.Option(..., "--profile", help="Folder `dcsim profile` wrote."),
    trace: str = typer.Option("builtin:azure-conv-2023", "--trace", help="Azure-format trace."),
    requests: int = typer.Option(200, "--requests", min=1, help="Requests to replay."),
    start_row: int = typer.Option(0, "--start-row", min=0, help="First trace row."),
    time_scale: float = typer.Option(1.0, "--time-scale", min=1e-6, help="Multiply gaps by this."),
    max_prompt: int | None = typer.Option(None, "--max-prompt", min=1, help="Clip prompts."),
    max_output: int | None = typer.Option(None, "--max-output", min=1, help="Clip outputs."),
    max_num_seqs: int = typer.Option(32, "--max-num-seqs", min=1),
    max_batched_tokens: int = typer.Option(4096, "--max-batched-tokens", min=1),
    device: str = typer.Option("cuda", "--device"),
    model: str | None = typer.Option(None, "--model", help="Full model of the profile."),
    out_dir: Path | None = typer.Option(None, "--out", help="Default: PROFILE/replay."),
    seed: int = typer.Option(0, "--seed", min=0),
    scheduler: str = typer.Option("mixed", "--scheduler", help="Iteration policy of the real "
                                  "loop and the simulator: mixed or prefill_first."),
) -> None:
    """Serve trace requests for real on this device, simulate the same trace with the
    profile, and print real and simulated latency and energy side by side."""
    try:
        _need_torch()
        from dcsim.catalog import load_catalog
        from dcsim.measure import measure_catalog
        from dcsim.measure.replay import ReplayRequest, replay

        req = ReplayRequest(profile_dir, trace, requests, start_row, time_scale, max_prompt,
                            max_output, max_num_seqs, max_batched_tokens, device, model, seed,
                            scheduler)
        target = out_dir or profile_dir / "replay"
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        with Progress(TextColumn("serving requests"), BarColumn(), MofNCompleteColumn(),
                      console=err, transient=True) as bar:
            task = bar.add_task("serve", total=requests)
            table, notes = replay(req, target, measure_catalog(load_catalog()), progress=lambda
                                  done, n: bar.update(task, completed=done, total=n))
    except DcsimError as exc:
        raise fail(exc) from None
    view = Table(title="Real serving vs simulation")
    for col in ("metric", "real", "simulated", "error %"):
        view.add_column(col, justify="left" if col == "metric" else "right")
    for r in table.itertuples():
        view.add_row(r.metric, f"{r.real:.4g}", f"{r.simulated:.4g}", f"{r.error_pct:+.1f}")
    out.print(view)
    for note in notes:
        out.print(f"note: {note}", highlight=False)
    out.print(f"results: {target}", highlight=False)
