"""Nothing runs beside a test that measures real CPU time (the profiling and replay
tests time a real model loop). Under pytest-xdist every test holds a shared lock on a
file of the run while it runs, and a measuring test or fixture an exclusive one, so a
measurement waits for the tests in flight on other workers and they wait for it.
Without xdist the locks are no-ops."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _lock_file() -> Path | None:
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    return None if run is None else Path(tempfile.gettempdir()) / f"dcsim-tests-{run}.lock"


@contextmanager
def cpu(alone: bool) -> Iterator[None]:
    """Hold the run's lock: exclusive (`alone`, a measurement) or shared."""
    path = _lock_file()
    if path is None:
        yield
        return
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
