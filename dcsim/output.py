"""Write results so that nothing of the user's is destroyed and nothing is half-written.

A results folder is written into a temporary folder beside its target, then renamed
onto it. The target may be new, an empty folder, or (with force) a dcsim results
folder, recognised by its marker file; never a file, never another folder. Replacing
one renames the old folder aside, the new one in, then removes the old: a kill
between the two renames is recovered by the next write to the same target (the old
results come back if the new ones never arrived), and temporary folders of processes
that no longer run are removed. JSON is strict: a number that does not exist (NaN,
infinity) is written as null.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from dcsim import __version__, yamlfile
from dcsim.errors import DcsimError, Problem
from dcsim.scenario import Scenario

MARKER = ".dcsim-results"  # in every results folder dcsim writes
NAME_MAX = 100


def safe_name(name: str) -> str:
    """A folder name from a scenario or sweep name: letters, digits, '.', '_' and '-'
    only (others become '-'), no leading dot, at most NAME_MAX characters."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", name).lstrip(".-")[:NAME_MAX].rstrip(".-")
    return clean or "unnamed"


def default_out_dir(s: Scenario, root: Path = Path("runs")) -> Path:
    """A new folder runs/<scenario>-<UTC time> (suffixed if it exists)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    base = root / f"{safe_name(s.name)}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def check_target(out: Path, force: bool, option: str = "--out") -> None:
    """Refuse a target whose contents a write would destroy: a file, a folder that is not
    a dcsim results folder and not empty, or a results folder without `force`."""
    out = Path(out)
    recover(out)
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise DcsimError(Problem(option, str(out), "a folder to write results to (this is a "
                                 "file or a link: dcsim never replaces one)"))
    if (out / MARKER).is_file():
        if not force:
            raise DcsimError(Problem(option, str(out), "a new folder (this one holds dcsim "
                                     "results: add --force to replace them)"))
        return
    if any(out.iterdir()):
        raise DcsimError(Problem(option, str(out), "a new or empty folder (this one holds "
                                 "files dcsim did not write: it is never replaced)"))


def write_run(out: Path, s: Scenario, tables: dict[str, pd.DataFrame],
              summary: dict[str, object], summary_name: str = "summary.json",
              files: dict[str, str] | None = None, force: bool = False) -> Path:
    """Write every table (parquet), the summary, the resolved scenario and any extra text
    files (relative path -> content); all or nothing (see the module docstring)."""
    out = Path(out)
    check_target(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_dir(out)
    try:
        for name, df in tables.items():
            df.to_parquet(tmp / f"{name}.parquet", index=False)
        (tmp / summary_name).write_text(plain_json(summary))
        for rel, text in (files or {}).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)
        resolved = {"dcsim_version": __version__, **s.model_dump(mode="json")}
        (tmp / "scenario.resolved.yaml").write_text(yamlfile.dump(resolved))
        (tmp / MARKER).write_text(plain_json({"dcsim_version": __version__,
                                              "summary": summary_name}))
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _temp_dir(out: Path) -> Path:
    """A new folder beside `out`, named for this process (mode as the umask gives)."""
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    return tmp


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename tmp onto out; a results folder already there is renamed aside first and
    removed after (see recover for a kill in between)."""
    if out.is_dir() and any(out.iterdir()):
        old = _old(out)
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _old(out: Path) -> Path:
    return out.parent / f".{out.name}.old"


def recover(out: Path) -> None:
    """Finish what an interrupted write to `out` left: put the old results back if the new
    never arrived, else drop them; remove temporary folders of processes that are gone."""
    out = Path(out)
    if not out.parent.is_dir():
        return
    old = _old(out)
    if old.is_dir() and (old / MARKER).is_file():
        if not out.exists():
            old.rename(out)
        elif (out / MARKER).is_file():
            shutil.rmtree(old, ignore_errors=True)
    clean_stale_temps(out.parent)  # any target's: runs/ gets a new name every run


def clean_stale_temps(folder: Path, name: str = "*") -> None:
    """Remove temporary files and folders (.NAME.tmp-PID-...) in `folder` whose writing
    process no longer runs."""
    for tmp in Path(folder).glob(f".{name}.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[1].split("-")[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def plain_json(summary: object) -> str:
    """Strict JSON text: numpy scalars as numbers, NaN and infinities as null."""
    return json.dumps(_finite(summary), indent=2, allow_nan=False) + "\n"


def _finite(x: object) -> object:
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, str | bytes):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, str | int | float | bool):
        return x
    raise TypeError(f"cannot write {type(x).__name__} to JSON")


@contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """A temporary path beside `target` to write to; renamed onto `target` when the block
    ends without error (readers never see half a file), removed otherwise."""
    target = Path(target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    # created as any new file is (0666 less the umask), unlike mkstemp's private 0600
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
