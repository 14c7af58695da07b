"""Consoles and the error exit shared by the CLI modules (the only modules that print)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from dcsim.errors import DcsimError

out = Console()
err = Console(stderr=True)


@contextmanager
def stages(title: str) -> Iterator[Callable[[str, str], None]]:
    """A spinner titled `title` and the progress callback of a staged command (optimize,
    size): each stage's message a line on stderr; "period" messages, one per period,
    the spinner's text instead."""
    with err.status(title) as status:
        def progress(stage: str, message: str) -> None:
            if stage == "period":
                status.update(message)
            else:
                err.print(message, highlight=False)

        yield progress


def fail(exc: DcsimError) -> typer.Exit:
    """Print every problem on its own line and exit 1 (no traceback)."""
    for p in exc.problems:
        err.print(f"error: {p}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(1)
