"""One self-contained HTML page (plotly.js inlined, so it opens offline) per results folder."""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from jinja2 import Environment, PackageLoader, select_autoescape
from plotly.offline import get_plotlyjs

from dcsim import __version__, outlook, units
from dcsim.output import atomic_file
from dcsim.report import assumptions
from dcsim.report import disagg as dg
from dcsim.report import figures_plan as fp
from dcsim.report import figures_run as fr
from dcsim.report import operations as ops
from dcsim.report import sizing as sz
from dcsim.report import supply as sp
from dcsim.report import sweep as sw
from dcsim.report.data import Results, load
from dcsim.summary import RunSummary


def write_report(path: Path, out: Path | None = None, growth_per_month: float = 0.05,
                 months: int = 36) -> Path:
    """Write DIR/report.html (or `out`) atomically; returns its path."""
    res = load(path)
    target = Path(out) if out is not None else res.path / "report.html"
    page = build(res, growth_per_month, months)
    with atomic_file(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return target


def build(res: Results, growth_per_month: float, months: int) -> str:
    """The page as a string: sections for what the folder holds."""
    if res.kind == "run":
        sections = _run_sections(res, growth_per_month, months)
        assert res.run is not None
        title = f"{res.run.scenario}: simulated run"
    elif res.kind == "optimize":
        sections = _plan_sections(res)
        title = f"{res.path.name}: optimizer plan"
    elif res.kind == "size":
        sections = _size_sections(res)
        title = f"{res.summary.get('scenario', res.path.name)}: sized fleet"
    else:
        sections = _sweep_sections(res)
        title = f"{res.summary.get('name', res.path.name)}: sweep"
    rendered, n = [], 0
    for heading, items in sections:
        parts = []
        for item in items:
            if isinstance(item, go.Figure):
                item.update_layout(template="plotly_white", height=420)
                parts.append(item.to_html(full_html=False, include_plotlyjs=False,
                                          div_id=f"chart-{n}", config={"responsive": True}))
                n += 1
            else:
                parts.append(item)  # HTML this module built (its text escaped there)
        rendered.append((heading, parts))
    return TEMPLATES.get_template("page.html.j2").render(
        title=title, version=__version__, folder=res.path.name, plotly_js=get_plotlyjs(),
        sections=rendered)


Section = tuple[str, list[object]]
# the page's skeleton and the headline cards; text is escaped by the templates, HTML
# pieces built here (tables, notes, charts) pass through as they are
TEMPLATES = Environment(loader=PackageLoader("dcsim.report", "templates"),
                        autoescape=select_autoescape(["html", "j2"]), keep_trailing_newline=True)


def _run_sections(res: Results, g: float, months: int) -> list[Section]:
    s, t = res.run, res.tables
    assert s is not None
    powered = s.total.it_energy_kwh > 0  # a trace replay alone draws nothing
    block = res.summary.get("replications")
    spread = block.get("metrics", {}) if isinstance(block, dict) else {}
    out: list[Section] = [("Headline", [_kpis(_with_intervals(_run_kpis(s), spread)
                                              + _replay_kpis(s))])]
    if isinstance(res.summary.get("replications"), dict):
        items: list[object] = [_replications(res.summary["replications"])]
        if res.has("replications_power"):
            items.append(fr.power_bands(t["replications_power"]))
        out.append(("Across replications", items))
    if powered and res.has("power") and res.has("budgets"):
        out.append(("Power", [fr.power_vs_budgets(t["power"], t["budgets"])]))
    if powered:
        notes = assumptions.energy(res.resolved, s)
        out.append(("Energy", [fr.energy_breakdown(s.total, fr.workload_energy(s)), *(
            f"<p class='note'>Assumption: {html.escape(n)}</p>" for n in notes)]))
    if res.has("supply") and isinstance(res.summary.get("supply"), dict):
        sup = res.summary["supply"]
        out.append(("Supply", [
            f"<p>Dispatch policy: {html.escape(str(sup['policy']))}; the LP's optimum "
            f"({html.escape(str(sup['objective_unit']))}) beside the rule's. Renewable "
            "profiles: " + html.escape(", ".join(f"{k}: {v}" for k, v in
                                                  sup.get("renewable_profiles", {}).items())
                                       or "none") + ".</p>",
            sp.dispatch(t["supply"]), _table(sp.comparison(sup))]))
    if res.has("power_trace") and isinstance(res.summary.get("power_trace"), dict):
        entry = res.summary["power_trace"]
        out.append(("Power swings", [sp.swing(t["power_trace"], entry), sp.swing_note(entry)]))
    if res.has("requests"):
        out.append(("Latency", [fr.latency_cdfs(t["requests"], res.slos,
                                                t.get("replications_latency"))]))
    if any(v.pools for v in s.services.values()):
        out.append(("Disaggregated serving", [
            "<p>Prefill and decode run on separate pools; each request's KV cache moves "
            "from its prefill replica to its decode replica over NVLink (same server) or "
            "the NICs and leaf-spine fabric, shared max-min with other traffic.</p>",
            _table(dg.pool_table(s)), dg.kv_figure(t.get("requests", pd.DataFrame()),
                                                   t.get("links", pd.DataFrame(
                                                       {"link": [], "t_start_s": [],
                                                        "utilization": []})))]))
    if res.has("timeseries") and res.has("replicas") and (res.has("scaling")
                                                           or res.has("capping")):
        out.append(("Operations over time", [ops.timeline(
            t.get("scaling", pd.DataFrame()), t.get("capping", pd.DataFrame()),
            t["timeseries"], t["replicas"], s.duration_s), *_capping_note(s)]))
    if res.has("timeseries"):
        items = [fr.busy_bands(t["replications_busy"])] if res.has("replications_busy") else []
        out.append(("Utilisation", [*items, fr.heatmaps(t["timeseries"])]))
    if res.has("jobs"):
        out.append(("Training", [fr.training_timeline(
            t["jobs"], t.get("failures", pd.DataFrame()), t.get("checkpoints", pd.DataFrame()),
            s.duration_s)]))
    if res.has("cluster"):
        out.append(("Cluster", [fr.cluster_use(t["cluster"])]))
    if not s.total.gpus:  # no fleet of ours to run out (a trace replay)
        out.append(("Where the numbers come from", [_provenance(s)]))
        return out
    proj = outlook.projection(s, g, months)
    ro = outlook.runout(s, g, months)
    text = (f"<p>Demand grows {g:.1%} a month; busy GPUs and each domain's power above its "
            f"idle floor grow with it (dcsim.outlook states the model).</p>")
    out.append(("Capacity outlook", [text, fp.outlook(proj, g), _table(ro.rename(columns={
        "runs_out_month": "runs out in month", "add_by_horizon": f"add by month {months}"}))]))
    out.append(("Where the numbers come from", [_provenance(s)]))
    return out


def _run_kpis(s: RunSummary) -> list[tuple[str, str, str]]:
    tot, svcs = s.total, s.services
    served = sum(v.requests_finished for v in svcs.values())
    att = [(v.slo_attainment, v.requests_finished) for v in svcs.values()
           if v.slo_attainment is not None]
    slo = sum(a * n for a, n in att) / max(sum(n for _, n in att), 1) if att else None
    tokens = sum(v.output_tokens_per_s for v in svcs.values()) * (s.duration_s - s.warmup_s)
    gpu_kwh = sum(v.energy_kwh for v in svcs.values())
    runs = [(j.gpus, float(j.runtime_s or 0.0)) for j in s.jobs]
    train_h = sum(g * r / 3600 for g, r in runs if math.isfinite(r))
    sim = "simulated"
    serving = [("requests served", f"{served:,}", sim),
               ("SLO attainment", "n/a" if slo is None else f"{slo:.2%}", sim)] if svcs else []
    return serving + _job_kpis(s) + [
        ("IT energy", f"{tot.it_energy_kwh:,.1f} kWh", sim),
        ("facility energy", f"{tot.facility_kwh:,.1f} kWh", "simulated x facility model"),
        ("effective PUE", f"{tot.effective_pue:.3f}" if tot.effective_pue else "n/a",
         "derived"),
        ("carbon", f"{tot.carbon_kg:,.1f} kg CO2e", "facility energy x grid intensity"),
        ("cost", f"${tot.cost_usd:,.2f}", "facility energy x price"),
        ("GPU-hours", f"{tot.gpu_hours + train_h:,.1f}", "serving + training, simulated"),
    ] + ([("J per output token", f"{gpu_kwh * 3.6e6 / tokens:.3g}" if tokens else "n/a",
           "GPU energy of services / tokens")] if svcs else [])


def _job_kpis(s: RunSummary) -> list[tuple[str, str, str]]:
    """A training run's headline: when each job ends (expected at the goodput so far
    if it has not), and its goodput (the first three jobs; the table has them all)."""
    out = []
    for j in s.jobs[:3]:
        if j.end_s is not None:
            out.append((f"{j.job} ends", f"{units.duration_s(j.end_s)}",
                        "finished, simulated" if j.finished else
                        "expected: steps left at the goodput so far"))
        out.append((f"{j.job} goodput", f"{j.goodput:.1%}", "simulated: useful / wall time"))
    return out


REPLICATED = (("TTFT p99, s", "ttft_p99_s"), ("TPOT p99, s", "tpot_p99_s"),
              ("SLO attainment", "slo_attainment"), ("J per output token", "j_per_output_token"),
              ("GPU energy, kWh", "energy_kwh"))


def _replications(block: dict) -> str:
    """The headline figures with their interval across replications (summary.json)."""
    metrics = block.get("metrics", {})
    rows = []
    keys = [(f"{name}: {label}", f"services.{name}.{key}")
            for name in sorted({k.split(".")[1] for k in metrics if k.startswith("services.")})
            for label, key in REPLICATED]
    keys += [("facility energy, kWh", "total.facility_kwh"), ("cost, USD", "total.cost_usd"),
             ("carbon, kg CO2e", "total.carbon_kg")]
    for label, key in keys:
        m = metrics.get(key)
        if isinstance(m, dict) and m.get("low") is not None:
            rows.append({"figure": label, "mean": m["mean"], "95 % low": m["low"],
                         "95 % high": m["high"]})
    if not rows:
        return "<p>No figure varies across the replications.</p>"
    return (f"<p>{int(block.get('n', 0))} replications; {html.escape(str(block.get('method')))}."
            f" The rest of this report shows the first replication.</p>"
            + _table(pd.DataFrame(rows)))


def _replay_kpis(summary: RunSummary) -> list[tuple[str, str, str]]:
    out = []
    for r in summary.cluster_replays:
        w = r.workload
        out += [(f"{w}: pods started", f"{r.pods_started:,} of {r.pods:,}", "replayed"),
                (f"{w}: mean wait", f"{r.wait_mean_s:,.0f} s", "simulated"),
                (f"{w}: GPU allocation", f"{r.gpu_allocation_mean:.1%} mean, "
                 f"{r.gpu_allocation_peak:.1%} peak", "simulated")]
    return out


def _plan_sections(res: Results) -> list[Section]:
    s, t = res.summary, res.tables
    out: list[Section] = [("Headline", [_kpis(_plan_kpis(s, t.get("periods"))),
                                        _solver_note(s)]),
                          ("Plan against baselines", [fp.plan_vs_baselines(s)])]
    if res.has("periods"):
        out.append(("Per period", [fp.plan_periods(t.get("plan", pd.DataFrame()),
                                                   t["periods"])]))
    if res.has("verify"):
        out.append(("Closed loop", [fp.verification(t["verify"])]))
    if res.has("verify_continuous") and isinstance(s.get("verify_continuous"), list):
        out.append(("The horizon as one run", [
            _table(ops.continuous_rows(s["verify_continuous"], t["verify_continuous"])),
            ops.continuous_periods(t["verify_continuous"])]))
    if res.has("jobs"):
        cols = [c for c in ("job", "power_cap_w", "rack_servers", "runtime_s", "end_s",
                            "deadline_s", "energy_kwh") if c in t["jobs"]]
        out.append(("Training jobs", [_table(t["jobs"][cols])]))
    return out


def _capping_note(s: RunSummary) -> list[str]:
    """A line per budgeted domain the power-capping controller watched."""
    return [f"<p class='note'>{html.escape(units.capping_line(c))}</p>"
            for c in s.power_capping or ()]


def _plan_kpis(s: dict, periods: pd.DataFrame | None) -> list[tuple[str, str, str]]:
    """The plan in GPUs, MW, energy and money (the solver's status is a footnote)."""
    gpus = ", ".join(f"{n:,} {g}" for g, n in s.get("peak_gpus", {}).items()) or "none"
    kpis = [("GPUs at the peak", gpus, "the plan's busiest period")]
    if periods is not None and len(periods):
        kpis.append(("facility power at the peak",
                     units.power_w(float(periods["facility_w"].max())), "predicted"))
    kpis.append(("facility energy", units.energy_kwh(s["predicted_facility_kwh"]),
                 "predicted over the horizon"))
    if s.get("predicted_cost_usd") is not None and math.isfinite(s["predicted_cost_usd"]):
        kpis.append(("electricity", units.money_usd(s["predicted_cost_usd"]),
                     "facility.grid price"))
    if s.get("predicted_carbon_kg") is not None and math.isfinite(s["predicted_carbon_kg"]):
        kpis.append(("carbon", units.mass_kg(s["predicted_carbon_kg"]),
                     "facility.grid carbon intensity"))
    for name, b in s.get("baselines", {}).items():
        if b.get("energy_saved_by_plan") is not None:
            kpis.append((f"saved vs {name}", f"{b['energy_saved_by_plan']:.1%}", "derived"))
    return kpis


def _solver_note(s: dict) -> str:
    return (f"<p class='sub'>Solver: HiGHS {html.escape(str(s['status']))}, gap "
            f"{s['gap']:.2%}, objective {s['objective_value']:,.4g} "
            f"{html.escape(str(s.get('objective_unit', '')))} ({html.escape(str(s['objective']))}"
            f"); {s.get('variables', 0):,} variables, {s.get('constraints', 0):,} "
            f"constraints.</p>")


def _size_sections(res: Results) -> list[Section]:
    s, t = res.summary, res.tables
    out: list[Section] = [("Headline", [_kpis(sz.headline(s))])]
    if res.has("sizing_fleet"):
        out.append(("Fleet", [_table(sz.named(t["sizing_fleet"], sz.FLEET_COLUMNS))]))
    if res.has("sizing_check"):
        out.append(("Confirmed by simulation", [
            "<p>Each service alone on the sized fleet at its peak period's demand: it "
            "meets its SLOs, and with one replica fewer it does not.</p>",
            _table(sz.named(t["sizing_check"], sz.CHECK_COLUMNS))]))
    if res.has("sizing_capex"):
        out.append(("What the money rests on", [
            "<p>Unit costs: <i>published</i> list prices, <i>published estimate</i>s of "
            "analysts, our <i>assumption</i>s, or the scenario's own (sizing.capex_usd). "
            "Replace assumptions with your quotes.</p>",
            _table(sz.named(t["sizing_capex"], sz.CAPEX_COLUMNS))]))
    if res.has("sizing_growth"):
        g = s.get("growth", {})
        out.append(("As demand grows", [
            f"<p>Demand grows {g.get('per_month', 0):.1%} a month; each month is sized "
            "anew on the simulation-checked capacity table (training jobs as given).</p>",
            sz.growth(t["sizing_growth"]),
            _table(sz.named(t["sizing_runout"], sz.RUNOUT_COLUMNS))]))
    return out


def _sweep_sections(res: Results) -> list[Section]:
    s, table = res.summary, res.tables.get("sweep", pd.DataFrame())
    kpis = [("points", f"{s['points']}", "axis values x seeds"),
            ("finished", f"{s['finished']}", "simulated"), ("failed", f"{s['failed']}", "")]
    out: list[Section] = [("Headline", [_kpis(kpis)])]
    if len(table) and (table["status"] == "finished").any():
        titles = s.get("axis_titles") or {}
        out.append(("Metrics against each axis", [sw.metric_vs_axis(table, s["axes"], a,
                                                                    titles)
                                                  for a in s["axes"]]))
        front = sw.pareto(table, s["axes"], titles)
        if front is not None:
            out.append(("Energy and latency", [front]))
    failed = table[table["status"] == "failed"] if len(table) else table
    if len(failed):
        out.append(("Failed points", [_table(failed[["point", "seed", *s["axes"], "error"]])]))
    return out


# headline figures whose interval across replications summary.json holds
KPI_PATHS = {"requests served": ("total.requests_finished", "{:,.0f}"),
             "IT energy": ("total.it_energy_kwh", "{:,.1f}"),
             "facility energy": ("total.facility_kwh", "{:,.1f}"),
             "effective PUE": ("total.effective_pue", "{:.3f}"),
             "carbon": ("total.carbon_kg", "{:,.1f}"),
             "cost": ("total.cost_usd", "${:,.2f}"),
             "GPU-hours": ("total.gpu_hours", "{:,.1f}")}


def _with_intervals(items: list[tuple[str, str, str]], spread: dict[str, dict]
                    ) -> list[tuple[str, str, str]]:
    """Headline figures with their 95 % interval across replications, where one exists
    (the value shown stays the first replication's, as in the rest of the report)."""
    out = []
    for name, value, basis in items:
        path, fmt = KPI_PATHS.get(name, ("", ""))
        iv = spread.get(path, {})
        if iv.get("low") is not None and iv.get("high") is not None:
            basis = (f"{basis}; 95 % interval of the mean over replications "
                     f"{fmt.format(iv['low'])}-{fmt.format(iv['high'])}")
        out.append((name, value, basis))
    return out


def _kpis(items: list[tuple[str, str, str]]) -> str:
    return TEMPLATES.get_template("kpis.html.j2").render(items=items)


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, na_rep="", float_format=lambda v: f"{v:,.3g}", border=0)


def _provenance(summary: RunSummary) -> str:
    rows = [{"service": name, "answers": kind, **counts}
            for name, svc in summary.services.items()
            for kind, counts in svc.profile_provenance.items()]
    if not rows:
        return "<p>No profile answers recorded.</p>"
    return ("<p>How often each service's iteration times and energies came from measured "
            "profile points, interpolation between them, or derivation (other GPU, model "
            "or power limit); power_limited: the run would have drawn more than the limit in "
            "force, so the DVFS model slowed it to hold the limit; calibrated: from a "
            "profile dcsim calibrate fitted to a real deployment's measured requests.</p>"
            + _table(pd.DataFrame(rows).fillna(0)) + _bases(summary))


def _bases(summary: RunSummary) -> str:
    items = [f"<li><b>{html.escape(name)}</b> {ph}: {html.escape(basis)}</li>"
             for name, svc in summary.services.items()
             for ph, basis in svc.profile_basis.items()]
    return f"<p>What each answer rests on:</p><ul>{''.join(items)}</ul>" if items else ""
