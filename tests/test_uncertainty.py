"""The profile's own error: spreads by provenance, their draws, and runs that carry them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import load_yaml, random_chat_file
from typer.testing import CliRunner

from dcsim.cli import app
from dcsim.profiles import published as pb
from dcsim.profiles import uncertainty as unc
from dcsim.profiles.accuracy import leave_one_model_out, leave_one_out, summarize

ROOT = Path(__file__).resolve().parents[1]


def test_spreads_are_the_errors_the_project_measures(store):
    """The constants are recomputed here from the shipped data (3 decimals)."""
    loo = summarize(leave_one_out(store)).loc["all"]
    lomo = summarize(leave_one_model_out(store)).loc["all"]
    cmp = pb.comparison(store)
    train = pb.holdout_split(cmp)
    held = pb.error_summary(pb.with_overhead(cmp, pb.fit_overhead(cmp, train))[~train]).iloc[0]
    got = {"interpolated": (loo["latency_median"], loo["energy_median"]),
           "derived_model": (lomo["latency_median"], lomo["energy_median"]),
           "derived_gpu": (held["tpot_median"], held["energy_median"])}
    for kind, (lat, en) in got.items():
        assert unc.MEDIANS[kind] == pytest.approx((lat, en), abs=0.0015), kind


def test_draws_are_deterministic_and_have_the_stated_spread():
    assert unc.draw(4, "H100-SXM", "m", "decode", "derived_gpu") == unc.draw(
        4, "H100-SXM", "m", "decode", "derived_gpu")
    logs = np.log([unc.draw(s, "H100-SXM", "m", "decode", "derived_gpu") for s in range(3000)])
    s_lat, s_en = unc.SPREADS["derived_gpu"]
    assert logs[:, 0].std() == pytest.approx(s_lat, rel=0.06)
    assert logs[:, 1].std() == pytest.approx(s_en, rel=0.06)
    assert abs(logs[:, 0].mean()) < 3 * s_lat / np.sqrt(3000)  # no bias: median factor 1


def test_drawn_answers_stay_within_the_power_limit(catalog, store):
    b, s = np.meshgrid([1.0, 16, 256], [128.0, 4096])
    for seed in range(6):
        u = store.with_uncertainty(seed)
        for gpu in ("H200-SXM", "H100-SXM", "B200"):
            for phase in ("prefill", "decode"):
                cost = u.resolve(gpu, "llama-3.1-8b", phase)
                out = cost.evaluate(b.ravel(), s.ravel())
                assert np.all(out.power_w <= catalog.gpu(gpu).tdp_w * (1 + 1e-9))
                assert cost.factors != (1.0, 1.0)
    assert store.resolve("H200-SXM", "llama-3.1-8b", "decode").factors == (1.0, 1.0)


def test_runs_with_profile_uncertainty_widen_their_intervals(tmp_path):
    f = random_chat_file(tmp_path)
    runner = CliRunner()
    bad = runner.invoke(app, ["run", str(f), "--out", str(tmp_path / "x"), "-q",
                              "--profile-uncertainty"])
    assert bad.exit_code == 1 and "--replications" in bad.output
    assert not (tmp_path / "x").exists()
    width = {}
    for name, extra in (("seeds", []), ("profile", ["--profile-uncertainty"])):
        r = runner.invoke(app, ["run", str(f), "--out", str(tmp_path / name), "-q",
                                "--replications", "4", "--workers", "2", *extra])
        assert r.exit_code == 0, r.output
        block = json.loads((tmp_path / name / "summary.json").read_text())["replications"]
        assert block["profile_uncertainty"] == bool(extra)
        m = block["metrics"]["services.chat.j_per_output_token"]
        width[name] = m["high"] - m["low"]
    assert width["profile"] > 2 * width["seeds"]


def test_quantile_factors_follow_the_normal_quantile():
    from statistics import NormalDist

    f_lat, f_en = unc.quantile_factors(0.9, "interpolated")
    z = NormalDist().inv_cdf(0.9)
    assert f_lat == pytest.approx(np.exp(unc.SPREADS["interpolated"][0] * z))
    assert f_en == pytest.approx(np.exp(unc.SPREADS["interpolated"][1] * z))
    assert unc.quantile_factors(0.5, "derived_gpu") == pytest.approx((1.0, 1.0))


def test_robust_plans_never_need_fewer_gpus_and_say_what_the_margin_costs():
    from dcsim.optimize.run import run_optimize
    from dcsim.scenario import scenario_from_data

    d = load_yaml(ROOT / "scenarios" / "optimize_diurnal.yaml")
    d["optimize"].update(periods=3, period_s=600)
    d["optimize"].pop("verify_duration_s", None)
    s = scenario_from_data(d)
    tables, summary, _, _ = run_optimize(s, ROOT / "scenarios", None, False, 0.9)
    m = summary["quantile"]
    assert m["q"] == 0.9 and set(m["peak_gpus"]) == set(m["peak_gpus_at_median"])
    for g, n in m["peak_gpus"].items():
        assert n >= m["peak_gpus_at_median"][g]
        assert m["extra_gpus"][g] == n - m["peak_gpus_at_median"][g]
    # every configuration serves less at the quantile than at the median answers
    from dcsim.engine.context import Context
    from dcsim.optimize.table import capacity_table

    ctx = Context.load(s, ROOT / "scenarios")
    median = capacity_table(s, [w for w in s.workloads if hasattr(w, "deployment")],
                            ctx.catalog, ctx.store, s.optimize, ROOT / "scenarios")
    key = ["service", "config"]
    both = tables["capacity"].merge(median, on=key, suffixes=("_q", "_m"))
    assert len(both) and (both["capacity_rps_q"] <= both["capacity_rps_m"] + 1e-9).all()
    assert (both["capacity_rps_q"] < both["capacity_rps_m"]).any()
