"""Command-line interface. Library code raises DcsimError; only this module prints."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from dcsim import __version__
from dcsim.cli_calibrate import calibrate
from dcsim.cli_common import err, fail, out, stages
from dcsim.cli_print import print_intervals, print_plan, print_summary
from dcsim.cli_profile import profile_app
from dcsim.cli_size import size
from dcsim.errors import DcsimError, Interrupted, Problem

if TYPE_CHECKING:
    from dcsim.scenario import Scenario

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Plan AI data centers: capacity, energy, cost and carbon.")
profiles_app = typer.Typer(no_args_is_help=True, help="Inspect and query measured profiles.")
app.add_typer(profiles_app, name="profiles")
app.add_typer(profile_app, name="profile")
app.command()(calibrate)
app.command()(size)


def _print_version(value: bool) -> None:
    # eager: runs while the options are parsed, before Click asks for a command
    if value:
        out.print(f"dcsim {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", help="Print the version and exit.",
                                       is_eager=True, callback=_print_version)) -> None:
    """Plan AI data centers: capacity, energy, cost and carbon."""


@app.command()
def validate(files: list[Path] = typer.Argument(..., help="Scenario or sweep YAML files.")
             ) -> None:
    """Check scenario and sweep files (a sweep: its base and every point); exit 1 listing
    every problem (file, field, value, expected)."""
    from dcsim.csvfiles import read_text
    from dcsim.scenario import load_scenario, parse_yaml
    from dcsim.sweep.run import load_sweep

    bad = 0
    for f in files:
        try:
            doc = parse_yaml(read_text(f, "scenario or sweep file"), str(f))
            if isinstance(doc, dict) and "axes" in doc:  # only a sweep file has axes
                _, tasks, _ = load_sweep(f)
                out.print(f"ok: {f} (a sweep of {len(tasks)} runs)", highlight=False, soft_wrap=True)
            else:
                load_scenario(f)
                out.print(f"ok: {f}", highlight=False, soft_wrap=True)
        except DcsimError as exc:
            bad += 1
            for p in exc.problems:
                err.print(f"error: {p}", markup=False, highlight=False, soft_wrap=True)
    if bad:
        raise typer.Exit(1)


STARTERS = ("inference", "training")


@app.command()
def init(
    name: str = typer.Argument(..., help="Scenario name (the file is NAME.yaml)."),
    kind: str = typer.Option("inference", "--kind", help="inference (a chat service on "
                             "an H200 rack) | training (a fine-tuning job on 16 H100s)."),
    out_file: Path | None = typer.Option(None, "--out", help="File to write (default: "
                                         "NAME.yaml in this folder; never replaced)."),
) -> None:
    """Write a commented starter scenario that validates and runs as it is."""
    from importlib import resources

    from dcsim.output import atomic_file, safe_name

    try:
        if kind not in STARTERS:
            raise DcsimError(Problem("--kind", kind, f"one of {', '.join(STARTERS)}"))
        if not name.strip():
            raise DcsimError(Problem("NAME", name, "a scenario name"))
        target = out_file or Path(f"{safe_name(name)}.yaml")
        if target.exists() or target.is_symlink():
            raise DcsimError(Problem("--out", str(target), "a new file (this one exists: "
                                     "dcsim init never replaces a file)"))
        text = resources.files("dcsim").joinpath("data", "starters", f"{kind}.yaml").read_text()
        # a JSON string is a YAML scalar: any name, quoted as it must be
        text = text.replace("\nname: NAME\n", f"\nname: {json.dumps(name)}\n", 1)
        with atomic_file(target) as tmp:
            tmp.write_text(text)
    except DcsimError as exc:
        raise fail(exc) from None
    except OSError as exc:
        raise fail(DcsimError(Problem("--out", str(out_file or name), f"a file that can be "
                                      f"written ({exc.strerror})"))) from None
    out.print(f"wrote {target}: check it with `dcsim validate {target}`, run it with "
              f"`dcsim run {target}`", highlight=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of scenario files (for editor completion and checks)."""
    from dcsim.scenario import Scenario

    typer.echo(json.dumps(Scenario.model_json_schema(), indent=2))


@profiles_app.command("list")
def profiles_list(
    files: list[Path] = typer.Option([], "--file", "-f", help="Extra profile CSVs."),
) -> None:
    """Show what is measured: one row per (gpu, model, tp, phase) with its ranges."""
    from dcsim.catalog import load_catalog
    from dcsim.profiles.store import ProfileStore

    try:
        groups = ProfileStore.from_files(load_catalog(), files).measured()
    except DcsimError as exc:
        raise fail(exc) from None
    table = Table(title="Measured profiles")
    for col in ("gpu", "model", "tp", "phase", "points", "batch", "seq_len", "source"):
        table.add_column(col, no_wrap=col == "model")
    for r in groups.itertuples():
        table.add_row(r.gpu, r.model, str(r.tp), r.phase, str(r.points),
                      f"{r.batch_min}-{r.batch_max}", f"{r.seq_min}-{r.seq_max}", r.source)
    out.print(table)


@profiles_app.command("query")
def profiles_query(
    gpu: str = typer.Option(..., help="GPU catalog id or driver name."),
    model: str = typer.Option(..., help="Model catalog id (NAME/<n>L for a layer slice)."),
    phase: str = typer.Option(..., help="prefill | decode | train"),
    batch: int = typer.Option(..., help="Sequences per run."),
    seq: int = typer.Option(..., help="Prompt length (prefill/train) or KV context (decode)."),
    tp: int = typer.Option(1, help="Tensor-parallel degree."),
    power_cap: float | None = typer.Option(None, "--power-cap", help="GPU power limit, W."),
    ep: int = typer.Option(1, help="Expert-parallel degree (MoE models; tp x ep GPUs)."),
    weights_dtype: str = typer.Option("bf16", help="bf16 | fp8 | fp4"),
    kv_dtype: str = typer.Option("bf16", help="KV-cache type: bf16 | fp8"),
    files: list[Path] = typer.Option([], "--file", "-f", help="Extra profile CSVs."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Latency, energy and power of one run, with provenance (measured/interpolated/derived)."""
    from dcsim.catalog import load_catalog
    from dcsim.profiles.store import ProfileStore
    from dcsim.profiles.work import layout_of

    try:
        cat = load_catalog()
        lay = layout_of(cat.gpu(gpu), weights_dtype, kv_dtype, ep, "option")
        ans = ProfileStore.from_files(cat, files).query(gpu, model, phase, batch, seq, tp,
                                                        power_cap, lay)
    except DcsimError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(ans.to_dict(), indent=2))
        return
    out.print(f"latency_ms  {ans.latency_ms:.4f}\nenergy_j    {ans.energy_j:.4f}\n"
              f"power_w     {ans.power_w:.1f}\nprovenance  {ans.provenance}\n"
              f"basis       {ans.basis}", highlight=False)
    if ans.limited:
        out.print(f"limited     held at the {ans.power_limit_w:g} W limit by the DVFS model "
                  f"(before: {ans.unlimited_latency_ms:.4f} ms at {ans.unlimited_power_w:.1f} W)",
                  highlight=False)


@app.command()
def run(
    file: Path = typer.Argument(..., help="Scenario YAML file."),
    out_dir: Path | None = typer.Option(None, "--out", help="Results folder (default: runs/...)."),
    seed: int | None = typer.Option(None, "--seed", help="Override simulation.seed."),
    settings: list[str] = typer.Option([], "--set", help="PATH=VALUE: set one field for "
                                       "this run, e.g. workloads.chat.deployment.replicas=8 "
                                       "(repeatable; paths as sweep axes)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    step_by_step: bool = typer.Option(
        False, "--step-by-step", help="One event per decode step (a slow check of the fast path)."),
    report: bool = typer.Option(False, "--report", help="Also write DIR/report.html."),
    force: bool = typer.Option(False, "--force", help="Replace the dcsim results folder "
                               "--out names (never anything else)."),
    replications: int = typer.Option(
        1, "--replications", min=1, max=1000, help="Run under N independent seeds (the "
        "first is the scenario's): the tables are the first's, summary.json gains a 95 % "
        "t-interval of every figure."),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Processes for the "
                                       "other replications (default: CPUs - 1)."),
    profile_uncertainty: bool = typer.Option(
        False, "--profile-uncertainty", help="Each replication (the first too) also draws "
        "the profile's error per GPU, model and phase from its provenance's spread: the "
        "intervals cover both. Needs --replications 2 or more."),
) -> None:
    """Simulate a scenario; write requests, time series and summary; print the summary."""
    from dcsim.api import run as run_scenario
    from dcsim.output import check_target, default_out_dir
    from dcsim.scenario import load_scenario

    try:
        s = with_seed(with_settings(load_scenario(file), settings), seed)
        target = out_dir or default_out_dir(s)
        check_target(target, force)  # before the simulation, not after it
        if profile_uncertainty and replications < 2:  # in the options' own names
            raise DcsimError(Problem("--replications", replications, "2 or more with "
                                     "--profile-uncertainty (the interval needs draws)"))
        with _progress_bar(s, quiet) as tick:
            res = run_scenario(s, replications=replications, workers=workers,
                               profile_uncertainty=profile_uncertainty, base_dir=file.parent,
                               progress=tick, step_by_step=step_by_step)
        target = res.save(target, force=force)
        if report:
            from dcsim.report.page import write_report

            write_report(target)
    except DcsimError as exc:
        raise fail(exc) from None
    print_summary(res.record, s.facility.start_time)
    if res.replications is not None:
        print_intervals(res.replications)
    out.print(f"results: {target}", highlight=False)


def with_settings(s: Scenario, settings: list[str]) -> Scenario:
    """The scenario with each `--set PATH=VALUE` applied (paths as sweep axes name them,
    values read as YAML scalars), validated like the file."""
    from dcsim.scenario import parse_yaml, scenario_from_data
    from dcsim.sweep.points import set_path

    if not settings:
        return s
    data = s.model_dump(mode="json")
    for item in settings:
        path, eq, text = item.partition("=")
        if not eq or not path:
            raise DcsimError(Problem("--set", item, "PATH=VALUE, e.g. "
                                     "workloads.chat.deployment.replicas=8"))
        value = parse_yaml(text, "--set")
        if isinstance(value, dict | list):
            raise DcsimError(Problem("--set", item, "one value (a number, true/false, null "
                                     "or text) for one field"))
        data = set_path(data, path, value, "--set")  # type: ignore[arg-type]
    try:
        return scenario_from_data(data)
    except DcsimError as exc:
        raise DcsimError([Problem(f"--set {p.path}", p.value, p.expected)
                          for p in exc.problems]) from None


def with_seed(s: Scenario, seed: int | None) -> Scenario:
    """The scenario with simulation.seed replaced by --seed, validated like the file."""
    from dcsim.scenario import scenario_from_data

    if seed is None:
        return s
    data = s.model_dump(mode="json")
    data["simulation"]["seed"] = seed
    try:
        return scenario_from_data(data)
    except DcsimError as exc:
        raise DcsimError([Problem("--seed", seed, p.expected) for p in exc.problems]) from None


@app.command()
def sweep(
    file: Path = typer.Argument(..., help="Sweep YAML file (base scenario, axes, seeds)."),
    out_dir: Path | None = typer.Option(None, "--out", help="Sweep folder (default: "
                                        "runs/sweep-NAME; running again resumes it)."),
    workers: int = typer.Option(2, "--workers", help="Local worker processes."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Address of a Dask "
                                         "distributed scheduler to run the points on."),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for the scheduler."),
) -> None:
    """Run a scenario over a grid or sample of field values; collect sweep.parquet."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dcsim.output import safe_name
    from dcsim.sweep.run import load_sweep, run_sweep

    try:
        if workers < 1:
            raise DcsimError(Problem("--workers", workers, "at least 1 worker process"))
        loaded = load_sweep(file)
        target = out_dir or Path("runs") / f"sweep-{safe_name(loaded[0].name)}"
        with Progress(TextColumn("sweep points"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err, transient=True) as bar:
            task = bar.add_task("points", total=None)
            table = run_sweep(file, target, workers, scheduler, timeout,
                              lambda n, total: bar.update(task, completed=n, total=total), loaded)
    except DcsimError as exc:
        raise fail(exc) from None
    failed = table[table["status"] == "failed"]
    out.print(f"{len(table) - len(failed)} of {len(table)} points finished, {len(failed)} "
              f"failed", highlight=False)
    for _, r in failed.iterrows():
        out.print(f"  point {r['point']} (seed {r['seed']}): {r['error']}", highlight=False)
    out.print(f"results: {target}/sweep.parquet", highlight=False)


@app.command("report")
def report_cmd(
    results: Path = typer.Argument(..., help="Results folder of dcsim run or dcsim optimize."),
    out_file: Path | None = typer.Option(None, "--out", help="HTML file (default: "
                                         "DIR/report.html)."),
    growth: float = typer.Option(0.05, "--growth-per-month", help="Demand growth a month for "
                                 "the capacity outlook (0.05 = 5 %)."),
    months: int = typer.Option(36, "--months", help="Months the capacity outlook looks ahead."),
    force: bool = typer.Option(False, "--force", help="Replace the file --out names."),
) -> None:
    """One self-contained HTML report (plotly, opens offline) of a results folder."""
    from dcsim.report.page import write_report

    try:
        if out_file is not None and (out_file.exists() or out_file.is_symlink()) and not (
                force and out_file.is_file() and not out_file.is_symlink()):
            raise DcsimError(Problem("--out", str(out_file), "a new file (add --force to "
                                     "replace this one; a folder or link is never replaced)"))
        if not -1 < growth <= 10:
            raise DcsimError(Problem("--growth-per-month", growth, "a monthly growth rate "
                                     "above -1 and at most 10 (1000 %)"))
        if not 1 <= months <= 600:
            raise DcsimError(Problem("--months", months, "1 to 600 months"))
        target = write_report(results, out_file, growth, months)
    except DcsimError as exc:
        raise fail(exc) from None
    out.print(f"report: {target}", highlight=False)


@contextmanager
def _progress_bar(s: Scenario, quiet: bool) -> Iterator[Callable[[float], None] | None]:
    """A progress bar over the simulated clock (None when quiet)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if quiet:
        yield None
        return
    columns = (TextColumn("simulating"), BarColumn(), TextColumn("{task.completed:.0f}/"
               "{task.total:.0f} s simulated"), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("sim", total=s.simulation.duration_s)
        yield lambda t: bar.update(task, completed=t)
        bar.update(task, completed=s.simulation.duration_s)


@app.command()
def optimize(
    file: Path = typer.Argument(..., help="Scenario YAML file (its `optimize` section, if any)."),
    out_dir: Path | None = typer.Option(None, "--out", help="Results folder (default: runs/...)."),
    objective: str | None = typer.Option(None, "--objective",
                                         help="energy | cost | carbon (overrides the file)."),
    check: bool = typer.Option(False, "--verify", help="Replay the plan and the baselines in "
                               "the simulator and compare."),
    force: bool = typer.Option(False, "--force", help="Replace the dcsim results folder "
                               "--out names (never anything else)."),
    quantile: float | None = typer.Option(
        None, "--quantile", min=0.5, max=0.999, help="Plan with every profile answer at "
        "this quantile of its error (robust capacity), and say how many GPUs more than "
        "at the median answers it takes."),
    settings: list[str] = typer.Option([], "--set", help="PATH=VALUE: set one field for "
                                       "this plan (repeatable; paths as sweep axes)."),
) -> None:
    """Energy-, cost- or carbon-minimal replicas, GPUs, power limits and racks per period."""
    from dcsim.optimize.run import run_optimize
    from dcsim.output import check_target, default_out_dir, write_run
    from dcsim.scenario import load_scenario

    try:
        s = with_settings(load_scenario(file), settings)
        target = out_dir or default_out_dir(s)
        check_target(target, force)
        with stages("planning (profiles, queueing model, MILP)") as progress:
            tables, summary, files, _ = run_optimize(s, file.parent, objective, check,
                                                     quantile, progress)
        target = write_run(target, s, tables, summary, "optimize.json", files, force)
    except DcsimError as exc:
        raise fail(exc) from None
    print_plan(summary)
    out.print(f"results: {target}", highlight=False)


def _interrupt(signum: int, _frame: object) -> None:
    # not KeyboardInterrupt: Click would turn that into "Aborted!" and exit 1
    raise Interrupted(signum)


def main() -> None:
    """The `dcsim` command: the typer app, with Ctrl-C and SIGTERM ending in one line and
    exit 130 / 143 after the temporary files of the interrupted write are removed."""
    import signal
    import sys

    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app()
    except Interrupted as exc:
        name = "Ctrl-C" if exc.signum == signal.SIGINT else "SIGTERM"
        err.print(f"interrupted ({name}): stopped, nothing half-written left", highlight=False)
        sys.exit(130 if exc.signum == signal.SIGINT else 143)
