"""What every command needs once: the catalog, the profile store and the base folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dcsim.catalog import Catalog
from dcsim.profiles.store import ProfileStore
from dcsim.references import scenario_catalog
from dcsim.scenario import Scenario


def profile_paths(s: Scenario, base_dir: Path) -> list[Path]:
    """The scenario's extra profile files, relative ones resolved against base_dir."""
    return [Path(p) if Path(p).is_absolute() else base_dir / p for p in s.profiles]


@dataclass(frozen=True)
class Context:
    """The catalog (built-in plus the scenario's additions), the profile store built from
    it and the scenario's profile files, and the folder relative paths start from.
    Built once per command and passed to every stage, the optimizer, verify and sweeps."""

    catalog: Catalog
    store: ProfileStore
    base_dir: Path

    @classmethod
    def load(cls, s: Scenario, base_dir: Path | None = None) -> Context:
        """Read the catalog and every profile file of `s` (paths relative to base_dir)."""
        base = Path(".") if base_dir is None else Path(base_dir)
        cat = scenario_catalog(s)
        return cls(cat, ProfileStore.from_files(cat, profile_paths(s, base)), base)

    def with_store(self, store: ProfileStore | None) -> Context:
        """This context with another profile store (None keeps this one)."""
        return self if store is None else Context(self.catalog, store, self.base_dir)
