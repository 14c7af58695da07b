"""Built-in hardware and model catalog, with scenario overrides.

Data lives in versioned CSVs next to this module; each row cites its source.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from importlib import resources
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from dcsim.catalog.specs import GpuSpec, ModelSpec, ServerSpec
from dcsim.errors import DcsimError, Problem, format_loc

__all__ = ["Catalog", "GpuSpec", "ModelSpec", "ServerSpec", "load_catalog"]

E = TypeVar("E", bound=BaseModel)


def _read_csv(name: str, cls: type[E]) -> dict[str, E]:
    text = resources.files("dcsim.catalog").joinpath("data", name).read_text()
    out: dict[str, E] = {}
    for i, row in enumerate(csv.DictReader(text.splitlines())):
        clean = {k: v for k, v in row.items() if v != ""}
        try:
            entry = cls.model_validate(clean)
        except ValidationError as exc:
            problems = [
                Problem(f"row {i + 2}.{format_loc(e['loc'])}", e.get("input"), e["msg"], name)
                for e in exc.errors()
            ]
            raise DcsimError(problems) from None
        out[entry.id] = entry  # type: ignore[attr-defined]
    return out


@dataclass(frozen=True)
class Catalog:
    """GPU, server and model entries keyed by id."""

    gpus: dict[str, GpuSpec] = field(default_factory=dict)
    servers: dict[str, ServerSpec] = field(default_factory=dict)
    models: dict[str, ModelSpec] = field(default_factory=dict)

    def with_overrides(
        self,
        gpus: tuple[GpuSpec, ...] = (),
        servers: tuple[ServerSpec, ...] = (),
        models: tuple[ModelSpec, ...] = (),
    ) -> Catalog:
        """A new catalog where entries with a known id replace it and others are added."""
        return Catalog(
            gpus={**self.gpus, **{g.id: g for g in gpus}},
            servers={**self.servers, **{s.id: s for s in servers}},
            models={**self.models, **{m.id: m for m in models}},
        )

    def gpu(self, gpu_id: str) -> GpuSpec:
        """The GPU entry `gpu_id` (id or driver name); a clear error when unknown."""
        if gpu_id in self.gpus:
            return self.gpus[gpu_id]
        for g in self.gpus.values():
            if g.nvml_name and g.nvml_name == gpu_id:
                return g
        raise DcsimError(Problem("gpu", gpu_id, f"a catalog GPU: {', '.join(sorted(self.gpus))}"))

    def model(self, model_id: str) -> ModelSpec:
        """The model entry; `name/NL` is a slice of NL layers without embedding or head."""
        base, _, suffix = model_id.partition("/")
        if base not in self.models:
            raise DcsimError(
                Problem("model", model_id, f"a catalog model: {', '.join(sorted(self.models))}")
            )
        spec = self.models[base]
        if not suffix:
            return spec
        if not (suffix.endswith("L") and suffix[:-1].isdigit() and int(suffix[:-1]) > 0):
            raise DcsimError(Problem("model", model_id, "a layer slice written as NAME/<layers>L"))
        n = int(suffix[:-1])
        # a slice keeps the model's mix of dense / MoE and windowed / full layers
        share = {k: round(getattr(spec, k) * n / spec.layers) for k in ("dense_layers",
                                                                         "window_layers")}
        if spec.experts:
            share["dense_layers"] = min(share["dense_layers"], n - 1)
        return spec.model_copy(update={"id": model_id, "layers": n, "vocab": 0,
                                       "published_params": None,
                                       "published_active_params": None, **share})

    def server(self, server_id: str) -> ServerSpec:
        """The server entry; a clear error when unknown."""
        if server_id not in self.servers:
            raise DcsimError(
                Problem("server", server_id, f"a catalog server: {', '.join(sorted(self.servers))}")
            )
        return self.servers[server_id]


def load_catalog() -> Catalog:
    """The built-in catalog shipped with the package."""
    return Catalog(
        gpus=_read_csv("gpus.csv", GpuSpec),
        servers=_read_csv("servers.csv", ServerSpec),
        models=_read_csv("models.csv", ModelSpec),
    )
