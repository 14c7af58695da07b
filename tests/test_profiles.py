"""Profile store against the measured H200 grid and against physics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dcsim.errors import DcsimError
from dcsim.profiles.accuracy import leave_one_out, summarize
from dcsim.profiles.store import ProfileStore
from dcsim.profiles.table import PHASES, builtin_dir, read_profile_csv


def _measured_rows(store):
    t = store.table
    return t[t["phase"].isin(PHASES)]


def test_measured_points_come_back_exactly(store):
    """Exactly as measured, before the power limit; after it too where the measurement
    is within the limit (tests/test_power_limit.py checks the others)."""
    for r in _measured_rows(store).itertuples():
        a = store.query(r.gpu, r.model, r.phase, r.batch_size, r.seq_len)
        assert a.provenance == "measured"
        assert a.unlimited_latency_ms == pytest.approx(r.latency_ms, rel=1e-9)
        assert a.unlimited_power_w == pytest.approx(r.energy_j / r.latency_ms * 1e3, rel=1e-9)
        if not a.limited:
            assert a.latency_ms == pytest.approx(r.latency_ms, rel=1e-9)
            assert a.energy_j == pytest.approx(r.energy_j, rel=1e-9)


def test_leave_one_out_accuracy(store):
    s = summarize(leave_one_out(store)).loc["all"]
    # The issue asks for < 10 %; the store does about 3.7 % (latency) and 5.6 % (energy).
    assert s["latency_median"] < 0.05
    assert s["energy_median"] < 0.07


def test_provenance_interpolated_inside_and_derived_outside(store):
    inside = store.query("H200-SXM", "llama-3.1-8b", "decode", 32, 1024)
    outside = store.query("H200-SXM", "llama-3.1-8b", "decode", 512, 1024)
    assert inside.provenance == "interpolated"
    assert outside.provenance == "derived"
    # between its measured neighbours in batch at the same context
    lo = store.query("H200-SXM", "llama-3.1-8b", "decode", 16, 2048).latency_ms
    hi = store.query("H200-SXM", "llama-3.1-8b", "decode", 64, 2048).latency_ms
    mid = store.query("H200-SXM", "llama-3.1-8b", "decode", 32, 2048).latency_ms
    assert lo < mid < hi


def test_prefill_latency_nearly_linear_in_tokens(store):
    lat = [store.query("H200-SXM", "llama-3.1-8b", "prefill", 1, s).latency_ms
           for s in (2048, 3072, 4096)]
    # equal steps in tokens give nearly equal steps in latency (attention adds a little)
    assert (lat[2] - lat[1]) / (lat[1] - lat[0]) == pytest.approx(1.0, abs=0.25)


def test_energy_is_power_times_time_within_bounds(store, catalog):
    h200 = catalog.gpu("H200-SXM")
    for b in (1, 3, 48, 120):
        for s in (700, 3000, 6000):
            a = store.query("H200-SXM", "llama-3.1-8b", "decode", b, s)
            assert a.energy_j == pytest.approx(a.power_w * a.latency_ms / 1e3, rel=1e-9)
            assert h200.idle_power_w <= a.power_w <= 800


def test_unmeasured_gpu_scales_with_its_datasheet(store):
    h200 = store.query("H200-SXM", "llama-3.1-8b", "decode", 1, 2048)
    h100 = store.query("H100-SXM", "llama-3.1-8b", "decode", 1, 2048)
    a100 = store.query("A100-SXM4-80GB", "llama-3.1-8b", "prefill", 4, 2048)
    h200p = store.query("H200-SXM", "llama-3.1-8b", "prefill", 4, 2048)
    assert h100.provenance == "derived" and "scaled from H200-SXM" in h100.basis
    # memory-bound decode: slower on H100's 3.35 TB/s than H200's 4.8 TB/s, not beyond the ratio
    assert 1.05 < h100.latency_ms / h200.latency_ms <= 4.8 / 3.35 + 1e-9
    # compute-bound prefill: about the 989/312 FLOP/s ratio slower on the A100
    assert a100.latency_ms / h200p.latency_ms == pytest.approx(989 / 312, rel=0.25)


def test_slice_scales_to_full_depth(store):
    part = store.query("H200-SXM", "llama-3.1-70b/8L", "decode", 16, 2048)
    full = store.query("H200-SXM", "llama-3.1-70b", "decode", 16, 2048, tp=2)
    full1 = store.resolve("H200-SXM", "llama-3.1-70b", "decode", 1).evaluate(
        np.array([16]), np.array([2048]))
    assert full.provenance == "derived"
    # 80 layers + LM head vs 8 layers: about 10x the single-GPU time
    assert 9.0 < full1.latency_s[0] * 1e3 / part.latency_ms < 12.5


def test_tensor_parallel_speeds_up_and_adds_collectives(store):
    one = store.resolve("H200-SXM", "llama-3.1-8b", "prefill", 1)
    b, s = np.array([4]), np.array([2048])
    t1 = one.evaluate(b, s).latency_s[0]
    cost2 = store.resolve("H200-SXM", "llama-3.1-8b", "prefill", 2)
    t2 = cost2.evaluate(b, s).latency_s[0]
    coll = cost2._collective_s(b.astype(float), s.astype(float))[0]
    assert coll > 0
    assert t1 / 2 < t2 < t1  # faster, but not perfectly


def test_derived_never_beats_the_roofline(store, catalog):
    from dcsim.profiles.work import work_features

    cost = store.resolve("B200", "llama-3.1-405b", "prefill", 8)
    b, s = np.array([1, 8]), np.array([512, 8192])
    t = cost.evaluate(b, s).latency_s
    f = work_features(catalog.model("llama-3.1-405b"), "prefill", b, s, 8)
    peak = 2250e12
    assert np.all(t >= (f[:, 2] + f[:, 3]) / peak)


def test_user_file_overrides_builtin(tmp_path, catalog):
    rows = read_profile_csv(builtin_dir() / "points.csv")
    one = rows[(rows["model"] == "llama-3.1-8b") & (rows["phase"] == "decode")].head(1).copy()
    one["latency_ms"] = 99.0
    one["energy_j"] = 30.0
    path = tmp_path / "mine.csv"
    one.to_csv(path, index=False)
    s = ProfileStore.from_files(catalog, [path])
    r = one.iloc[0]
    assert s.query("H200-SXM", "llama-3.1-8b", "decode", int(r.batch_size),
                   int(r.seq_len)).latency_ms == 99.0


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.drop(columns=["latency_ms"]), "latency_ms"),
        (lambda d: d.assign(latency_ms=-1.0), "a latency > 0 ms"),
        (lambda d: d.assign(latency_ms=0.0), "a latency > 0 ms"),
        (lambda d: d.assign(batch_size=0), "a positive whole number"),
        (lambda d: d.assign(phase="warmup"), "one of"),
    ],
)
def test_bad_profile_files_are_rejected(tmp_path, catalog, edit, message):
    df = pd.read_csv(builtin_dir() / "points.csv").head(5)
    path = tmp_path / "bad.csv"
    edit(df).to_csv(path, index=False)
    with pytest.raises(DcsimError, match=message) as info:
        ProfileStore.from_files(catalog, [path])
    assert "bad.csv" in str(info.value)


def test_profile_with_unknown_gpu_is_rejected(tmp_path, catalog):
    df = pd.read_csv(builtin_dir() / "points.csv").head(3).assign(gpu="Quantum Q9")
    path = tmp_path / "q.csv"
    df.to_csv(path, index=False)
    with pytest.raises(DcsimError, match=r"row 2\.gpu"):
        ProfileStore.from_files(catalog, [path], builtin=False)


def test_queries_nothing_can_answer(store):
    with pytest.raises(DcsimError, match="batch_size"):
        store.query("H200-SXM", "llama-3.1-8b", "decode", 0, 128)
    with pytest.raises(DcsimError, match=r"needs .* GB per GPU"):
        store.query("H200-SXM", "llama-3.1-405b", "decode", 1, 1024, tp=1)
    with pytest.raises(DcsimError, match="one of"):
        store.query("H200-SXM", "llama-3.1-8b", "embed", 1, 128)
    with pytest.raises(DcsimError, match="catalog GPU"):
        store.query("TPUv9", "llama-3.1-8b", "decode", 1, 128)
