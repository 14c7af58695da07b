"""Write a run's results atomically: into a temporary folder, then rename."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml

from dcsim import __version__
from dcsim.scenario import Scenario


def default_out_dir(s: Scenario, root: Path = Path("runs")) -> Path:
    """A new folder runs/<scenario>-<UTC time> (suffixed if it exists)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    base = root / f"{s.name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


def write_run(out: Path, s: Scenario, tables: dict[str, pd.DataFrame],
              summary: dict[str, object], summary_name: str = "summary.json",
              files: dict[str, str] | None = None) -> Path:
    """Write every table (parquet), the summary, the resolved scenario and any extra text
    files (relative path -> content); all or nothing."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name, df in tables.items():
            df.to_parquet(tmp / f"{name}.parquet", index=False)
        (tmp / summary_name).write_text(plain_json(summary))
        for rel, text in (files or {}).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)
        resolved = {"dcsim_version": __version__, **s.model_dump(mode="json")}
        (tmp / "scenario.resolved.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def plain_json(summary: dict[str, object]) -> str:
    """The summary as the JSON text written to summary.json (numpy scalars as numbers)."""
    return json.dumps(summary, indent=2, default=_plain) + "\n"


def _plain(x: object) -> object:
    if hasattr(x, "item"):
        return x.item()
    raise TypeError(f"cannot write {type(x).__name__} to JSON")


@contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """A temporary path beside `target` to write to; renamed onto `target` when the block
    ends without error (readers never see half a file), removed otherwise."""
    target = Path(target)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for sharing
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
