"""Average power never exceeds the limit in force, on any GPU, phase or input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dcsim.catalog import shapes
from dcsim.hardware import dvfs
from dcsim.profiles.table import builtin_dir

BATCHES = np.array([1, 4, 16, 64, 256, 512], dtype=float)
LENGTHS = np.array([128, 1024, 4096, 16384], dtype=float)


def _grid() -> tuple[np.ndarray, np.ndarray]:
    b, s = np.meshgrid(BATCHES, LENGTHS)
    return b.ravel(), s.ravel()


@pytest.mark.parametrize("phase", ["prefill", "decode", "train"])
def test_power_stays_at_or_below_the_limit_on_every_catalog_gpu(catalog, store, phase):
    b, s = _grid()
    for gpu in catalog.gpus.values():
        for model, tp in (("llama-3.1-8b", 1), ("llama-3.1-70b", 8)):
            for cap in (None, gpu.power_limit_min_w, (gpu.power_limit_min_w + gpu.tdp_w) / 2):
                cost = store.resolve(gpu.id, model, phase, tp, cap)
                out = cost.evaluate(b, s)
                limit = (gpu.tdp_w if cap is None else cap) * tp
                assert np.all(out.power_w <= limit * (1 + 1e-9)), (gpu.id, model, cap)
                assert np.allclose(out.energy_j, out.power_w * out.latency_s)
                # holding the limit only ever slows a run down
                assert np.all(out.latency_s >= out.unlimited_latency_s * (1 - 1e-12))
                assert np.array_equal(out.limited, out.unlimited_power_w > limit)


def _over_limit_points() -> pd.DataFrame:
    t = pd.read_csv(builtin_dir() / "points.csv")
    t = t[t["phase"].isin(["prefill", "decode", "train"])]
    return t[t["energy_j"] / (t["latency_ms"] / 1e3) > 700.0]


def test_measured_points_over_the_limit_are_held_at_it_and_keep_their_raw_values(store):
    over = _over_limit_points()
    assert len(over) >= 5  # the shipped H200 table has such points (counter over 0.6 s)
    d = dvfs.dvfs_of(store.catalog.gpu("H200-SXM"))
    top = pd.read_csv(builtin_dir() / "points.csv")["sm_clock_mhz"].max()
    for r in over.itertuples():
        a = store.query("H200-SXM", r.model, r.phase, r.batch_size, r.seq_len)
        raw_w = r.energy_j / (r.latency_ms / 1e3)
        assert a.limited and a.power_w == pytest.approx(700.0, rel=1e-4)
        assert a.unlimited_latency_ms == pytest.approx(r.latency_ms)
        assert a.unlimited_power_w == pytest.approx(raw_w)
        # the slow-down is the DVFS model's: the clock x that holds 700 W from the clock
        # measured, at most the whole run stretched by x_measured / x (all clock-bound)
        x_ref = r.sm_clock_mhz / top
        x = float(dvfs.clock_under_cap(700.0, raw_w, x_ref, d)[0])
        assert x < x_ref
        assert r.latency_ms < a.latency_ms <= r.latency_ms * x_ref / x * (1 + 1e-6)


def test_points_under_the_limit_are_untouched(store):
    t = pd.read_csv(builtin_dir() / "points.csv")
    r = t[(t["model"] == "llama-3.1-8b") & (t["phase"] == "decode")].iloc[0]
    a = store.query("H200-SXM", "llama-3.1-8b", "decode", int(r.batch_size), int(r.seq_len))
    assert not a.limited and a.provenance == "measured"
    assert a.latency_ms == pytest.approx(r.latency_ms) and a.energy_j == pytest.approx(r.energy_j)


def test_h100_decode_at_batch_512_no_longer_exceeds_700_w(store):
    a = store.query("H100-SXM", "llama-3.1-8b", "decode", 512, 512)
    assert a.limited and a.unlimited_power_w > 700.0
    assert a.power_w <= 700.0 + 1e-6 and a.latency_ms > a.unlimited_latency_ms


def test_training_busy_power_is_held_at_the_limit(catalog, store):
    from dcsim.training.step import step_model
    from dcsim.workloads.spec import TrainingJob

    job = TrainingJob.model_validate({
        "name": "t", "model": "llama-3.1-405b", "gpu": "H100-SXM", "gpus": 16384,
        "parallelism": {"tp": 8, "pp": 16, "dp": 128}, "seq_len": 8192,
        "global_batch_tokens": 16 * 1024 * 1024, "micro_batches": 16, "steps": 100})
    step = step_model(job, catalog, store, 5e-6)
    assert step.busy_power_w <= catalog.gpu("H100-SXM").tdp_w + 1e-6
    assert shapes.total_params(catalog.model("llama-3.1-405b")) > 4e11
