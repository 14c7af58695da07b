"""The what-if notebooks run top to bottom (small settings) and are stored without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_the_six_studies():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["01_power_caps", "02_capacity_growth", "03_carbon_price",
                     "04_campus_supply", "05_day_operations", "06_prefill_decode_split"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DCSIM_NOTEBOOK_SMALL", "1")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    # every study ends on a computed conclusion, printed from its own numbers
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    assert any(o.output_type in ("stream", "execute_result", "display_data")
               for o in last.outputs), os.path.basename(path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_use_only_the_public_api(path: Path):
    """`import dcsim` and the names dcsim exports; no module of dcsim's own reached into
    (a notebook is what a user writes, so it may use only what is documented)."""
    import ast

    import dcsim

    nb = nbformat.read(path, as_version=4)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    private = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            private += [a.name for a in node.names if a.name.startswith("dcsim.")]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dcsim"):
            if node.module != "dcsim":
                private.append(node.module)
            private += [a.name for a in node.names if a.name not in dcsim.__all__]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and (
                node.value.id == "dcsim") and node.attr not in dcsim.__all__:
            private.append(f"dcsim.{node.attr}")
    assert "import dcsim" in source and not private, private
