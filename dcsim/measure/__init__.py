"""Measuring the local machine (`dcsim profile`): the only part of dcsim that imports torch.

The simulator and optimizer never import this package; they read the tables it writes.
"""

from __future__ import annotations

from dcsim.catalog import Catalog, ModelSpec

TINY = ModelSpec(
    id="tiny-llama", layers=2, hidden=256, heads=4, kv_heads=2, head_dim=64, ffn=768,
    vocab=2048, tied_embeddings=False,
    source="defined by dcsim: a 2-layer Llama-shaped model small enough to profile and serve "
           "on a CPU (`dcsim profile --device cpu`); not a published model",
)


def measure_catalog(catalog: Catalog) -> Catalog:
    """The catalog plus the CPU test model."""
    return catalog.with_overrides(models=(TINY,))
