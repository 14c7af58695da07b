"""Read input CSV files with errors a user can act on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from dcsim.errors import DcsimError, Problem


def read_csv_with(path: Path | str, columns: Sequence[str], what: str = "CSV file"
                  ) -> pd.DataFrame:
    """The file as a DataFrame; DcsimError if it is missing, unreadable or lacks `columns`."""
    origin = str(path)
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise DcsimError(Problem("", origin, f"an existing {what}")) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DcsimError(Problem("", origin, f"a readable {what} ({exc})")) from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DcsimError(Problem("columns", list(df.columns), f"also the columns {missing}",
                                 origin))
    return df
