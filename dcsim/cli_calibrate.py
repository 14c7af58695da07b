"""`dcsim calibrate`: pull the profile onto a real deployment's measured requests."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from dcsim import units
from dcsim.cli_common import err, fail, out
from dcsim.errors import DcsimError

if TYPE_CHECKING:
    import pandas as pd


def calibrate(
    file: Path = typer.Argument(..., help="Scenario YAML describing the measured deployment "
                                "(one inference service: its GPU, model, tp and engine "
                                "settings)."),
    requests: Path = typer.Option(..., "--requests", help="The requests as served: CSV "
                                  "arrival_s, first_token_s, finish_s, prompt_tokens, "
                                  "output_tokens (or a benchmark's output, see --format)."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for profile.csv, "
                                 "calibration.json and comparison.parquet."),
    fmt: str = typer.Option("dcsim", "--format", help="dcsim (the CSV above) | vllm (vllm "
                            "bench serve --save-result --save-detailed) | sglang "
                            "(sglang.bench_serving --output-details)."),
    energy_j: float | None = typer.Option(None, "--energy-j", help="GPU energy over the "
                                          "run (all GPUs of the deployment), J."),
    power_log: Path | None = typer.Option(None, "--power-log", help="nvidia-smi "
                                          "--query-gpu=timestamp,power.draw --format=csv "
                                          "over the run, every GPU of the deployment."),
    holdout: Path | None = typer.Option(None, "--holdout", help="Requests of another load "
                                        "level of the same deployment: the calibrated "
                                        "profile's errors on them are reported."),
    holdout_energy_j: float | None = typer.Option(None, "--holdout-energy-j",
                                                  help="GPU energy of the hold-out run, J."),
    holdout_power_log: Path | None = typer.Option(None, "--holdout-power-log",
                                                  help="Power log of the hold-out run."),
    force: bool = typer.Option(False, "--force", help="Replace the dcsim results folder "
                               "--out names (never anything else)."),
) -> None:
    """Fit a small correction of the profile (prefill scale and overhead per iteration,
    decode scale, power scale) so the simulator reproduces measured requests; write it
    as a profile scenarios can name under `profiles:`."""
    from dcsim.calibration.calibrate import MeasuredRun
    from dcsim.calibration.calibrate import calibrate as run_calibration
    from dcsim.output import check_target, write_run
    from dcsim.scenario import load_scenario

    try:
        s = load_scenario(file)
        check_target(out_dir, force)
        held = (MeasuredRun(holdout, holdout_energy_j, holdout_power_log) if holdout
                else None)
        with err.status("calibrating (replaying the measured requests)"):
            cal = run_calibration(s, file.parent, MeasuredRun(requests, energy_j, power_log),
                                  fmt, held)
        target = write_run(out_dir, s, {"comparison": cal.comparison}, cal.record,
                           "calibration.json", {"profile.csv": cal.profile.to_csv(index=False)},
                           force)
    except DcsimError as exc:
        raise fail(exc) from None
    out.print(f"correction: {cal.record['correction_text']}", highlight=False)
    _print_comparison(cal.comparison)
    out.print(f"results: {target} (name {target / 'profile.csv'} under `profiles:`)",
              highlight=False)


def _print_comparison(table: pd.DataFrame) -> None:
    """Measured figures and the simulator's errors before and after, per set."""
    t = Table("set", "metric", "measured", "error before", "error after")
    for row in table.itertuples(index=False):
        energy = row.metric == "energy_per_request_j"
        shown = (units.energy_kwh(row.measured / 3.6e6) if energy
                 else units.duration_s(row.measured))
        t.add_row(row.set, row.metric.replace("_s ", " ").replace("_", " "), shown,
                  *("-" if e is None or e != e else f"{e:+.1f} %"
                    for e in (row.error_before_pct, row.error_after_pct)))
    out.print(t)
