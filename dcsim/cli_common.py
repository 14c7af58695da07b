"""Consoles and the error exit shared by the CLI modules (the only modules that print)."""

from __future__ import annotations

import typer
from rich.console import Console

from dcsim.errors import DcsimError

out = Console()
err = Console(stderr=True)


def fail(exc: DcsimError) -> typer.Exit:
    """Print every problem on its own line and exit 1 (no traceback)."""
    for p in exc.problems:
        err.print(f"error: {p}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(1)
