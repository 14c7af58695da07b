"""Reports: the capacity outlook against its formula, the page's content, and the page in a
real browser (headless Chromium: no JavaScript errors, every chart drawn, not blank)."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from dcsim import outlook
from dcsim.cli import app
from dcsim.summary import DomainPeak, RunSummary, Totals

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _summary(busy: int, gpus: int, p99_w: float, idle_w: float, budget_w: float
             ) -> RunSummary:
    """A run summary with just what the outlook reads (the rest zero)."""
    zeros = {f.name: 0 for f in fields(Totals)}
    total = Totals(**zeros | {"gpus": gpus, "gpus_serving": busy, "gpus_training": 0})

    def dom(kind: str, name: str, budget: float | None) -> DomainPeak:
        return DomainPeak(kind, name, 2, p99_w, p99_w, budget, gpus, idle_w, False, 700.0)

    return RunSummary("s", 3600.0, 0.0, 1, {}, [], [], total,
                      [dom("rack", "r", budget_w), dom("facility", "facility", None)])


def test_outlook_month_of_running_out_matches_the_compound_growth_formula():
    # 4 of 16 GPUs busy at 10 % a month: 4 x 1.1^m > 16 first at m = 15 (1.1^14 = 3.80,
    # 1.1^15 = 4.18); the rack: 3 kW idle + 2 kW above it against 10 kW: 2 x 1.1^m > 7
    # first at m = 14 (1.1^13 = 3.45, 1.1^14 = 3.80)
    s = _summary(4, 16, 5000.0, 3000.0, 10000.0)
    r = outlook.runout(s, 0.10, 36).set_index("resource")
    assert r.loc["GPUs", "runs_out_month"] == 15
    assert r.loc["rack r power", "runs_out_month"] == 14
    assert 4 * 1.1 ** 14 <= 16 < 4 * 1.1 ** 15 and 3 + 2 * 1.1 ** 13 <= 10 < 3 + 2 * 1.1 ** 14
    # what to add by month 36: GPUs beyond 16, in servers of 8
    need = math.ceil(4 * 1.1 ** 36 - 16)
    assert r.loc["GPUs", "add_by_horizon"] == f"{need} GPUs ({math.ceil(need / 8)} servers)"
    kw = 3 + 2 * 1.1 ** 36 - 10
    assert r.loc["rack r power", "add_by_horizon"] == f"{kw:.1f} kW of budget"
    assert "facility facility power" not in r.index  # no budget, nothing runs out


def test_outlook_without_growth_never_runs_out_and_already_over_is_month_0():
    assert outlook.runout(_summary(4, 16, 5000, 3000, 1e4), 0.0, 12)["runs_out_month"].isna().all()
    assert outlook.months_until(3.0, 8.0, 10.0, 0.05) == 0


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "default"
    r = runner.invoke(app, ["run", str(ROOT / "scenarios" / "default.yaml"), "--out", str(out),
                            "-q", "--report"])
    assert r.exit_code == 0, r.output
    return out


def test_run_report_is_one_offline_file_with_every_section(run_dir: Path):
    page = (run_dir / "report.html").read_text()
    assert "<script src" not in page and "<link " not in page  # nothing loaded from outside
    assert "* plotly.js v" in page  # the library itself is inlined
    for heading in ("Headline", "Power", "Energy", "Latency", "Utilisation",
                    "Capacity outlook", "Where the numbers come from"):
        assert f"<h2>{heading}</h2>" in page
    assert page.count("class=\"plotly-graph-div\"") == 5
    # the assumptions that dominate the energy figure are said beside it, with their weight

    t = json.loads((run_dir / "summary.json").read_text())["total"]
    energy = page.split("<h2>Energy</h2>")[1].split("<h2>")[0]
    share = t["host_and_psu_energy_kwh"] / t["it_energy_kwh"]
    assert f"Hosts and power supplies drew {share:.0%} of IT energy" in energy
    assert "dgx-h200 (50%)" in energy and "constant PUE of 1.3" in energy
    summary = json.loads((run_dir / "summary.json").read_text())
    served = summary["services"]["chat"]["requests_finished"]
    assert f"<div class='v'>{served:,}</div><div class='n'>requests served" in page


def test_report_of_a_folder_that_is_not_results_exits_1(tmp_path: Path):
    r = runner.invoke(app, ["report", str(tmp_path)])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "summary.json, optimize.json, sweep.json or sizing.json" in r.output
    assert not (tmp_path / "report.html").exists()
    r = runner.invoke(app, ["report", str(tmp_path), "--growth-per-month", "-2"])
    assert r.exit_code == 1 and "--growth-per-month" in r.output


# skipped on a developer's machine without the browser; in CI (CI=true) it runs and fails
# if .ci/run did not install it
@pytest.mark.skipif(not (CHROMIUM and DRIVER) and not os.environ.get("CI"),
                    reason="needs Debian chromium and chromium-driver (.ci/run installs them)")
def test_report_opens_in_a_real_browser_with_every_chart_drawn(run_dir: Path):
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--no-first-run", "--window-size=1300,1800"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get((run_dir / "report.html").as_uri())
        charts = "return document.querySelectorAll('.plotly-graph-div').length"
        drawn = ("return [...document.querySelectorAll('.plotly-graph-div')].filter(d => "
                 "d.querySelector('.main-svg') && d.querySelectorAll('path').length > 5).length")
        WebDriverWait(driver, 30).until(
            lambda d: d.execute_script(charts) > 0 and d.execute_script(drawn) ==
            d.execute_script(charts))
        assert driver.execute_script(charts) == 5
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    img = Image.open(io.BytesIO(png)).convert("L")
    dark = sum(n for v, n in enumerate(img.histogram()) if v < 200)
    assert dark / (img.width * img.height) > 0.01  # text and charts, not a blank page
    assert len(img.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50


def test_training_report_draws_jobs_with_their_checkpoints_and_failures(tmp_path: Path):
    scenario = tmp_path / "train.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "train-report",
        "fleet": {"racks": [{"name": "r", "count": 2, "power_budget_kw": 40,
                             "servers": [{"type": "dgx-h200", "count": 2}]}]},
        "workloads": [{"kind": "training", "name": "ft", "model": "llama-3.1-8b",
                       "gpu": "H200-SXM", "gpus": 16, "parallelism": {"tp": 1, "pp": 1, "dp": 16},
                       "steps": 2000, "global_batch_tokens": 1048576, "seq_len": 4096,
                       "micro_batches": 4, "checkpoint": {"interval_s": 1200},
                       "failures": {"times_s": [3000.0], "repair_s": 600}}],
        "simulation": {"duration_s": 10800, "seed": 1, "time_bucket_s": 60}}))
    out = tmp_path / "out"
    r = runner.invoke(app, ["run", str(scenario), "--out", str(out), "-q", "--report"])
    assert r.exit_code == 0, r.output
    page = (out / "report.html").read_text()
    assert "<h2>Training</h2>" in page and "<h2>Cluster</h2>" in page
    ckpt = pd.read_parquet(out / "checkpoints.parquet")
    assert len(ckpt) >= 3 and (ckpt["end_s"] > ckpt["start_s"]).all()
    assert '"name":"checkpoint"' in page and '"name":"failure"' in page
    # the headline fits a training run: when the job ends and its goodput, no serving cards
    headline = page[page.index("<h2>Headline</h2>"):page.index("<h2>", page.index(
        "<h2>Headline</h2>") + 1)]

    job = json.loads((out / "summary.json").read_text())["jobs"][0]
    assert "ft ends" in headline and "ft goodput" in headline
    assert f"{job['goodput']:.1%}" in headline
    assert "requests served" not in headline and "J per output token" not in headline


def test_optimizer_report_shows_plan_baselines_and_closed_loop(tmp_path: Path):
    from test_optimize_jobs import _scenario

    from dcsim.optimize.run import run_optimize
    from dcsim.output import write_run
    from dcsim.report.page import write_report
    from dcsim.scenario import scenario_from_data

    s = scenario_from_data(_scenario(deadline_s=3 * 3600.0))
    tables, summary, files, _ = run_optimize(s, ROOT, None, check=True)
    out = write_run(tmp_path / "opt", s, tables, summary, "optimize.json", files)
    page = write_report(out).read_text()
    for heading in ("Plan against baselines", "Per period", "Closed loop", "Training jobs"):
        assert f"<h2>{heading}</h2>" in page
    assert page.count("class=\"plotly-graph-div\"") == 3
    # the headline speaks GPUs, power and energy; the solver is a footnote under it
    headline = page.split("<h2>Headline</h2>")[1].split("<h2>")[0]
    gpus = ", ".join(f"{n:,} {g}" for g, n in summary["peak_gpus"].items())
    assert "GPUs at the peak" in headline and gpus in headline
    assert "facility power at the peak" in headline
    assert headline.index("class='kpis'") < headline.index("Solver: HiGHS")


def test_no_host_assumption_is_flagged_for_a_server_the_scenario_describes(run_dir: Path):

    from dcsim.report.assumptions import energy
    from dcsim.summary import RunSummary

    s = RunSummary.from_dict(json.loads((run_dir / "summary.json").read_text()), "")
    own = {"fleet": {"racks": [{"servers": [{"type": "my-box"}]}]},
           "catalog": {"servers": [{"id": "my-box"}]}, "facility": {"cooling": {}}}
    assert energy(own, s) == []  # the user's own server figures, a cooling model
    shipped = own | {"catalog": {}, "fleet": {"racks": [{"servers": [{"type": "dgx-h200"}]}]}}
    assert len(energy(shipped, s)) == 1 and "dgx-h200" in energy(shipped, s)[0]


def test_many_racks_are_drawn_as_shares_the_closest_alone_and_the_rest_as_one_line():
    from dcsim.report.figures_run import MAX_RACKS, power_vs_budgets

    n, t = 20, [0.0, 60.0]
    rows = [{"domain": "rack", "name": f"r{k}", "t_start_s": s, "t_end_s": s + 60,
             "power_w": 1000.0 * (k + 1) * (1 + (s > 0))} for k in range(n) for s in t]
    rows += [{"domain": "facility", "name": "facility", "t_start_s": s, "t_end_s": s + 60,
              "power_w": 5e5} for s in t]
    budgets = pd.DataFrame([{"domain": "rack", "name": f"r{k}", "budget_w": 40000.0}
                            for k in range(n)])
    fig = power_vs_budgets(pd.DataFrame(rows), budgets)
    racks = [tr for tr in fig.data if tr.name.startswith("rack r")]
    # the closest to their budgets: the largest draws, r19 first
    assert [tr.name for tr in racks] == [f"rack r{k}" for k in range(n - 1, n - 1 - MAX_RACKS,
                                                                      -1)]
    assert max(racks[0].y) == pytest.approx(2 * 20000 / 40000)
    rest = next(tr for tr in fig.data if "other racks" in tr.name)
    assert rest.name.startswith(f"{n - MAX_RACKS} other racks")
    # the rest's line is their highest share: r7's, 8 kW x 2 of 40 kW in the second bucket
    assert list(rest.y) == pytest.approx([8000 / 40000, 16000 / 40000])
