"""Hostile but fair input, generated: mutated scenario documents (optimize sections and
plans too), sweep files, CSV bytes and damaged results folders never give a traceback.
Each example either succeeds or exits 1 with one conforming line per problem. A bounded
number of examples runs by default; `pytest -m slow tests/test_fuzz.py` runs many more."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dcsim.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
LINE = re.compile(r"^error: \S.*: .+")  # error: [FILE: ]PATH: got VALUE; expected WHAT
FAST = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])
MANY = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                         max_size=2),
    st.sampled_from(["builtin:azure-conv-2023", "../../etc/passwd", "/", "", "9999-01-01",
                     "H200-SXM", "llama-3.1-8b", "-1", "1e300", "nan"]))


def _paths(doc: object, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value in a parsed document."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: dict, path: tuple, value: object, drop: bool) -> dict:
    d = copy.deepcopy(doc)
    if not path:
        return d
    at = d
    for k in path[:-1]:
        at = at[k]
    if drop and isinstance(at, dict):
        at.pop(path[-1], None)
    else:
        at[path[-1]] = value
    return d


def _check(r) -> None:
    assert "Traceback" not in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code in (0, 1), r.output
    if r.exit_code == 1:
        lines = [x for x in r.output.splitlines() if x.strip()]
        assert lines and all(LINE.match(x) or x.startswith(" ") for x in lines), r.output


def _base(stem: str) -> dict:
    d = yaml.safe_load((ROOT / "scenarios" / f"{stem}.yaml").read_text())
    d["profiles"] = [str(ROOT / "scenarios" / p) for p in d.get("profiles", [])]
    d.setdefault("simulation", {})["duration_s"] = 20.0
    d["simulation"]["warmup_s"] = 0.0
    d["simulation"]["time_bucket_s"] = 10.0
    return d


STEMS = ("default", "training", "custom_hardware", "mixed_services", "facility_model",
         "optimize_diurnal", "optimize_training", "prefix_caching", "chat_sessions",
         "nvl72_moe")
DOCS = {s: _base(s) for s in STEMS}
for _stem in ("optimize_diurnal", "optimize_training"):  # a few short periods: fast plans
    DOCS[_stem]["optimize"].update(periods=3, period_s=600)
    DOCS[_stem]["optimize"].pop("verify_duration_s", None)
OPTIMIZE = ("optimize_diurnal", "optimize_training")


@st.composite
def mutated(draw: st.DrawFn, stems: tuple[str, ...] = STEMS) -> dict:
    doc = DOCS[draw(st.sampled_from(stems))]
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        doc = _mutate(doc, path, draw(JUNK), draw(st.booleans()))
    return doc


def _write(tmp: Path, doc: object, name: str = "s.yaml") -> Path:
    p = tmp / name
    try:
        p.write_text(yaml.safe_dump(doc, allow_unicode=True))
    except yaml.YAMLError:  # a float PyYAML cannot write: write JSON (also YAML)
        p.write_text(json.dumps(doc, default=str))
    return p


@FAST
@given(doc=mutated())
def test_validate_never_tracebacks_on_mutated_scenarios(tmp_path_factory, doc):
    p = _write(tmp_path_factory.mktemp("v"), doc)
    _check(runner.invoke(app, ["validate", str(p)]))


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(doc=mutated())
def test_run_never_tracebacks_and_agrees_with_validate(tmp_path_factory, doc):
    tmp = tmp_path_factory.mktemp("r")
    p = _write(tmp, doc)
    v = runner.invoke(app, ["validate", str(p)])
    r = runner.invoke(app, ["run", str(p), "-q", "--out", str(tmp / "out")])
    _check(r)
    if v.exit_code == 1:  # what validate refuses, run refuses, and writes nothing
        assert r.exit_code == 1 and not (tmp / "out").exists()


@settings(max_examples=7, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(doc=mutated(OPTIMIZE))
def test_optimize_never_tracebacks_and_agrees_with_validate(tmp_path_factory, doc):
    tmp = tmp_path_factory.mktemp("o")
    p = _write(tmp, doc)
    v = runner.invoke(app, ["validate", str(p)])
    r = runner.invoke(app, ["optimize", str(p), "--out", str(tmp / "out")])
    _check(r)
    if v.exit_code == 1:
        assert r.exit_code == 1 and not (tmp / "out").exists()


@FAST
@given(data=st.binary(max_size=400))
def test_trace_csv_bytes_never_traceback(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("c")
    (tmp / "trace.csv").write_bytes(data)
    doc = copy.deepcopy(DOCS["default"])
    doc["workloads"][0]["arrival"]["path"] = "trace.csv"
    _check(runner.invoke(app, ["run", str(_write(tmp, doc)), "-q", "--out", str(tmp / "o")]))


SWEEP = yaml.safe_load((ROOT / "sweeps" / "power_caps.yaml").read_text())
SWEEP_JUNK = st.one_of(JUNK, st.sampled_from([
    "workloads.chat.deployment.replicas", "workloads.nope.x", "simulation.seed", "base.x",
    "workloads.chat.arrival.rate_scale", "fleet.racks.0.servers.count"]))


@st.composite
def mutated_sweep(draw: st.DrawFn) -> dict:
    doc = copy.deepcopy(SWEEP)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        doc = _mutate(doc, path, draw(SWEEP_JUNK), draw(st.booleans()))
    return doc


@FAST
@given(doc=mutated_sweep())
def test_validate_never_tracebacks_on_mutated_sweeps(tmp_path_factory, doc):
    # what `dcsim sweep` checks before anything runs (every point), said as one line each
    tmp = tmp_path_factory.mktemp("sw")
    _write(tmp, DOCS["default"], "base.yaml")
    if isinstance(doc, dict) and doc.get("base") == SWEEP["base"]:
        doc["base"] = "base.yaml"
    r = runner.invoke(app, ["validate", str(_write(tmp, doc, "sweep.yaml"))])
    _check(r)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("res") / "run"
    p = _write(out.parent, DOCS["default"])
    assert runner.invoke(app, ["run", str(p), "-q", "--out", str(out)]).exit_code == 0
    return out


DAMAGE = st.sampled_from(["truncate", "delete", "garbage", "drop_key", "retype"])


@FAST
@given(target=st.sampled_from(["summary.json", "requests.parquet", "power.parquet",
                               "budgets.parquet", "timeseries.parquet",
                               "scenario.resolved.yaml"]), how=DAMAGE,
       key=st.sampled_from(["total", "services", "power_domains", "scenario", "duration_s"]))
def test_report_on_a_damaged_results_folder_never_tracebacks(results, tmp_path_factory,
                                                              target, how, key):
    d = tmp_path_factory.mktemp("d") / "run"
    shutil.copytree(results, d)
    f = d / target
    if how == "truncate":
        f.write_bytes(f.read_bytes()[: max(len(f.read_bytes()) // 3, 1)])
    elif how == "delete":
        f.unlink()
    elif how == "garbage":
        f.write_bytes(b"\xff\x00 not what it was \x01" * 10)
    elif target == "summary.json":
        s = json.loads(f.read_text())
        if how == "drop_key":
            s.pop(key, None)
        else:
            s[key] = "a string"
        f.write_text(json.dumps(s))
    r = runner.invoke(app, ["report", str(d)])
    _check(r)


@pytest.mark.slow
@MANY
@given(doc=mutated())
def test_validate_never_tracebacks_many(tmp_path_factory, doc):
    p = _write(tmp_path_factory.mktemp("v"), doc)
    _check(runner.invoke(app, ["validate", str(p)]))
