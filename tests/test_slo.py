"""One definition of meeting an SLO (dcsim.slo), on requests built by hand."""

import numpy as np
import pandas as pd
import pytest

from dcsim.slo import late, meets_p99, met, slo_attainment
from dcsim.workloads.spec import Slo

SLO = Slo(ttft_p99_s=1.0, tpot_p99_s=0.1, e2e_p99_s=None)
END = 100.0


def _req(rows):
    cols = ["status", "arrival_s", "first_token_s", "output_tokens", "ttft_s", "tpot_s", "e2e_s"]
    df = pd.DataFrame(rows, columns=cols)
    df["status"] = pd.Categorical(df["status"],
                                  categories=["unfinished", "finished", "rejected", "aborted"])
    return df


NAN = np.nan
REQS = _req([
    ("finished", 0.0, 0.5, 11, 0.5, 0.05, 1.0),  # meets both
    ("finished", 0.0, 2.0, 11, 2.0, 0.05, 2.5),  # TTFT too long
    ("finished", 0.0, 0.5, 1, 0.5, NAN, 0.5),  # one token: no TPOT, meets
    ("rejected", 50.0, NAN, 10, NAN, NAN, NAN),  # a miss, whatever its age
    ("aborted", 99.9, NAN, 10, NAN, NAN, NAN),
    ("unfinished", 99.5, NAN, 10, NAN, NAN, NAN),  # 0.5 s old, no token: may still make it
    ("unfinished", 98.0, NAN, 10, NAN, NAN, NAN),  # 2 s without a token: late for TTFT
    ("unfinished", 90.0, 90.2, 500, NAN, NAN, NAN),  # 9.8 s of decode for 499 steps: on time
    ("unfinished", 90.0, 90.2, 11, NAN, NAN, NAN),  # 9.8 s for 10 steps: TPOT >= 0.98 s, late
])


def test_met_needs_finished_and_every_bound():
    assert met(REQS, SLO).tolist() == [True, False, True] + [False] * 6


def test_late_counts_failures_and_unfinished_requests_past_a_bound_only():
    assert late(REQS, SLO, END).tolist() == [False, False, False, True, True, False, True,
                                            False, True]


def test_attainment_is_met_over_judged():
    # judged: 3 finished + rejected + aborted + 2 late unfinished = 7; met: 2
    assert slo_attainment(REQS, SLO, END) == pytest.approx(2 / 7)
    assert slo_attainment(REQS.iloc[5:6], SLO, END) is None  # nothing can be judged yet


def test_p99_counts_misses_as_infinitely_late():
    ok = _req([("finished", 0.0, 0.1, 2, 0.1, 0.01, 0.2)] * 200)
    assert meets_p99(ok, SLO, END)
    one_miss = pd.concat([ok, REQS.iloc[[3]]], ignore_index=True)  # 1 of 201: p99 holds
    assert meets_p99(one_miss, SLO, END)
    three = pd.concat([ok, REQS.iloc[[3, 4, 6]]], ignore_index=True)  # 3 of 203: it breaks
    assert not meets_p99(three, SLO, END)
    assert meets_p99(three, Slo(), END)  # no bounds: nothing to break
