"""Read input files (scenario, sweep and CSV files) with errors a user can act on.

Every input is checked before it is parsed: a regular file (not a folder or a device),
within a size cap, and for text UTF-8. Errors name the file and what was expected, and
quote nothing of its contents beyond its column names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dcsim.errors import DcsimError, Problem

MAX_TEXT_BYTES = 16 * 2**20  # scenario and sweep files: far above any real one
MAX_CSV_BYTES = 2 * 2**30  # traces and profiles: a week of a large production trace


def check_file(path: Path | str, what: str, max_bytes: int) -> Path:
    """The path, if it names a regular file of at most max_bytes; else a DcsimError."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise DcsimError(Problem("", str(p), f"an existing {what}")) from None
    except OSError as exc:
        raise DcsimError(Problem("", str(p), f"a readable {what} ({exc.strerror})")) from None
    if p.is_dir():
        raise DcsimError(Problem("", str(p), f"a {what} (this is a folder)"))
    if not p.is_file():
        raise DcsimError(Problem("", str(p), f"a {what} (this is not a regular file)"))
    if st.st_size > max_bytes:
        raise DcsimError(Problem("", str(p), f"a {what} of at most {max_bytes / 2**20:,.0f} "
                                 f"MiB (it has {st.st_size / 2**20:,.0f} MiB)"))
    return p


def read_text(path: Path | str, what: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A text input as str: a regular file within the cap, in UTF-8."""
    p = check_file(path, what, max_bytes)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DcsimError(Problem("", str(p), f"a readable {what} ({exc.strerror})")) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DcsimError(Problem(f"line {line}", None, f"text in UTF-8 (byte {exc.start} is "
                                 "not)", str(p))) from None


def read_csv_with(path: Path | str, columns: Sequence[str], what: str = "CSV file"
                  ) -> pd.DataFrame:
    """The file as a DataFrame; DcsimError if it is missing, unreadable or lacks `columns`."""
    origin = str(path)
    check_file(path, what, MAX_CSV_BYTES)
    try:
        df = pd.read_csv(path, encoding="utf-8")
    except OSError as exc:
        raise DcsimError(Problem("", origin, f"a readable {what} ({exc.strerror})")) from None
    except UnicodeDecodeError:
        raise DcsimError(Problem("", origin, f"a {what} in UTF-8")) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        # pandas' message names a line and field counts, not the line's text
        raise DcsimError(Problem("", origin, f"a readable {what} ({exc})")) from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DcsimError(Problem("columns", list(df.columns), f"also the columns {missing}",
                                 origin))
    return df
