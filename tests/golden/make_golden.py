"""Write the pinned results of the shipped scenarios (requests table and summary).

Run from the repository root, on a commit whose results are the reference:

    python tests/golden/make_golden.py

Each scenario in GOLDEN runs as `dcsim run` would (same runner, same seed). Its
summary goes to tests/golden/<stem>.summary.json and its requests table, as one
SHA-256 digest of the exact bytes of each column (a table of a few MB per
scenario would bloat the repository), to tests/golden/<stem>.requests.json.
tests/test_golden.py runs them again and compares value for value, so a refactor
that changes any result by as much as one bit is caught, column by column.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

# the scenarios `dcsim run` accepts as shipped; the optimizer's files are pinned by
# their own tests (their plans change with solver versions)
GOLDEN = ("default", "mixed_services", "training", "facility_model", "custom_hardware",
          "cluster_replay", "prefix_caching", "chat_sessions", "nvl72_moe")


def pinned_run(stem: str) -> tuple[pd.DataFrame, dict]:
    """The requests table and the summary of scenarios/<stem>.yaml, as JSON would hold it."""
    from dcsim.output import plain_json
    from dcsim.runner import run_tables
    from dcsim.scenario import load_scenario

    path = ROOT / "scenarios" / f"{stem}.yaml"
    tables, summary = run_tables(load_scenario(path), path.parent)
    return tables["requests"], json.loads(plain_json(summary.to_dict()))


def column_digests(df: pd.DataFrame) -> dict[str, object]:
    """Row count, and per column its dtype and the SHA-256 of its values' bytes
    (categorical columns by their labels)."""
    out: dict[str, object] = {"rows": len(df)}
    for col in df.columns:
        v = df[col]
        if isinstance(v.dtype, pd.CategoricalDtype):
            data = "\n".join(map(str, v.astype(str))).encode()
        else:
            data = np.ascontiguousarray(v.to_numpy()).tobytes()
        out[col] = f"{v.dtype}:{hashlib.sha256(data).hexdigest()}"
    return out


def main() -> int:
    for stem in GOLDEN:
        requests, summary = pinned_run(stem)
        (HERE / f"{stem}.requests.json").write_text(
            json.dumps(column_digests(requests), indent=1) + "\n")
        (HERE / f"{stem}.summary.json").write_text(
            json.dumps(summary, indent=1, sort_keys=True) + "\n")
        print(f"{stem}: {len(requests)} requests")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
