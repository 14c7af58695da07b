"""Never destroy a user's files, never leave half-written results, strict JSON, names
that stay where they belong, and a clean end on Ctrl-C and SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dcsim.cli import app
from dcsim.output import MARKER, check_target, recover, safe_name, write_run
from dcsim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "scenarios" / "custom_hardware.yaml"  # 614 requests: a second or two
runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, ["run", str(SMALL), "-q", *args])


def test_an_existing_results_folder_is_replaced_only_with_force(tmp_path):
    out = tmp_path / "o"
    assert _run("--out", str(out)).exit_code == 0
    (out / "summary.json").write_text("{}")  # to tell whether it was rewritten
    r = _run("--out", str(out))
    assert r.exit_code == 1 and "--force" in r.output and "Traceback" not in r.output
    assert (out / "summary.json").read_text() == "{}"
    assert _run("--out", str(out), "--force").exit_code == 0
    assert json.loads((out / "summary.json").read_text())["scenario"]
    assert [p.name for p in tmp_path.iterdir()] == ["o"]  # no .old or temporary left


def test_a_file_or_a_foreign_folder_is_never_replaced(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("years of work")
    for target in (f, d):
        r = _run("--out", str(target), "--force")
        assert r.exit_code == 1 and "never replace" in r.output.replace("\n", " ")
    assert f.read_text() == "mine" and (d / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in d.iterdir()) == ["thesis.tex"]


def test_an_empty_folder_may_be_the_target(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert _run("--out", str(out)).exit_code == 0 and (out / MARKER).is_file()


@pytest.mark.parametrize("name", ["../../escape", "/abs/dir", "a/b\\c", "..", "  "])
def test_scenario_names_become_safe_folder_names(tmp_path, monkeypatch, name):
    d = yaml.safe_load(SMALL.read_text())
    d["name"] = name
    d["profiles"] = [str(SMALL.parent / p) for p in d.get("profiles", [])]
    scen = tmp_path / "s.yaml"
    scen.write_text(yaml.safe_dump(d))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    r = runner.invoke(app, ["run", str(scen), "-q"])
    assert r.exit_code == 0, r.output
    made = [p for p in (work / "runs").iterdir()]
    assert len(made) == 1 and made[0].parent == work / "runs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml", "work"]
    assert "/" not in safe_name(name) and not safe_name(name).startswith(".")


def _results(tmp_path: Path, name: str, note: str) -> Path:
    s = load_scenario(SMALL)
    out = write_run(tmp_path / name, s, {}, {"note": note})
    return out


def test_an_overwrite_killed_between_its_renames_is_recovered(tmp_path):
    # killed after the old folder went aside and before the new one came in: the old
    # results come back; a dead process's temporary folder goes
    out = _results(tmp_path, "o", "old")
    out.rename(tmp_path / ".o.old")
    dead = tmp_path / ".o.tmp-999999999-abcd"
    dead.mkdir()
    recover(out)
    assert json.loads((out / "summary.json").read_text())["note"] == "old"
    assert not dead.exists() and not (tmp_path / ".o.old").exists()
    # killed after the new folder came in: the new results stay, the old go
    _results(tmp_path, ".o.old-src", "older")
    (tmp_path / ".o.old-src").rename(tmp_path / ".o.old")
    recover(out)
    assert json.loads((out / "summary.json").read_text())["note"] == "old"
    assert not (tmp_path / ".o.old").exists()


def test_a_running_writers_temporary_folder_is_left_alone(tmp_path):
    mine = tmp_path / f".o.tmp-{os.getpid()}-beef"
    mine.mkdir()
    check_target(tmp_path / "o", force=False)
    assert mine.is_dir()


def test_an_error_while_writing_leaves_nothing(tmp_path):
    class Boom:
        def to_parquet(self, *a, **k):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_run(tmp_path / "o", load_scenario(SMALL), {"t": Boom()}, {})  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []


def test_folder_and_file_modes_agree(tmp_path):
    out = _results(tmp_path, "o", "x")
    dmode = stat.S_IMODE(out.stat().st_mode)
    fmode = stat.S_IMODE((out / "summary.json").stat().st_mode)
    assert dmode == fmode | (fmode & 0o444) >> 2  # r -> rx: a folder anyone may read


def test_summaries_are_strict_json(tmp_path):
    # the cluster replay's facility domain has no servers: its GPU limit does not exist
    out = tmp_path / "c"
    r = runner.invoke(app, ["run", str(ROOT / "scenarios" / "cluster_replay.yaml"), "-q",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output

    def refuse(c: str) -> None:
        raise ValueError(f"non-standard JSON constant {c}")

    summary = json.loads((out / "summary.json").read_text(), parse_constant=refuse)
    fac = next(d for d in summary["power_domains"] if d["domain"] == "facility")
    assert fac["gpu_limit_w"] is None and "null" in summary["notes"]


def test_a_bad_seed_is_refused_like_a_bad_file(tmp_path):
    r = _run("--out", str(tmp_path / "o"), "--seed", "-1")
    assert r.exit_code == 1 and "--seed" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("sig", "code", "word"), [(signal.SIGTERM, 143, "SIGTERM"),
                                                   (signal.SIGINT, 130, "Ctrl-C")])
def test_a_signal_ends_the_command_with_one_line_and_nothing_left(tmp_path, sig, code, word):
    proc = subprocess.Popen([sys.executable, "-m", "dcsim", "run",
                             str(ROOT / "scenarios" / "facility_model.yaml"), "-q", "--out",
                             str(tmp_path / "o")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    time.sleep(4.0)  # imports done, simulating
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert stderr.strip().splitlines() == [f"interrupted ({word}): stopped, nothing "
                                           "half-written left"]
    assert list(tmp_path.iterdir()) == []
