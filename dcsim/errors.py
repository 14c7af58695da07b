"""Errors a user can act on: where the bad value is, what it is, what was expected."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem in one input: file, field path, bad value, expectation."""

    path: str
    value: object
    expected: str
    file: str = ""

    def __str__(self) -> str:
        where = f"{self.file}: " if self.file else ""
        field = self.path or "<root>"
        if self.value is None:
            return f"{where}{field}: {self.expected}"
        return f"{where}{field}: got {shorten(repr(self.value))}; expected {self.expected}"


VALUE_CHARS = 80  # an error quotes at most this much of a bad value


def shorten(text: str, limit: int = VALUE_CHARS) -> str:
    """text, cut to `limit` characters with the length left out said (a 5 MB value in an
    error helps nobody)."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit:,} more characters)"


class DcsimError(Exception):
    """Bad input or an impossible request; carries one or more Problems."""

    def __init__(self, problems: list[Problem] | Problem | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(path="", value=None, expected=problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def format_loc(loc: tuple[object, ...]) -> str:
    """Turn a pydantic error location into `workloads[1].slo.ttft_p99_s`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM in the `dcsim` command (raised by its signal handlers, so that
    cleanup runs and the command ends with one line and exit 130 or 143)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

