"""The one time-bucket integrator every series uses, against hand sums and edge cases."""

import numpy as np
import pytest

from dcsim.engine.metrics import JOB_LEVELS, LevelIntegral, TimeSeries, overlaps, spread


def test_an_interval_inside_one_bucket():
    assert overlaps(12.0, 17.5, 10.0, 5) == [(1, 5.5)]


def test_an_interval_spanning_many_buckets_gives_each_its_share():
    parts = overlaps(5.0, 42.0, 10.0, 10)
    assert parts == [(0, 5.0), (1, 10.0), (2, 10.0), (3, 10.0), (4, 2.0)]


def test_an_interval_ending_exactly_on_a_boundary_leaves_the_next_bucket_empty():
    parts = overlaps(10.0, 30.0, 10.0, 5)
    assert [(b, dt) for b, dt in parts if dt > 0] == [(1, 10.0), (2, 10.0)]
    assert sum(dt for _, dt in parts) == 20.0


def test_a_zero_length_interval_is_one_empty_bucket():
    assert overlaps(20.0, 20.0, 10.0, 5) == [(2, 0.0)]


def test_time_after_the_last_bucket_goes_to_the_last_bucket():
    assert overlaps(35.0, 60.0, 10.0, 4) == [(3, 25.0)]


def test_float_rounding_of_bucket_edges_neither_skips_nor_repeats_a_bucket():
    # 0.1 * 3 != 0.3 in floats: t / w rounds either side of an edge
    w = 0.1
    for t0, t1 in ((0.3, 0.7), (0.30000000000000004, 0.6999999999999999), (0.0, 1.0)):
        parts = overlaps(t0, t1, w, 20)
        buckets = [b for b, _ in parts]
        assert buckets == list(range(buckets[0], buckets[-1] + 1))
        assert all(dt >= 0 for _, dt in parts)
        assert sum(dt for _, dt in parts) == pytest.approx(t1 - t0, abs=1e-15)


def test_spread_conserves_the_amount():
    acc = np.zeros(6)
    spread(acc, 3.0, 47.0, 88.0, 10.0)
    assert acc.sum() == pytest.approx(88.0)
    assert acc[:5] == pytest.approx([14.0, 20.0, 20.0, 20.0, 14.0])
    spread(acc, 25.0, 25.0, 1.0, 10.0)  # an empty interval: all in its bucket
    assert acc[2] == pytest.approx(21.0)


def test_series_energy_adds_up_exactly_and_levels_integrate_by_time():
    ts = TimeSeries(1, 100.0, 10.0)
    ts.add(0, 0.1, 77.7, 1234.5678, True, 2.0, 100.0, 3.0, 32.0)
    assert sum(ts.array("energy_j")[0]) == 1234.5678  # the last bucket takes the remainder
    assert ts.array("busy_s")[0].sum() == pytest.approx(77.6)
    assert ts.array("batch_x_s")[0].sum() == pytest.approx(2.0 * 77.6)
    assert ts.array("kv_x_s")[0, 0] == pytest.approx(100.0 * 9.9)
    assert ts.array("queue_x_s")[0, 7] == pytest.approx(3.0 * 7.7)
    assert ts.array("cache_x_s")[0].sum() == pytest.approx(32.0 * 77.6)


def test_training_jobs_have_series_columns_of_their_own():
    ts = TimeSeries(2, 30.0, 10.0, JOB_LEVELS)
    ts.add(1, 5.0, 25.0, 200.0, True, 8.0, 1.0)
    assert ts.array("gpus_x_s")[1] == pytest.approx([40.0, 80.0, 40.0])
    assert ts.array("active_s")[1].sum() == pytest.approx(20.0)
    with pytest.raises(AttributeError):
        ts.array("batch_x_s")


def test_levels_integrate_up_to_the_end_of_the_run_only():
    li = LevelIntegral(("a", "b"), 25.0, 10.0, (2,))
    li.advance(5.0, {"a": np.array([1.0, 2.0]), "b": np.zeros(2)})
    li.advance(40.0, {"a": np.array([3.0, 0.0]), "b": np.ones(2)})  # clipped at 25 s
    assert li.x["a"][0] == pytest.approx([5 * 1 + 5 * 3, 30.0, 15.0])
    assert li.means()["b"][1] == pytest.approx([0.5, 1.0, 1.0])
    assert li.bucket_seconds() == pytest.approx([10.0, 10.0, 5.0])
