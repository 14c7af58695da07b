"""Reading inputs safely: size caps, UTF-8, folders for files, YAML without aliases or
duplicate keys and with bounded nesting, errors that quote little."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dcsim.cli import app
from dcsim.csvfiles import MAX_TEXT_BYTES, read_csv_with
from dcsim.errors import DcsimError, Problem
from dcsim.yamlfile import MAX_DEPTH

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _validate(path: Path) -> str:
    r = runner.invoke(app, ["validate", str(path)])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    return r.output.replace("\n", " ")


def test_a_key_given_twice_is_an_error_with_its_line(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: a\nsimulation: {duration_s: 10}\nname: b\n")
    out = _validate(p)
    assert "line 3" in out and "'name' again" in out


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]"
              for i in range(9)]  # 9^10 strings if expanded
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    out = _validate(p)
    assert time.perf_counter() - t0 < 5 and "without anchors" in out


def test_deep_nesting_is_refused(tmp_path):
    p = tmp_path / "deep.yaml"
    p.write_text("name: " + "[" * (MAX_DEPTH + 10) + "]" * (MAX_DEPTH + 10) + "\n")
    assert f"at most {MAX_DEPTH} levels" in _validate(p)


def test_text_that_is_not_utf8_is_named_as_such(tmp_path):
    p = tmp_path / "latin1.yaml"
    p.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert "UTF-8" in _validate(p)


def test_a_folder_or_an_oversized_file_is_refused_before_it_is_read(tmp_path):
    d = tmp_path / "dir.yaml"
    d.mkdir()
    assert "folder" in _validate(d)
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:  # sparse: no disk used, nothing read
        f.truncate(MAX_TEXT_BYTES + 1)
    assert "at most 16 MiB" in _validate(big)


def test_a_trace_path_that_is_a_folder_is_an_error_not_a_traceback(tmp_path):
    d = yaml.safe_load((ROOT / "scenarios" / "default.yaml").read_text())
    (tmp_path / "trace.csv").mkdir()
    d["workloads"][0]["arrival"]["path"] = "trace.csv"
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    assert "workloads[0].arrival.path" in _validate(p)
    with pytest.raises(DcsimError) as err:
        read_csv_with(tmp_path / "trace.csv", ("a",), "trace CSV file")
    assert "folder" in str(err.value)


def test_csv_errors_quote_no_more_than_the_header(tmp_path):
    secret = tmp_path / "secrets.csv"
    secret.write_text("password=hunter2\nline two is private\n")
    with pytest.raises(DcsimError) as err:
        read_csv_with(secret, ("timestamp",), "hourly CSV file")
    assert "line two" not in str(err.value)


def test_a_huge_bad_value_is_quoted_short():
    text = str(Problem("x", "v" * 5_000_000, "something smaller"))
    assert len(text) < 200 and "more characters" in text
