from __future__ import annotations

from pathlib import Path

import pytest
from cpu_lock import cpu

from dcsim.catalog import Catalog, load_catalog
from dcsim.profiles.store import ProfileStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def store(catalog: Catalog) -> ProfileStore:
    return ProfileStore.from_files(catalog)


@pytest.fixture(autouse=True)
def _cpu_turn(request: pytest.FixtureRequest):
    """Tests marked `timing` measure real CPU time: they run alone (tests/cpu_lock.py)."""
    with cpu(request.node.get_closest_marker("timing") is not None):
        yield
