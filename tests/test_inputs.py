"""Reading inputs safely: size caps, UTF-8, folders for files, YAML without alias bombs
or duplicate keys and with bounded nesting, errors that quote little."""

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
    assert time.perf_counter() - t0 < 5 and "aliases that add at most" in out


def test_an_anchor_used_a_few_times_is_fine(tmp_path):
    # what PyYAML writes for a value shared twice: allowed, unlike a bomb
    d = yaml.safe_load((ROOT / "scenarios" / "default.yaml").read_text())
    shared = d["fleet"]["racks"][0]["servers"]
    d["fleet"]["racks"].append({**d["fleet"]["racks"][0], "name": "second", "servers": shared})
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    assert "&id" in p.read_text()
    r = runner.invoke(app, ["validate", str(p)])
    assert r.exit_code == 0, r.output


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


def test_rack_names_must_be_unique_after_expansion(tmp_path):
    d = yaml.safe_load((ROOT / "scenarios" / "default.yaml").read_text())
    rack = d["fleet"]["racks"][0]
    d["fleet"]["racks"] = [dict(rack, name="r", count=2), dict(rack, name="r-2")]
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    assert "repeated: ['r-2']" in _validate(p)


def test_what_dcsim_writes_it_reads_back_even_with_shared_values():
    from dcsim import yamlfile

    shared = {"type": "dgx-h200", "count": 1}
    text = yamlfile.dump({"a": [shared, shared]})
    assert "&" not in text and yamlfile.load(text) == {"a": [shared, shared]}


@pytest.mark.parametrize(("path", "value", "words"), [
    (("simulation", "duration_s"), float("inf"), "finite"),
    (("simulation", "time_bucket_s"), 1e-9, "greater than or equal to 0.001"),
    (("simulation", "time_bucket_s"), 0.001, "buckets; at most"),  # 3.6 million buckets
    (("workloads", 0, "deployment", "max_num_seqs"), 10**9, "less than or equal to 65536"),
    (("fleet", "racks", 0, "servers", 0, "count"), 10**15, "less than or equal to 1000"),
    (("facility", "start_time"), "9999-01-01T00:00:00", "2200"),
    (("simulation", "seed"), 2**64, "less than"),
])
def test_numbers_outside_their_physical_or_memory_bounds_are_refused(tmp_path, path, value,
                                                                       words):
    d = yaml.safe_load((ROOT / "scenarios" / "default.yaml").read_text())
    at = d
    for k in path[:-1]:
        at = at[k]
    at[path[-1]] = value
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    out = _validate(p)
    field = ".".join(str(k) if not isinstance(k, int) else f"[{k}]" for k in path)
    assert field.replace(".[", "[") in out or path[-1] in out
    assert words in out


def test_more_requests_than_a_run_can_hold_are_refused(tmp_path):
    d = yaml.safe_load((ROOT / "scenarios" / "default.yaml").read_text())
    d["workloads"][0]["arrival"] = {"kind": "poisson", "rate_per_s": 1e6}
    d["workloads"][0]["prompt_tokens"] = {"kind": "constant", "tokens": 100}
    d["workloads"][0]["output_tokens"] = {"kind": "constant", "tokens": 100}
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    assert "at most 5e+07 in one run" in _validate(p)


def _trace_scenario(tmp_path: Path, text: str) -> Path:
    (tmp_path / "trace.csv").write_text(text)
    d = yaml.safe_load((ROOT / "scenarios" / "default.yaml").read_text())
    d["workloads"][0]["arrival"]["path"] = "trace.csv"
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    return p


def test_a_header_only_trace_is_refused_by_validate_and_run(tmp_path):
    p = _trace_scenario(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n")
    assert "only its header" in _validate(p)
    r = runner.invoke(app, ["run", str(p), "-q", "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "only its header" in r.output and not (tmp_path / "o").exists()


def test_a_token_count_past_64_bits_is_refused_not_wrapped(tmp_path):
    p = _trace_scenario(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                        "2023-11-16 18:15:46.68,99999999999999999999999,10\n"
                        "2023-11-16 18:15:47.68,100,10\n")
    out = _validate(p)
    assert "row 2.ContextTokens" in out and "10,000,000" in out


def test_a_silly_chiller_fraction_cannot_make_a_pue_of_millions(tmp_path):
    d = yaml.safe_load((ROOT / "scenarios" / "facility_model.yaml").read_text())
    d["facility"]["cooling"]["carnot_fraction"] = 1e-9
    d["facility"]["carbon_intensity_file"] = str(ROOT / "scenarios" /
                                                 d["facility"]["carbon_intensity_file"])
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(d))
    out = _validate(p)
    assert "facility.cooling.carnot_fraction" in out and "0.1" in out
