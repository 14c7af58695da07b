"""The shipped scenarios give the results pinned before the engine's refactor, value for
value (tests/golden/make_golden.py wrote them; rerun it only when a change of results is
intended and say why in the commit)."""

import json
import sys
from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).parent / "golden"
sys.path.insert(0, str(GOLDEN_DIR))

from make_golden import GOLDEN, column_digests, pinned_run  # noqa: E402


def _diff(a: object, b: object, path: str = "") -> list[str]:
    """Paths where two JSON values differ (floats compared exactly)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: missing on one side" for k in sorted(set(a) ^ set(b))]
        for k in sorted(set(a) & set(b)):
            out += _diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True))
                for d in _diff(x, y, f"{path}[{i}]")]
    same = a == b or (a != a and b != b)  # NaN written as NaN on both sides
    return [] if same else [f"{path}: {b!r} pinned, {a!r} now"]


@pytest.mark.parametrize("stem", GOLDEN)
def test_shipped_scenario_results_unchanged(stem):
    requests, summary = pinned_run(stem)
    pinned = json.loads((GOLDEN_DIR / f"{stem}.summary.json").read_text())
    assert _diff(summary, pinned) == []
    digests = json.loads((GOLDEN_DIR / f"{stem}.requests.json").read_text())
    now = column_digests(requests)
    assert [c for c in set(now) | set(digests) if now.get(c) != digests.get(c)] == []


def test_a_changed_value_is_caught():
    """The comparison is not vacuous: one bit off in one request shows up in its column."""
    requests, summary = pinned_run("custom_hardware")
    before = column_digests(requests)
    requests.loc[0, "finish_s"] = float(requests.loc[0, "finish_s"]) * (1 + 2**-52)
    after = column_digests(requests)
    assert [c for c in before if before[c] != after[c]] == ["finish_s"]
    changed = json.loads(json.dumps(summary))
    changed["total"]["it_energy_kwh"] *= 1 + 1e-15
    assert _diff(changed, summary) != []
