"""What `dcsim run` and `dcsim optimize` print: tables of the typed summaries."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from rich.table import Table

from dcsim import units as u
from dcsim.cli_common import out

if TYPE_CHECKING:
    from dcsim.summary import RunSummary


TOP_RACKS = 5  # racks listed by name in the terminal; the rest in one line


def print_summary(summary: RunSummary, start: datetime | None = None) -> None:
    """The run's table per service, then jobs, replays, totals and budgeted domains;
    `start`: the calendar time of t = 0 (facility.start_time), for job end dates."""
    services = summary.services
    table = Table(title=f"{summary.scenario}: {u.duration_s(summary.duration_s)} simulated "
                        f"(after {u.duration_s(summary.warmup_s)} warm-up)")
    table.add_column("metric")
    for name in services:
        table.add_column(name, justify="right")
    # each value in the unit that keeps three digits (dcsim.units): 145 ms, 1.78 s, 3.4 kWh
    rows = [("requests finished", "requests_finished", u.count),
            ("throughput", "throughput_req_s", lambda x: f"{x:.3g} req/s"),
            ("TTFT p50", "ttft_p50_s", u.duration_s), ("TTFT p99", "ttft_p99_s", u.duration_s),
            ("TPOT p50", "tpot_p50_s", u.duration_s), ("TPOT p99", "tpot_p99_s", u.duration_s),
            ("E2E p99", "e2e_p99_s", u.duration_s),
            ("SLO attainment", "slo_attainment", lambda x: f"{x:.1%}"),
            ("preemptions", "preemptions", u.count), ("GPU energy", "energy_kwh", u.energy_kwh),
            ("J per output token", "j_per_output_token", lambda x: f"{x:.3g} J")]
    # requests turned away, shown where a service has any
    refused = [(f"requests {k.replace('_', ' ')}", f"requests_{k}", u.count)
               for k in ("rejected", "timed_out", "aborted")
               if any(getattr(v, f"requests_{k}") for v in services.values())]
    rows[1:1] = refused
    for label, key, show in rows:
        table.add_row(label, *("-" if getattr(v, key) is None else show(getattr(v, key))
                               for v in services.values()))
    if services:
        out.print(table)
    else:  # training or cluster replays only: no empty inference table
        out.print(table.title, highlight=False)
    for name, v in services.items():
        if v.pools:
            out.print(f"pools {u.pools_line(name, v.pools)}", highlight=False)
    _print_derived(summary)
    _print_jobs_and_replays(summary, start)
    t = summary.total
    if not t.gpus:  # nothing of its own to power (a trace replay alone)
        return
    pue = "-" if t.effective_pue is None else f"{t.effective_pue:.3g}"
    in_use = ("" if t.gpu_hours_in_use is None or abs(t.gpu_hours_in_use - t.gpu_hours)
              < 1e-6 * max(t.gpu_hours, 1.0) else f" ({t.gpu_hours_in_use:,.3g} in use)")
    out.print(f"total: {t.gpus_serving:,} of {t.gpus:,} GPUs serving, {t.gpu_hours:,.3g} "
              f"GPU-h{in_use}; energy {u.energy_kwh(t.gpu_energy_kwh)} GPUs, "
              f"{u.energy_kwh(t.it_energy_kwh)} IT, {u.energy_kwh(t.facility_kwh)} facility "
              f"(PUE {pue}); {u.mass_kg(t.carbon_kg)} CO2e; {u.money_usd(t.cost_usd)}",
              highlight=False)
    _print_domains(summary)
    for c in summary.power_capping or ():
        out.print(f"capping {u.capping_line(c)}", highlight=False)
    if summary.supply is not None:
        _print_supply(summary.supply)


def _print_supply(sup: dict) -> None:
    """Where the meter's energy came from, by the rule and by the optimal dispatch."""
    for kind, label in (("rule", "rule"), ("lp", "optimal (LP)")):
        t = sup[kind]
        out.print(f"supply, {label} {sup['policy']} dispatch: grid {u.energy_kwh(t['grid_kwh'])}"
                  f" (peak {u.power_w(t['grid_peak_kw'] * 1e3)}), renewables "
                  f"{u.energy_kwh(t['renewable_used_kwh'])} (curtailed "
                  f"{u.energy_kwh(t['curtailed_kwh'])}), generators "
                  f"{u.energy_kwh(t['generators_kwh'])}, battery out "
                  f"{u.energy_kwh(t['battery_discharge_kwh'])}, unmet "
                  f"{u.energy_kwh(t['unmet_kwh'])}; {u.money_usd(t['cost_usd'])}, "
                  f"{u.mass_kg(t['carbon_kg'])} CO2e (grid alone "
                  f"{u.mass_kg(t['carbon_kg_location_based'])})", highlight=False)


def _print_domains(summary: RunSummary) -> None:
    """The facility and rows, then the TOP_RACKS racks closest to their budgets, then a
    line for the rest (a fleet of hundreds of racks stays a few lines)."""
    budgeted = [d for d in summary.power_domains if d.budget_w]
    racks = sorted((d for d in budgeted if d.domain == "rack"),
                   key=lambda d: d.p99_w / d.budget_w, reverse=True)
    shown = [d for d in budgeted if d.domain != "rack"] + racks[:TOP_RACKS]
    for d in shown:
        limited = f" (GPUs limited to {d.gpu_limit_w:.0f} W)" if d.throttled else ""
        room = ("" if d.extra_servers_at_p99 is None else
                f"; room for {d.extra_servers_at_p99} more servers at p99")
        out.print(f"{d.domain} {d.name}: peak {u.power_w(d.peak_w)}, p99 "
                  f"{u.power_w(d.p99_w)} of {u.power_w(d.budget_w)}{limited}{room}",
                  highlight=False)
    rest = racks[TOP_RACKS:]
    if rest:
        top = rest[0].p99_w / rest[0].budget_w
        out.print(f"{len(rest)} more racks, each at most {top:.0%} of its budget at p99 "
                  f"(power_domains in summary.json lists them all)", highlight=False)


def _print_jobs_and_replays(summary: RunSummary, start: datetime | None) -> None:
    if summary.jobs:
        _print_jobs(summary, start)
    if summary.cluster_replays:
        _print_replays(summary)


def _print_replays(summary: RunSummary) -> None:
    """One row per replayed cluster trace: pods, waits, allocation, fragmentation."""
    t = Table(title="cluster replays")
    for c in ("trace", "pods started", "wait mean", "wait p90", "GPUs allocated (mean)",
              "(peak)", "fragmentation when busy"):
        t.add_column(c, justify="left" if c == "trace" else "right")
    for c in summary.cluster_replays:
        frag = c.fragmentation_mean_when_busy
        t.add_row(c.workload, f"{c.pods_started:,} of {c.pods:,}", u.duration_s(c.wait_mean_s),
                  u.duration_s(c.wait_p90_s), f"{c.gpu_allocation_mean:.1%}",
                  f"{c.gpu_allocation_peak:.1%}", "-" if frag is None else f"{frag:.1%}")
    out.print(t)


def _print_jobs(summary: RunSummary, start: datetime | None) -> None:
    """One row per training job: GPUs, tokens done, end (date, and time from t = 0;
    expected at the goodput seen so far when it has not finished), goodput, restarts,
    GPU energy."""
    t = Table(title="training jobs (* expected, at the goodput so far)")
    for c in ("job", "GPUs", "tokens", "ends", "goodput", "restarts", "energy"):
        t.add_column(c, justify="left" if c in ("job", "ends") else "right",
                     no_wrap=c in ("job", "ends", "tokens", "energy"))
    for j in summary.jobs:
        if j.end_s is None:
            ends = "not started"
        else:
            date = "" if start is None else f"{start + timedelta(seconds=j.end_s):%Y-%m-%d} "
            ends = f"{date}({u.duration_s(j.end_s)}){'' if j.finished else '*'}"
        t.add_row(j.job, f"{j.gpus:,}", u.count(j.tokens_done), ends, f"{j.goodput:.1%}",
                  f"{j.restarts:,.0f}", u.energy_kwh(j.energy_j / 3.6e6))
    out.print(t)


def print_plan(summary: dict) -> None:
    """The plan's status, predicted energy against the baselines, the closed-loop check,
    training jobs and the budgets worth raising."""
    _print_deployments(summary)
    t = Table(title="facility energy over the horizon (predicted)")
    for c in ("plan", "kWh", "saved by the plan"):
        t.add_column(c)
    t.add_row("optimizer", f"{summary['predicted_facility_kwh']:.1f}", "")
    for name, b in summary["baselines"].items():
        saved = b["energy_saved_by_plan"]
        t.add_row(name, f"{b['predicted_facility_kwh']:.1f}",
                  "" if saved is None else f"{saved:.1%}")
    out.print(t)
    if "quantile" in summary:
        m = summary["quantile"]
        gpus = ", ".join(f"{n} {g}" for g, n in m["peak_gpus"].items())
        extra = ", ".join(f"{n:+d} {g}" for g, n in m["extra_gpus"].items())
        out.print(f"planned at the {m['q']:g} quantile of the profile's error: {gpus} at "
                  f"peak ({extra} against the median answers)", highlight=False)
    if "verify" in summary:
        v = Table(title="closed loop: simulated")
        for c in ("plan", "periods meeting every SLO", "min SLO attainment",
                  "facility W simulated", "facility W predicted"):
            v.add_column(c)
        for name, r in summary["verify"].items():
            v.add_row(name, f"{r['periods_meeting_every_slo']}/{r['periods']}",
                      f"{r['slo_attainment_min']:.1%}", f"{r['simulated_facility_w_mean']:,.0f}",
                      f"{r['predicted_facility_w_mean']:,.0f}")
        out.print(v)
    _print_continuous(summary)
    _print_training(summary)
    _print_budget_values(summary)
    unit = summary.get("objective_unit", "")
    out.print(f"solver: {summary['status']}, {summary['objective']} objective "
              f"{summary['objective_value']:,.4g} {unit} (bound {summary['best_bound']:,.4g}, "
              f"gap {summary['gap']:.2%}); build {summary['build_s']:.1f} s, solve "
              f"{summary['solve_s']:.1f} s; {summary['variables']:,} variables, "
              f"{summary['constraints']:,} constraints", highlight=False)


def _print_continuous(summary: dict) -> None:
    """The horizon as one run per plan (verify_mode continuous), and plans no single
    scenario holds."""
    for name, why in summary.get("plan_scenario_missing", {}).items():
        out.print(f"{name}: {why}", highlight=False)
    if "verify_continuous" not in summary:
        return
    v = Table(title="the horizon as one run: simulated with cold starts and drains")
    for c in ("plan", "facility kWh", "min SLO attainment", "GPU-hours in use",
              "cold starts", "their kWh"):
        v.add_column(c)
    for r in summary["verify_continuous"]:
        att = min(r["slo_attainment"].values(), default=float("nan"))
        v.add_row(r["plan"], f"{r['facility_kwh']:,.1f}", f"{att:.1%}",
                  f"{r['gpu_hours_in_use']:,.1f}", str(r["cold_starts"]),
                  f"{r['cold_start_kwh']:.2f}")
    out.print(v)


PLAN_ROWS = 30  # rows of the plan table the terminal shows (plan.parquet has them all)


def _print_deployments(summary: dict) -> None:
    """The plan: per service and run of periods, GPU, tp, limits and replicas; then the
    peak fleet and the predicted energy, carbon and cost."""
    rows = summary.get("deployments", [])
    hours = summary["period_s"] / 3600
    t = Table(title=f"plan: {summary['periods']} periods of {u.duration_s(summary['period_s'])}")
    for c in ("service", "periods", "GPU", "tp", "power limit", "batch limit", "replicas"):
        t.add_column(c, justify="left" if c in ("service", "periods", "GPU") else "right",
                     no_wrap=c == "periods")
    for r in rows[:PLAN_ROWS]:
        first, last = r["first_period"], r["last_period"]
        span = (f"{first}" if first == last else f"{first}-{last}") + (
            f" ({first * hours:g}-{(last + 1) * hours:g} h)" if hours >= 1 else "")
        cap = r["power_cap_w"]
        pool = f" ({r['role']})" if r.get("role") else ""  # a pool of a split service
        t.add_row(f"{r['service']}{pool}", span, str(r["gpu"]), str(r["tp"]),
                  "default" if cap is None else u.power_w(cap), str(r["max_num_seqs"]),
                  f"{r['replicas']:,}")
    out.print(t)
    if len(rows) > PLAN_ROWS:
        out.print(f"{len(rows) - PLAN_ROWS} more rows: plan.parquet", highlight=False)
    peak = ", ".join(f"{n:,} {g}" for g, n in summary.get("peak_gpus", {}).items())
    out.print(f"peak fleet: {peak or 'no GPUs'}; predicted "
              f"{u.energy_kwh(summary['predicted_facility_kwh'])} facility, "
              f"{u.mass_kg(summary.get('predicted_carbon_kg', float('nan')))} CO2e, "
              f"{u.money_usd(summary.get('predicted_cost_usd', float('nan')))}",
              highlight=False)


def _print_budget_values(summary: dict) -> None:
    bv = summary.get("budget_value_per_kw", {})
    worth = [r for r in bv.get("binding", []) if r["value_per_kw"] > 0]
    if not worth:
        return
    unit = bv["unit"].split(" ")[0]
    best = sorted(worth, key=lambda r: -r["value_per_kw"])[:5]
    out.print("binding budgets (1 kW more would save, per period): " + "; ".join(
        f"{r['domain']} {r['name']} period {r['period']}: {r['value_per_kw']:.3g} {unit}"
        for r in best), highlight=False)


def _print_training(summary: dict) -> None:
    if "training" not in summary:
        return
    sim = {r["job"]: r for r in summary.get("verify_training", [])}
    t = Table(title="training jobs (expected end with failures; simulated where --verify)")
    for c in ("job", "GPU limit W", "racks", "start h", "end h", "deadline h", "kWh",
              "simulated end h"):
        t.add_column(c)
    for r in summary["training"]:
        v = sim.get(r["job"])
        dl = r["deadline_s"]
        cap = r["power_cap_w"]
        t.add_row(r["job"], "default" if cap is None or cap != cap else f"{cap:.0f}",
                  r["racks"], f"{r['start_s'] / 3600:.2f}", f"{r['end_s'] / 3600:.2f}",
                  "" if dl is None or dl != dl else f"{dl / 3600:.2f}",
                  f"{r['energy_kwh']:.1f}",
                  "" if v is None else f"{v['simulated_end_s'] / 3600:.2f}")
    out.print(t)


def _print_derived(summary: RunSummary) -> None:
    """Services whose model, GPU, tp or numerics were never measured: what their answers
    rest on (the store's basis)."""
    for name, svc in summary.services.items():
        basis = svc.profile_basis.get("decode", "")
        counts: dict[str, int] = {}
        for per_phase in svc.profile_provenance.values():
            for k, v in per_phase.items():
                counts[k] = counts.get(k, 0) + v
        total = sum(counts.values())
        if "derived:" in basis:
            out.print(f"{name}: every answer derived, from {basis}", highlight=False)
        elif total and counts.get("derived", 0) > total / 2:
            out.print(f"warning: {name}: {counts['derived'] / total:.0%} of its profile "
                      f"answers are derived (outside the measured batch and length ranges); "
                      f"measure its model there (dcsim profile) to trust them", highlight=False)


INTERVAL_ROWS = (("TTFT p99", "ttft_p99_s", 1e3, "ms"), ("TPOT p99", "tpot_p99_s", 1e3, "ms"),
                 ("SLO attainment", "slo_attainment", 100.0, "%"),
                 ("J per output token", "j_per_output_token", 1.0, "J"),
                 ("GPU energy", "energy_kwh", 1.0, "kWh"))


def print_intervals(block: dict) -> None:
    """Key figures of each service with their interval across replications."""
    metrics = block["metrics"]
    out.print(f"{block['n']} replications (seeds {block['seeds'][0]}, ...): mean "
              f"[95 % interval]", highlight=False)
    names = sorted({k.split(".")[1] for k in metrics if k.startswith("services.")})
    for name in names:
        parts = []
        for label, key, scale, unit in INTERVAL_ROWS:
            m = metrics.get(f"services.{name}.{key}")
            if m is None or m["low"] is None:
                continue
            parts.append(f"{label} {m['mean'] * scale:.3g} [{m['low'] * scale:.3g}, "
                         f"{m['high'] * scale:.3g}] {unit}")
        out.print(f"  {name}: " + "; ".join(parts), highlight=False)
    for label, key in (("facility energy", "total.facility_kwh"), ("cost", "total.cost_usd")):
        m = metrics.get(key)
        if m is not None and m["low"] is not None:
            out.print(f"  {label}: {m['mean']:.4g} [{m['low']:.4g}, {m['high']:.4g}]",
                      highlight=False)
