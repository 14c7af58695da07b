"""`dcsim size`: the least fleet, confirmed by simulation, its money and its run-out."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyomo.environ as pyo
import pytest
import yaml
from engine_helpers import chat_service
from typer.testing import CliRunner

from dcsim.cli import app
from dcsim.engine.simulation import simulate
from dcsim.errors import DcsimError
from dcsim.optimize import costs
from dcsim.optimize.sizing import SizingInputs, build, servers_needed, size
from dcsim.scenario import scenario_from_data
from dcsim.slo import meets_p99

runner = CliRunner()
RATE = 40.0
YEAR_S = 365 * 86400.0


def _scenario(servers: int = 2, **extra: object) -> dict:
    svc = chat_service(RATE, 2, slo={"ttft_p99_s": 0.5, "tpot_p99_s": 0.05})
    return {"name": "size-small", "facility": {"pue": 1.2},
            "fleet": {"racks": [{"name": "r", "power_budget_kw": 40,
                                 "servers": [{"type": "dgx-h200", "count": servers}]}]},
            "workloads": [svc],
            "optimize": {"period_s": 3600, "periods": 1,
                         "candidates": {"tp": [1, 2], "power_cap_fractions": [1.0],
                                        "max_num_seqs": [256]},
                         "verify_duration_s": 240},
            "simulation": {"duration_s": 3600, "warmup_s": 30, "seed": 3}, **extra}


@pytest.fixture(scope="module")
def sized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("size")
    (tmp / "s.yaml").write_text(yaml.safe_dump(_scenario(servers=1)))
    r = runner.invoke(app, ["size", str(tmp / "s.yaml"), "--out", str(tmp / "out"),
                            "--growth-per-month", "0.2", "--months", "12"])
    assert r.exit_code == 0, r.output
    (tmp / "terminal.txt").write_text(r.output)
    return tmp / "out"


def _slo_met(scenario: dict) -> bool:
    s = scenario_from_data(scenario)
    r = simulate(s)
    req = r.requests[~r.requests["in_warmup"]]
    return all(meets_p99(req[req["service"] == w.name], w.slo, s.simulation.duration_s)
               for w in s.workloads)


def test_the_sized_fleet_meets_the_slos_in_simulation_and_one_replica_fewer_does_not(
        sized: Path):
    summary = json.loads((sized / "sizing.json").read_text())
    check = summary["check"][0]
    assert check["meets_slo"] and check["one_fewer_meets_slo"] is False
    # the scenario it writes is the sized fleet at the peak; run it ourselves
    peak = yaml.safe_load((sized / "sized.yaml").read_text())
    replicas = sum(w["deployment"]["replicas"] for w in peak["workloads"])
    assert replicas == check["replicas"] and summary["gpus"] == {"H200-SXM": check["gpus"]}
    assert sum(w["arrival"]["rate_per_s"] for w in peak["workloads"]) == pytest.approx(RATE)
    assert _slo_met(peak)
    fewer = json.loads(json.dumps(peak))
    biggest = max(fewer["workloads"], key=lambda w: w["deployment"]["replicas"])
    biggest["deployment"]["replicas"] -= 1
    fewer["workloads"] = [w for w in fewer["workloads"] if w["deployment"]["replicas"] > 0]
    share = RATE / sum(w["arrival"]["rate_per_s"] for w in fewer["workloads"])
    for w in fewer["workloads"]:  # the same traffic on one replica fewer
        w["arrival"]["rate_per_s"] *= share
    assert not _slo_met(fewer)
    terminal = (sized.parent / "terminal.txt").read_text()
    assert "sized fleet" in terminal and "confirmed by simulation" in terminal
    assert "per million tokens" in terminal and "runs out" in terminal
    # and it speaks per stage, ending on what the simulation confirmed
    assert "sizing MILP round 1: " in terminal
    assert f"confirmed: chat at 40 req/s on {check['replicas']} replicas meets its SLOs, " \
        "one fewer does not" in terminal.replace("\n", " ")
    # servers: the fleet's GPUs in 8-GPU servers; racks of the scenario's design (1 each)
    fleet = pd.read_parquet(sized / "sizing_fleet.parquet").iloc[0]
    assert fleet["servers"] == math.ceil(fleet["gpus"] / 8) and fleet["racks"] == fleet[
        "servers"]


def test_power_and_the_year_follow_from_the_periods(sized: Path):
    s = json.loads((sized / "sizing.json").read_text())
    periods = pd.read_parquet(sized / "sizing_periods.parquet")
    # one period of an hour, repeated over a year
    assert s["energy_mwh_per_year"] == pytest.approx(
        periods["facility_kwh"].sum() * 8760 / 1e3, rel=1e-9)
    # the simulated peak within 10 % of the predicted one (inference only, same fleet)
    assert s["facility_mw_simulated_at_peak"] == pytest.approx(
        s["facility_mw_predicted_at_peak_inference"], rel=0.1)
    # tokens: 40 req/s over a year of ~800-token prompts and ~150-token outputs (the
    # lognormals' means, slightly under after their caps)
    assert s["tokens_per_year"] == pytest.approx(RATE * YEAR_S * 950, rel=0.05)
    capex = pd.read_parquet(sized / "sizing_capex.parquet").set_index("item")
    assert capex.loc["dgx-h200", "count"] == sum(s["servers"].values())
    assert capex.loc["facility", "count"] == pytest.approx(s["nameplate_mw"] * 1e3)
    per_year = (capex["count"] * capex["unit_capex_usd"] / capex["amortisation_years"]).sum()
    assert s["capex_usd_per_year"] == pytest.approx(per_year)
    assert s["tco_usd_per_year"] == pytest.approx(per_year + s["electricity_usd_per_year"])
    assert s["usd_per_million_tokens"] == pytest.approx(
        s["tco_usd_per_year"] / s["tokens_per_year"] * 1e6)
    assert set(capex["provenance"]) <= {"published", "published estimate", "assumption"}


def _least_gpus(rates: dict[int, float], demand: float) -> int:
    """Brute force: the fewest GPUs of tp-1 and tp-2 replicas carrying the demand."""
    top = math.ceil(demand / min(rates.values())) + 1
    return min(n1 + 2 * n2 for n1, n2 in itertools.product(range(top), repeat=2)
               if n1 * rates.get(1, 0.0) + n2 * rates.get(2, 0.0) >= demand - 1e-9)


def test_growth_resizes_each_month_and_finds_the_month_the_gpus_run_out(sized: Path):
    cap = pd.read_parquet(sized / "capacity.parquet")
    rates = {int(r["tp"]): float(r["planned_rps"]) for _, r in cap.iterrows()}
    g = pd.read_parquet(sized / "sizing_growth.parquet")
    gpus = g[g["resource"] == "GPUs H200-SXM"].set_index("month")
    for m, row in gpus.iterrows():
        assert row["need"] == _least_gpus(rates, RATE * 1.2 ** m), m
    out = pd.read_parquet(sized / "sizing_runout.parquet").set_index("resource")
    short = [m for m, row in gpus.iterrows() if row["need"] > 8]  # the scenario has 8
    assert out.loc["GPUs H200-SXM", "runs_out_month"] == short[0]
    assert out.loc["GPUs H200-SXM", "add_by_horizon"] == gpus["need"].iloc[-1] - 8
    # what to add each month sums to what the horizon needs beyond the site
    assert gpus["add"].sum() == pytest.approx(out.loc["GPUs H200-SXM", "add_by_horizon"])


def test_the_sizing_milp_matches_hand_optima():
    table = pd.DataFrame([
        {"service_index": 0, "gpu": "X", "tp": 1, "planned_rps": 10.0, "power_a_w": 500.0,
         "power_b_w_per_rps": 10.0},
        {"service_index": 0, "gpu": "Y", "tp": 1, "planned_rps": 15.0, "power_a_w": 800.0,
         "power_b_w_per_rps": 10.0}])
    x = SizingInputs(table, np.array([[30.0]]), ["chat"], {}, {"X": 1.0, "Y": 1.0}, 1)
    assert size(x, 10).gpus == {"X": 0, "Y": 2}  # 2 x 15 beats 3 x 10
    # Y twice X's price per GPU: three X (3) beat two Y (4)
    assert size(SizingInputs(table, x.demand, ["chat"], {}, {"X": 1.0, "Y": 2.0}, 1), 10
                ).gpus == {"X": 3, "Y": 0}
    # training holds 5 Y GPUs: the fleet's Y is inference's plus training's
    v = size(SizingInputs(table, x.demand, ["chat"], {("Y", 0): 5}, {"X": 1.0, "Y": 1.0}, 1),
             10)
    assert v.gpus["X"] + v.gpus["Y"] - 5 == 2 and v.gpus["Y"] >= 5
    # among fleets of equal GPUs, the least power: 2 GPUs, 20 req/s: 2 X (1,200 W) over
    # 2 Y (1,800 W)
    v = size(SizingInputs(table, np.array([[20.0]]), ["chat"], {}, {"X": 1.0, "Y": 1.0}, 1), 10)
    assert v.gpus == {"X": 2, "Y": 0}
    m = build(x)
    assert {c.name for c in m.component_objects(pyo.Constraint)} == {
        "demand", "capacity", "min_replicas", "gpus"}


def test_tp_replicas_pack_into_servers_first_fit_decreasing():
    assert servers_needed([8, 4, 2, 2, 1, 1, 1, 1], 8) == 3  # 20 GPUs, no server split
    assert servers_needed([1] * 9, 8) == 2
    assert servers_needed([], 8) == 0


def test_training_jobs_hold_their_servers_and_the_spares(tmp_path: Path):
    d = _scenario(servers=4)
    d["workloads"] = [{"kind": "training", "name": "ft", "model": "llama-3.1-8b",
                       "gpu": "H200-SXM", "gpus": 16,
                       "parallelism": {"tp": 1, "pp": 1, "dp": 16},
                       "total_tokens": 2e9, "global_batch_tokens": 1_048_576}]
    d["fleet"]["training_scheduler"] = {"spare_servers": 1}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(d))
    r = runner.invoke(app, ["size", str(tmp_path / "t.yaml"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "o" / "sizing.json").read_text())
    assert s["servers"] == {"dgx-h200": 3} and s["gpus"] == {"H200-SXM": 24}
    assert s["check"] == [] and "confirmed by simulation" not in r.output


def test_a_job_with_a_deadline_gets_the_fewest_data_parallel_replicas_that_meet_it(
        tmp_path: Path):
    from dcsim.engine.context import Context
    from dcsim.optimize import jobs as jobs_

    d = _scenario(servers=4)
    job = {"kind": "training", "name": "ft", "model": "llama-3.1-8b", "gpu": "H200-SXM",
           "gpus": 16, "parallelism": {"tp": 1, "pp": 1, "dp": 16}, "total_tokens": 2e9,
           "global_batch_tokens": 1_048_576}
    d["workloads"] = [job]

    def end(dp: int) -> float:  # the expected end of the job on dp GPUs, as the model says
        j = job | {"gpus": dp, "parallelism": {"tp": 1, "pp": 1, "dp": dp}}
        s = scenario_from_data(d | {"workloads": [j]})
        return float(jobs_.job_options(s, s.workloads, Context.load(s).catalog,
                                       Context.load(s).store, [1.0])["end_s"].iloc[0])

    ends = [end(k) for k in range(1, 17)]
    assert all(a >= b for a, b in itertools.pairwise(ends))  # more GPUs, sooner
    d["workloads"] = [job | {"deadline_s": (ends[5] + ends[4]) / 2}]  # 6 GPUs just do
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(d))
    r = runner.invoke(app, ["size", str(tmp_path / "t.yaml"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    s = json.loads((tmp_path / "o" / "sizing.json").read_text())
    assert s["training"][0]["gpus"] == 6 and s["training"][0]["gpus_asked"] == 16
    assert s["training"][0]["expected_end_s"] == pytest.approx(ends[5])
    assert s["gpus"] == {"H200-SXM": 8}  # one whole server for the job
    # a deadline even the asked 16 GPUs miss is the job's own clear error
    d["workloads"] = [job | {"deadline_s": ends[15] / 2}]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(d))
    r = runner.invoke(app, ["size", str(tmp_path / "t.yaml"), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 1 and "deadline_s" in r.output and "Traceback" not in r.output


def test_unit_costs_come_from_the_scenario_when_it_gives_them(tmp_path: Path):
    t = costs.unit_costs({"dgx-h200": 400_000.0}, {"dgx-h200": 4.0})
    row = t.set_index("item").loc["dgx-h200"]
    assert row["capex_usd"] == 400_000 and row["provenance"] == "scenario"
    rows = costs.capex_rows({"dgx-h200": 3}, 2, 30.6, t).set_index("item")
    assert rows.loc["dgx-h200", "usd_per_year"] == pytest.approx(3 * 400_000 / 4)
    assert rows.loc["rack", "count"] == 2
    # a server of the scenario's own catalog can be priced; an unknown name cannot
    own = costs.unit_costs({"my-box": 90_000.0}, {}, {"my-box"}).set_index("item")
    assert own.loc["my-box", "capex_usd"] == 90_000 and own.loc["my-box", "provenance"] == \
        "scenario"
    with pytest.raises(DcsimError, match=r"sizing\.capex_usd"):
        costs.unit_costs({"my-box": 90_000.0}, {})


@pytest.mark.parametrize(("extra", "args", "words"), [
    ({"sizing": {"capex_usd": {"dgx-h999": 1.0}}}, [], "sizing.capex_usd"),
    ({"sizing": {"capex_usd": {"dgx-h200": -5.0}}}, [], "positive"),
    ({}, ["--objective", "watts"], "gpus or capex"),
    ({"fleet": {"racks": []}}, [], "fleet.racks"),  # no rack design to repeat
])
def test_bad_sizing_input_exits_1_and_writes_nothing(tmp_path: Path, extra, args, words):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_scenario(**extra)))
    r = runner.invoke(app, ["size", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "o"),
                            *args])
    assert r.exit_code == 1 and words in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_the_report_of_a_sizing_speaks_gpus_mw_and_money(sized: Path):
    from dcsim.report.page import write_report

    page = write_report(sized).read_text()
    s = json.loads((sized / "sizing.json").read_text())
    assert "sized fleet" in page and "Confirmed by simulation" in page
    assert "What the money rests on" in page and "As demand grows" in page
    assert f"{s['gpus']['H200-SXM']} H200-SXM" in page and "per million tokens" in page


def test_the_api_sizes_as_the_command_does(sized: Path):
    import dcsim

    # least server capex: with one GPU type, the same fleet as the fewest GPUs
    z = dcsim.size(scenario_from_data(_scenario(servers=1)), objective="capex")
    assert z.summary["objective"] == "capex"
    assert z.summary["gpus"] == json.loads((sized / "sizing.json").read_text())["gpus"]
    assert z.check["meets_slo"].all() and len(z.growth) == 0
