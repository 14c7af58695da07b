"""Replications under independent seeds, and their 95 % intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from engine_helpers import load_yaml, random_chat_file
from typer.testing import CliRunner

from dcsim import replications as reps
from dcsim.cli import app
from dcsim.scenario import scenario_from_data
from dcsim.workloads.requests import service_requests

ROOT = Path(__file__).resolve().parents[1]


def test_seeds_are_deterministic_distinct_and_start_with_the_scenarios():
    a, b = reps.replication_seeds(7, 6), reps.replication_seeds(7, 6)
    assert a == b and a[0] == 7 and len(set(a)) == 6
    assert all(0 <= s < 2**63 for s in a)
    assert reps.replication_seeds(8, 3)[1:] != a[1:3]


def test_t_interval_by_hand():
    mean, low, high = reps.t_interval([1.0, 2.0, 3.0, 4.0])
    half = 3.182446 * np.std([1, 2, 3, 4], ddof=1) / 2  # t(0.975, 3) x s / sqrt(4)
    assert mean == 2.5 and low == pytest.approx(2.5 - half) and high == pytest.approx(2.5 + half)
    assert reps.t_interval([5.0]) == (5.0, None, None)


def _arrivals(d: dict, seed: int) -> int:
    """Requests the engine draws for the first service under `seed` (as build does:
    one seed stream per workload, the first of its two for the requests)."""
    s = scenario_from_data(d)
    stream = np.random.SeedSequence(seed).spawn(len(s.workloads))[0].spawn(2)[0]
    return len(service_requests(s.workloads[0], s.simulation.duration_s, stream))


def test_intervals_cover_the_true_mean_about_95_percent_of_the_time():
    """Poisson arrivals at 4 / s for 50 s: the true mean count is 200. Over 200 trials of
    5 replications each (seeds as dcsim run draws them), the 95 % interval of the mean
    count covers 200 in 90-99 % of the trials."""
    d = load_yaml(ROOT / "scenarios" / "default.yaml")
    d["workloads"][0]["arrival"] = {"kind": "poisson", "rate_per_s": 4.0}
    d["workloads"][0]["prompt_tokens"] = {"kind": "constant", "tokens": 100}
    d["workloads"][0]["output_tokens"] = {"kind": "constant", "tokens": 10}
    d["simulation"] = {"duration_s": 50.0, "seed": 0}
    from dcsim.engine.simulation import simulate

    # the draw above is the engine's own: the simulator serves exactly those requests
    assert len(simulate(scenario_from_data(d | {"simulation": {"duration_s": 50.0,
                                                                "seed": 3}})).requests) == \
        _arrivals(d, 3)
    covered = 0
    for trial in range(200):
        counts = [_arrivals(d, s) for s in reps.replication_seeds(1000 + trial, 5)]
        _, low, high = reps.t_interval(counts)
        covered += low <= 200.0 <= high
    assert 0.90 <= covered / 200 <= 0.99


def test_run_with_replications_writes_intervals_and_one_replication_is_the_plain_run(
        tmp_path):
    f = random_chat_file(tmp_path)
    runner = CliRunner()
    outs = {}
    for name, extra in (("plain", []), ("one", ["--replications", "1"]),
                        ("three", ["--replications", "3", "--workers", "2"]),
                        ("again", ["--replications", "3", "--workers", "1"])):
        r = runner.invoke(app, ["run", str(f), "--out", str(tmp_path / name), "-q", *extra])
        assert r.exit_code == 0, r.output
        outs[name] = json.loads((tmp_path / name / "summary.json").read_text())
    assert outs["plain"] == outs["one"] and "replications" not in outs["one"]
    block = outs["three"]["replications"]
    assert block["n"] == 3 and block["seeds"][0] == 5 and "t-interval" in block["method"]
    m = block["metrics"]["services.chat.ttft_p99_s"]
    assert m["low"] < m["mean"] < m["high"]
    # the first replication's own figures are the file's, and reruns give the same intervals
    assert {k: v for k, v in outs["three"].items() if k != "replications"} == outs["plain"]
    assert outs["again"]["replications"] == block
    # the report shows the interval of the headline figures
    from dcsim.report.page import write_report

    page = write_report(tmp_path / "three").read_text()
    assert "Across replications" in page and "chat: TTFT p99, s" in page
    assert "Power across replications" in page
    # the headline cards carry the interval of their figure
    kwh = block["metrics"]["total.it_energy_kwh"]
    assert f"95 % interval of the mean over replications {kwh['low']:,.1f}-{kwh['high']:,.1f}" \
        in page
    # facility power per bucket: the mean of the three replications inside its interval
    import pandas as pd

    bands = pd.read_parquet(tmp_path / "three" / "replications_power.parquet")
    first = pd.read_parquet(tmp_path / "three" / "power.parquet")
    it = first[first["domain"] == "facility"].sort_values("t_start_s")["power_w"].to_numpy()
    assert len(bands) == len(it) and (bands["it_w_low"] <= bands["it_w_mean"]).all()
    assert (bands["it_w_mean"] <= bands["it_w_high"]).all()
    assert not np.allclose(bands["it_w_mean"], it)  # the others' seeds count
    assert not (tmp_path / "plain" / "replications_power.parquet").exists()
    # the latency bands are the summary's percentiles across replications: at q = 0.5
    # and 0.99 the band is the interval of TTFT p50 / p99 summary.json states
    lat = pd.read_parquet(tmp_path / "three" / "replications_latency.parquet")
    for q, key in ((0.5, "ttft_p50_s"), (0.99, "ttft_p99_s")):
        row = lat[(lat["service"] == "chat") & (lat["metric"] == "ttft")
                  & np.isclose(lat["q"], q)].iloc[0]
        m = block["metrics"][f"services.chat.{key}"]
        assert row["value_s_mean"] == pytest.approx(m["mean"], rel=1e-9)
        assert (row["value_s_low"], row["value_s_high"]) == pytest.approx(
            (m["low"], m["high"]), rel=1e-9)
    assert set(lat["metric"]) == {"ttft", "tpot", "e2e"}
    busy = pd.read_parquet(tmp_path / "three" / "replications_busy.parquet")
    assert len(busy) == len(it) and busy["busy_fraction_mean"].between(0, 1).all()
    assert (busy["busy_fraction_low"] <= busy["busy_fraction_mean"] + 1e-12).all()
    assert "mean across replications and 95 % band" in page
    assert "Utilisation per service across replications" in page
    assert "Across replications" not in write_report(tmp_path / "plain").read_text()
