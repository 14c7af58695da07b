"""The power-capping controller (fleet.power_capping kind controller): budgets hold at
every instant, caps follow the measured draw with their window and reaction time, the
meter agrees with the energy accounting, and the latency cost lands where caps were."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dcsim.engine.account import account
from dcsim.engine.build import build
from dcsim.engine.context import Context
from dcsim.engine.run import run
from dcsim.errors import DcsimError
from dcsim.hardware.capping_spec import CappingController
from dcsim.scenario import scenario_from_data

BUDGET_KW = 7.2  # one DGX H200 of eight Llama-3.1-8B replicas: worst case ~9.9 kW


def burst(capping: dict | None, budget_kw: float = BUDGET_KW, seed: int = 1,
          rates: tuple[float, ...] = (4.0, 60.0, 4.0), step_s: float = 60.0) -> dict:
    """Quiet, a burst, quiet again, on one server under a rack budget."""
    fleet: dict = {"racks": [{"name": "r1", "power_budget_kw": budget_kw,
                              "servers": [{"type": "dgx-h200", "count": 1}]}]}
    if capping is not None:
        fleet["power_capping"] = capping
    return {"name": "capping", "fleet": fleet,
            "workloads": [{
                "kind": "inference", "name": "chat", "model": "llama-3.1-8b",
                "arrival": {"kind": "steps", "step_s": step_s, "rates_per_s": list(rates)},
                "prompt_tokens": {"kind": "lognormal", "mean_tokens": 2000, "sigma": 0.6,
                                  "max_tokens": 8000},
                "output_tokens": {"kind": "lognormal", "mean_tokens": 150, "sigma": 0.6,
                                  "max_tokens": 1000},
                "deployment": {"gpu": "H200-SXM", "tp": 1, "replicas": 8,
                               "max_num_seqs": 128, "max_batched_tokens": 8192}}],
            "simulation": {"duration_s": step_s * len(rates), "seed": seed,
                           "time_bucket_s": 10.0}}


def simulate_traced(data: dict):
    s = scenario_from_data(data)
    model = build(s, Context.load(s, Path(".")))
    rec = run(model, trace_power=True)
    return s, rec, account(model, rec)


def lasting(trace: list[tuple[float, int, float]]) -> pd.DataFrame:
    """The metered draw that holds from each instant on (the last value at a time)."""
    return (pd.DataFrame(trace, columns=["t_s", "domain", "power_w"])
            .groupby(["t_s", "domain"], sort=True).last().reset_index())


@pytest.fixture(scope="module")
def controlled():
    return simulate_traced(burst({"kind": "controller"}))


def test_budget_holds_at_every_instant_under_the_controller(controlled):
    _, rec, res = controlled
    held = lasting(rec.capper.trace)
    assert held["power_w"].max() <= BUDGET_KW * 1e3 * (1 + 1e-9)
    events = rec.capper.table()["event"].tolist()
    # not vacuous: uncapped, the burst would exceed the budget, and it did brake
    assert "brake" in events and "release" in events
    assert rec.capper.summary(180.0)[0]["excess_w"] <= 1e-6
    assert res.capping.equals(rec.capper.table())


def test_meter_agrees_with_the_energy_accounting(controlled):
    s, rec, res = controlled
    held = lasting(rec.capper.trace)
    t, w = held["t_s"].to_numpy(), held["power_w"].to_numpy()
    metered = float(np.sum(w[:-1] * np.diff(t)) + w[-1] * (s.simulation.duration_s - t[-1]))
    rack = res.power[res.power["domain"] == "rack"]
    accounted = float((rack["power_w"] * (rack["t_end_s"] - rack["t_start_s"])).sum())
    # the meter takes a decode block at its larger end step's power: never below the
    # energy charged, and close to it
    assert accounted * 0.999 <= metered <= accounted * 1.01


def test_a_cap_comes_a_window_and_a_reaction_after_the_crossing():
    spec = {"kind": "controller", "window_s": 0.5, "reaction_s": 1.5, "hold_s": 20.0,
            "cap_at_fraction": 0.8, "release_below_fraction": 0.6}
    # a budget the burst nears (the cap at 80 %) and would exceed uncapped
    _, rec, _ = simulate_traced(burst(spec, budget_kw=8.5))
    caps = rec.capper.table()
    caps = caps[caps["event"] == "cap"]
    assert len(caps) > 0
    held = lasting(rec.capper.trace)
    t, w = held["t_s"].to_numpy(), held["power_w"].to_numpy()
    level = 0.8 * 8500.0
    for t_cap in caps["t_s"]:
        start = t_cap - 1.5 - 0.5  # the window opened at a crossing
        k = np.searchsorted(t, start, side="right") - 1
        assert np.isclose(t[k], start) and w[k] >= level  # a crossing at that instant
        inside = (t >= start) & (t < start + 0.5)
        tt = np.append(t[inside], start + 0.5)
        mean = np.sum(w[inside] * np.diff(tt)) / 0.5
        assert mean >= level


def test_a_cap_lifts_after_a_hold_span_whose_mean_is_below_the_release_level():
    _, rec, _ = simulate_traced(burst({"kind": "controller", "hold_s": 15.0}))
    ev = rec.capper.table()
    starts = ev[ev["event"].isin(["cap", "brake"])]["t_s"].to_numpy()
    ends = ev[ev["event"] == "release"]["t_s"].to_numpy()
    assert len(ends) > 0
    held = lasting(rec.capper.trace)
    t, w = held["t_s"].to_numpy(), held["power_w"].to_numpy()
    level = 0.8 * BUDGET_KW * 1e3
    for t_end in ends:
        assert t_end - starts[starts < t_end].max() >= 15.0 - 1e-9  # held at least hold_s
        # the mean metered draw over the hold span before the release
        inside = (t >= t_end - 15.0) & (t < t_end)
        k = np.searchsorted(t, t_end - 15.0, side="right") - 1
        tt = np.concatenate([[t_end - 15.0], t[inside], [t_end]])
        ww = np.concatenate([[w[k]], w[inside]])
        assert np.sum(ww * np.diff(tt)) / 15.0 < level


def test_the_latency_cost_lands_where_caps_were(controlled):
    """Static capping slows every request; the controller only those it capped: in the
    quiet minutes its requests are faster than under the static cap."""
    _, _, ctrl = controlled
    static = simulate_traced(burst(None))[2]
    free = simulate_traced(burst(None, budget_kw=40.0))[2]

    def ttft(res, lo, hi):
        r = res.requests
        return r[(r["arrival_s"] >= lo) & (r["arrival_s"] < hi)]["ttft_s"].mean()

    assert (static.replicas["power_cap_w"] < 500).all()
    assert ttft(ctrl, 0, 60) < ttft(static, 0, 60)
    assert ttft(ctrl, 0, 60) >= ttft(free, 0, 60) * 0.999
    assert ttft(ctrl, 60, 120) > ttft(free, 60, 120)  # the burst ran capped


def test_same_seed_same_caps():
    a = simulate_traced(burst({"kind": "controller"}, seed=3))[1].capper.table()
    b = simulate_traced(burst({"kind": "controller"}, seed=3))[1].capper.table()
    pd.testing.assert_frame_equal(a, b)


def test_bad_capping_input_is_one_line():
    with pytest.raises(DcsimError, match="release_below_fraction"):
        scenario_from_data(burst({"kind": "controller", "cap_at_fraction": 0.7,
                                  "release_below_fraction": 0.8}))
    data = burst({"kind": "controller"})
    data["workloads"][0]["scaling"] = {"kind": "schedule", "steps": [
        {"at_s": 0, "replicas": 8}, {"at_s": 60, "replicas": 8, "power_cap_w": 400}]}
    s = scenario_from_data(data)
    with pytest.raises(DcsimError, match=r"workloads\[0\]\.scaling\.steps\[1\]\.power_cap_w"):
        build(s, Context.load(s, Path(".")))


def test_defaults_are_stated_assumptions():
    spec = CappingController(kind="controller")
    for name in ("cap_at_fraction", "release_below_fraction", "window_s", "reaction_s",
                 "hold_s"):
        assert "assumption" in CappingController.model_fields[name].description
        assert getattr(spec, name) > 0


def test_report_draws_replicas_limits_and_queues_with_caps_shaded(tmp_path: Path):
    import yaml
    from typer.testing import CliRunner

    from dcsim.cli import app
    from dcsim.report import operations as ops

    data = burst({"kind": "controller"})
    data["workloads"][0]["scaling"] = {
        "kind": "autoscaler", "metric": "outstanding_per_replica", "target": 8,
        "min_replicas": 2, "max_replicas": 8, "initial_replicas": 2}
    path = tmp_path / "scaled.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "-q", "--report"])
    assert r.exit_code == 0, r.output
    page = (out / "report.html").read_text()
    section = page.split("<h2>Operations over time</h2>")[1].split("<h2>")[0]
    assert "plotly-graph-div" in section and "capped" in section
    scaling, capping, replicas = (pd.read_parquet(out / f"{t}.parquet")
                                  for t in ("scaling", "capping", "replicas"))
    steps = ops.serving_steps(scaling, replicas)
    # two serve from the start; after the last cold start, as many as the last target
    assert steps["serving"].iloc[0] == 2
    targets = scaling[scaling["event"] == "target"]
    assert steps["serving"].iloc[-1] == targets["value"].iloc[-1]
    # the limit drawn is the capped one exactly while the rack was capped
    t, w = ops.limit_steps(scaling, capping, replicas, "chat", 180.0)
    low = replicas["capped_limit_w"].iloc[0]
    assert low < replicas["limit_w"].iloc[0]
    capped_s = float(np.sum(np.diff(np.append(t, 180.0))[w == low]))
    summary = pd.read_json(out / "summary.json", typ="series")["power_capping"][0]
    assert capped_s == pytest.approx(summary["capped_s"])


def test_horizon_table_gives_the_saving_and_the_worst_period_by_hand():
    from dcsim.report.operations import continuous_rows

    day = [{"plan": "plan", "facility_kwh": 60.0, "slo_attainment": {"a": 0.99},
            "gpu_hours_in_use": 10.0, "cold_starts": 3},
           {"plan": "peak", "facility_kwh": 80.0, "slo_attainment": {"a": 1.0},
            "gpu_hours_in_use": 24.0, "cold_starts": 0}]
    periods = pd.DataFrame({"plan": ["plan"] * 2 + ["peak"] * 2, "period": [0, 1, 0, 1],
                            "ttft_p99_s": [0.2, 0.9, 0.1, 0.3],
                            "tpot_p99_s": [0.01, 0.05, 0.01, 0.02]})
    rows = continuous_rows(day, periods).set_index("plan")
    assert rows.loc["plan", "saved vs peak"] == "25.0%"  # 1 - 60 / 80
    assert rows.loc["plan", "worst period"] == 1 and rows.loc["plan", "its p99 TTFT (s)"] == 0.9
    assert rows.loc["peak", "saved vs peak"] == "0.0%"


def short_supply(on_shortfall: str, capping: dict | None = None) -> dict:
    """Eight replicas drawing up to 7 kW of IT in bursts behind a grid limit of 7 kW at
    the meter plus 4 kW of synthetic sun (PUE 1.3: 5.9 kW of IT from 06:50, 6.0 kW from
    07:00), for 20 minutes."""
    data = burst(capping or {"kind": "controller"}, budget_kw=40.0, rates=(10.0,),
                 step_s=1200.0)
    data["facility"] = {"pue": 1.3, "start_time": "2025-06-01T06:50:00", "supply": {
        "grid_limit_kw": 7.0, "on_shortfall": on_shortfall,
        "renewables": [{"name": "pv", "kind": "solar", "installed_kw": 4.0}]}}
    data["simulation"]["time_bucket_s"] = 60.0
    return data


@pytest.fixture(scope="module")
def supply_runs():
    from dcsim.supply.apply import supply_tables

    out = {}
    for mode in ("cap", "report"):
        s, rec, res = simulate_traced(short_supply(mode))
        _, entry = supply_tables(res.power, s.facility, Path("."))
        out[mode] = (s, rec, res, entry["rule"])
    return out


def test_a_short_supply_caps_the_gpus_hour_by_hour(supply_runs):
    _, rec, _, _ = supply_runs["cap"]
    ev = rec.capper.table()
    sup = ev[ev["kind"] == "supply"]
    budgets = sup[sup["event"] == "budget"]
    # one change of budget, at 07:00; the sun is higher in the second hour. In the
    # first, the sun at 06:50 (the lower end) counts: 0.8 sin(pi (6.833 - 6) / 12)
    assert budgets["t_s"].tolist() == [600.0]
    first = (7.0 + 4.0 * 0.8 * math.sin(math.pi * (50 / 60) / 12)) * 1e3 / 1.3
    assert sup["budget_w"].iloc[0] == pytest.approx(first, rel=1e-6)
    assert budgets["budget_w"].iloc[0] > sup["budget_w"].iloc[0]
    # the metered draw of the whole site never exceeds the hour's budget
    d = rec.capper.supply_d
    held = lasting(rec.capper.trace)
    held = held[held["domain"] == d]
    hour = (held["t_s"] >= 600.0).astype(int)
    assert (held["power_w"].to_numpy() <= rec.capper.supply.budgets_w[hour] * (1 + 1e-9)).all()
    assert {"brake", "cap"} & set(sup["event"])
    # capped, the server's worst case (eight GPUs at the limit, host at full load)
    # fills the hour's budget exactly: the highest common limit that fits
    from dcsim.catalog import load_catalog
    from dcsim.hardware.server import wall_w

    cat = load_catalog()
    for row in sup.itertuples():
        worst = wall_w(8 * row.limit_w, cat.server("dgx-h200"), cat.gpu("H200-SXM"))
        assert worst == pytest.approx(row.budget_w, rel=1e-6)


def test_capping_on_shortfall_leaves_only_the_switches_unmet(supply_runs):
    _, _, res_cap, cap = supply_runs["cap"]
    _, _, res_rep, rep = supply_runs["report"]
    net = res_cap.power[res_cap.power["domain"] == "network"]
    net_kwh = float((net["power_w"] * (net["t_end_s"] - net["t_start_s"])).sum()) / 3.6e6
    assert rep["unmet_kwh"] > 0.1  # reported: the shortfall is real
    assert cap["unmet_kwh"] <= 1.3 * net_kwh + 1e-6  # capped: what the meter misses
    # the latency cost is in the requests
    assert res_cap.requests["ttft_s"].mean() > res_rep.requests["ttft_s"].mean()


def test_capping_on_shortfall_needs_the_controller_and_a_grid_limit():
    from dcsim.references import check_references

    data = short_supply("cap")
    data["fleet"].pop("power_capping")
    problems = check_references(scenario_from_data(data), Path("."))
    assert any(p.path == "facility.supply.on_shortfall" for p in problems)
    data = short_supply("cap")
    data["facility"]["supply"].pop("grid_limit_kw")
    with pytest.raises(DcsimError, match="grid_limit_kw"):
        scenario_from_data(data)


def test_a_controller_that_never_acts_changes_nothing_and_adds_no_event():
    """No polling: with a budget the draw never nears, the controlled run is the static
    run request by request, with the same SimPy events."""
    static = simulate_traced(burst(None, budget_kw=40.0, rates=(20.0,), step_s=60.0))
    ctrl = simulate_traced(burst({"kind": "controller"}, budget_kw=40.0, rates=(20.0,),
                                 step_s=60.0))
    assert ctrl[1].capper.table().empty
    assert ctrl[1].events == static[1].events
    pd.testing.assert_frame_equal(ctrl[2].requests, static[2].requests)
