"""`dcsim size`: the least fleet for a scenario's demand, and what it costs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from dcsim import units as u
from dcsim.cli_common import fail, out, stages
from dcsim.errors import DcsimError


def size(
    file: Path = typer.Argument(..., help="Scenario YAML file: its services' demand and SLOs "
                                "(optimize section: periods, candidates), its racks as the "
                                "rack design, its `sizing` section for costs."),
    out_dir: Path | None = typer.Option(None, "--out", help="Results folder (default: runs/...)."),
    growth: float = typer.Option(0.0, "--growth-per-month", min=-0.5, max=10.0,
                                 help="Demand growth per month, e.g. 0.05 for 5 %."),
    months: int = typer.Option(0, "--months", min=0, max=120, help="Months to size ahead "
                               "(the month each resource of the scenario runs out)."),
    objective: str | None = typer.Option(None, "--objective", help="gpus | capex: fewest "
                                         "GPUs, or least server capital cost (overrides "
                                         "sizing.objective)."),
    force: bool = typer.Option(False, "--force", help="Replace the dcsim results folder "
                               "--out names (never anything else)."),
    settings: list[str] = typer.Option([], "--set", help="PATH=VALUE: set one field for "
                                       "this sizing (repeatable; paths as sweep axes)."),
) -> None:
    """The least fleet that meets every SLO at peak demand, confirmed by simulation: GPUs,
    servers, racks, MW, energy, carbon and cost of ownership per year."""
    from dcsim.cli import with_settings
    from dcsim.optimize.size_run import run_size
    from dcsim.output import check_target, default_out_dir, write_run
    from dcsim.scenario import load_scenario

    try:
        s = with_settings(load_scenario(file), settings)
        target = out_dir or default_out_dir(s)
        check_target(target, force)
        with stages("sizing (capacity table, MILP, simulation at the peak)") as progress:
            tables, summary, files = run_size(s, file.parent, growth, months, objective,
                                              progress=progress)
        target = write_run(target, s, tables, summary, "sizing.json", files, force)
    except DcsimError as exc:
        raise fail(exc) from None
    print_sizing(summary)
    out.print(f"results: {target}", highlight=False)


def print_sizing(summary: dict) -> None:
    """The fleet, the simulation's confirmation, the year's figures and the run-out."""
    t = Table(title="sized fleet (peak over the periods)")
    for c in ("GPU", "GPUs", "server", "servers", "racks", "nameplate"):
        t.add_column(c, justify="left" if c in ("GPU", "server") else "right")
    for r in summary["fleet"]:
        t.add_row(r["gpu"], u.count(r["gpus"]), r["server"], u.count(r["servers"]),
                  u.count(r["racks"]), u.power_w(r["nameplate_kw"] * 1e3))
    out.print(t)
    if summary["check"]:
        c = Table(title="confirmed by simulation at each service's peak")
        for col in ("service", "peak req/s", "replicas", "GPUs", "TTFT p99", "TPOT p99",
                    "meets SLO", "1 fewer meets", "1 fewer attains"):
            c.add_column(col)
        for r in summary["check"]:
            fewer = r["one_fewer_meets_slo"]
            att = r["one_fewer_slo_attainment"]
            c.add_row(r["service"], f"{r['peak_rps']:,.2f}", u.count(r["replicas"]),
                      u.count(r["gpus"]), u.duration_s(r["ttft_p99_s"]),
                      u.duration_s(r["tpot_p99_s"]), "yes" if r["meets_slo"] else "NO",
                      "-" if fewer is None else ("YES" if fewer else "no"),
                      "-" if att is None else f"{att:.1%}")
        out.print(c)
    if summary.get("training"):
        j = Table(title="training jobs (the fewest data-parallel replicas that meet the "
                        "deadline)")
        for col in ("job", "GPUs asked", "GPUs sized", "expected end", "deadline"):
            j.add_column(col, justify="left" if col == "job" else "right")
        for r in summary["training"]:
            j.add_row(r["job"], u.count(r["gpus_asked"]), u.count(r["gpus"]),
                      u.duration_s(r["expected_end_s"]),
                      "-" if r["deadline_s"] is None else u.duration_s(r["deadline_s"]))
        out.print(j)
    _print_year(summary)
    if "growth" in summary:
        g = summary["growth"]
        r = Table(title=f"demand +{g['per_month']:.1%} a month for {g['months']} months")
        for col in ("resource", "have", "need now", "need at the end", "runs out in month",
                    "add by the end"):
            r.add_column(col)
        for row in g["runout"]:
            month = row["runs_out_month"]
            r.add_row(row["resource"], u.count(row["have"]), u.count(row["need_now"]),
                      u.count(row["need_at_horizon"]),
                      "-" if month is None else str(month), u.count(row["add_by_horizon"]))
        out.print(r)


def _print_year(s: dict) -> None:
    carbon = "-" if s["carbon_t_per_year"] is None else u.mass_kg(s["carbon_t_per_year"] * 1e3)
    lines = [
        f"IT power at peak {u.power_w(s['it_peak_mw'] * 1e6)}, facility "
        f"{u.power_w(s['facility_peak_mw'] * 1e6)} (predicted)"
        + ("" if s["facility_mw_simulated_at_peak"] is None else
           f"; its inference at the peak period simulated "
           f"{u.power_w(s['facility_mw_simulated_at_peak'] * 1e6)}, predicted "
           f"{u.power_w(s['facility_mw_predicted_at_peak_inference'] * 1e6)}"),
        f"per year: {u.energy_kwh(s['energy_mwh_per_year'] * 1e3)} facility energy, "
        f"{carbon} CO2e, electricity "
        + ("not priced (no facility.grid price)" if s["electricity_usd_per_year"] is None
           else u.money_usd(s["electricity_usd_per_year"])),
        f"capital {u.money_usd(s['capex_usd'])} ({u.money_usd(s['capex_usd_per_year'])} a year "
        f"amortised); cost of ownership {u.money_usd(s['tco_usd_per_year'])} a year"
        + ("" if s["tco_includes_electricity"] else " without electricity")
        + ("" if s["usd_per_million_tokens"] is None else
           f", {u.money_usd(s['usd_per_million_tokens'])} per million tokens"),
    ]
    assumed = sorted({r["item"] for r in s["capex"] if r["provenance"] == "assumption"})
    if assumed:
        lines.append("unit costs assumed (set sizing.capex_usd to your quotes): "
                     + ", ".join(assumed))
    for line in lines:
        out.print(line, highlight=False)
