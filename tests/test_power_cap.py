"""GPU power caps: the DVFS model against the Zeus sweeps, the profiles and the engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dcsim.engine.simulation import simulate
from dcsim.errors import DcsimError
from dcsim.hardware import dvfs
from dcsim.hardware.calibration import (
    calibrate,
    curve_errors,
    energy_optimal_limits,
    load_zeus,
)
from dcsim.scenario import scenario_from_data

ROOT = Path(__file__).resolve().parents[1]
ZEUS = ("V100-PCIe-32GB", "A40")


@pytest.fixture(scope="module")
def calibrated():
    return {g: calibrate(load_zeus(g), dvfs.DERIVED_MIN_CLOCK)[0] for g in ZEUS}


def test_catalog_holds_the_calibrated_parameters(catalog, calibrated):
    for g in ZEUS:
        spec = catalog.gpu(g)
        assert spec.dvfs_floor_w == calibrated[g].floor_w
        assert spec.dvfs_knee == calibrated[g].knee
    ratios = [calibrated[g].floor_w / catalog.gpu(g).tdp_w for g in ZEUS]
    assert pytest.approx(np.mean(ratios), abs=5e-4) == dvfs.DERIVED_FLOOR_RATIO
    assert pytest.approx(np.mean([calibrated[g].knee for g in ZEUS])) == dvfs.DERIVED_KNEE


@pytest.mark.parametrize("gpu", ZEUS)
def test_reproduces_resnet50_time_and_power_curves(catalog, gpu):
    e = curve_errors(load_zeus(gpu), dvfs.dvfs_of(catalog.gpu(gpu)))
    r = e[e["network"] == "resnet50"]
    assert r["time_rel_err"].abs().median() < 0.10
    assert r["power_rel_err"].abs().median() < 0.10


def test_picks_the_energy_optimal_limit_the_measurements_show(catalog):
    # V100, ResNet-50, batch 256: 150 W uses the least energy in the sweep
    e = curve_errors(load_zeus("V100-PCIe-32GB"), dvfs.dvfs_of(catalog.gpu("V100-PCIe-32GB")))
    picks = energy_optimal_limits(e)
    row = picks[(picks["network"] == "resnet50") & (picks["batch_size"] == 256)].iloc[0]
    assert row["measured_limit_w"] == 150 and row["model_limit_w"] == 150
    # on every ResNet-50 job of both GPUs the model's pick is near the measured optimum
    for gpu in ZEUS:
        e = curve_errors(load_zeus(gpu), dvfs.dvfs_of(catalog.gpu(gpu)))
        p = energy_optimal_limits(e)
        assert p.loc[p["network"] == "resnet50", "energy_at_model_choice_rel"].max() < 0.10


def test_cap_at_or_above_the_phase_power_changes_nothing(store):
    free = store.query("H200-SXM", "llama-3.1-8b", "decode", 1, 2048)
    for cap in (free.power_w, 500.0, 700.0):
        a = store.query("H200-SXM", "llama-3.1-8b", "decode", 1, 2048, power_cap_w=cap)
        assert (a.latency_ms, a.energy_j, a.provenance) == (
            free.latency_ms, free.energy_j, "measured")


def test_lower_caps_cost_compute_bound_phases_more(store):
    def ratio(phase: str, batch: int, cap: float) -> float:
        q = store.query("H200-SXM", "llama-3.1-8b", phase, batch, 2048)
        c = store.query("H200-SXM", "llama-3.1-8b", phase, batch, 2048, power_cap_w=cap)
        assert c.power_w <= cap + 1e-9 and c.provenance == "derived"
        return c.latency_ms / q.latency_ms

    prev = 1.0
    for cap in (600.0, 450.0, 300.0):
        r = ratio("prefill", 4, cap)
        assert r > prev  # lower cap, longer prefill
        prev = r
    # memory-bound decode barely slows where compute-bound prefill slows a lot
    assert ratio("decode", 1, 300.0) < 1.02 < ratio("prefill", 4, 300.0)


def test_dvfs_power_follows_clock_and_voltage():
    d = dvfs.Dvfs(floor_w=100.0, knee=0.5, min_clock=0.2)
    # above the knee power falls with x^3, below it with x
    p1 = dvfs.power_at_clock(np.array([1.0, 0.8, 0.5, 0.25]), 500.0, 1.0, d)
    assert p1[1] - 100 == pytest.approx(400 * 0.8**3)
    assert p1[3] - 100 == pytest.approx(400 * 0.25 * 0.25)
    x = dvfs.clock_under_cap(np.array([500.0, 300.0, 110.0]), 500.0, 1.0, d)
    assert x[0] == 1.0
    assert float(dvfs.power_at_clock(x[1], 500.0, 1.0, d)) == pytest.approx(300.0, rel=1e-3)
    assert x[2] == pytest.approx(0.2)  # the cap cannot be held below the lowest clock


def test_measured_points_at_a_cap_are_used_as_measured(tmp_path, catalog):
    from dcsim.profiles.store import ProfileStore
    from dcsim.profiles.table import builtin_dir

    rows = pd.read_csv(builtin_dir() / "points.csv")
    rows = rows[(rows["model"] == "llama-3.1-8b") & (rows["phase"] == "decode")].copy()
    rows["power_cap_w"] = 400.0
    rows["latency_ms"] *= 1.2
    path = tmp_path / "capped.csv"
    rows.to_csv(path, index=False)
    s = ProfileStore.from_files(catalog, [path])
    r = rows.iloc[0]
    a = s.query("H200-SXM", "llama-3.1-8b", "decode", int(r.batch_size), int(r.seq_len),
                power_cap_w=400.0)
    assert a.provenance == "measured" and a.latency_ms == pytest.approx(r.latency_ms)


def test_cap_outside_the_gpu_range_is_refused(store):
    with pytest.raises(DcsimError, match="200-700 W"):
        store.query("H200-SXM", "llama-3.1-8b", "decode", 1, 512, power_cap_w=150.0)


def test_capped_replicas_run_slower_and_within_the_cap():
    d = yaml.safe_load((ROOT / "scenarios" / "default.yaml").read_text())
    d["simulation"] = {"duration_s": 300, "seed": 9, "time_bucket_s": 10}
    d["workloads"][0]["arrival"]["rate_scale"] = 3.0
    free = simulate(scenario_from_data(d))
    d["workloads"][0]["deployment"]["power_cap_w"] = 300
    capped = simulate(scenario_from_data(d))
    f, c = free.requests, capped.requests
    assert c["tpot_s"].median() > f["tpot_s"].median()
    assert c["ttft_s"].median() > f["ttft_s"].median()
    assert capped.timeseries["power_w"].max() <= 300 + 1e-6
    assert free.timeseries["power_w"].max() > 300
