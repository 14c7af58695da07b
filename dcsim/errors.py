"""Errors a user can act on: where the bad value is, what it is, what was expected."""

from __future__ import annotations

import re
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
            return one_line(f"{where}{field}: {self.expected}")
        return one_line(f"{where}{field}: got {shorten(repr(self.value))}; expected "
                        f"{self.expected}")


VALUE_CHARS = 80  # an error quotes at most this much of a bad value
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """text with control characters (newlines, escapes) written as escapes: a problem is
    one line whatever the input held."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


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

