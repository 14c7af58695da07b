"""Request traces in the Azure LLM inference format.

Columns: ``TIMESTAMP`` (arrival, a date-time), ``ContextTokens`` (prompt length),
``GeneratedTokens`` (output length). Two one-hour traces from Azure's 2023
production services ship with the package (CC-BY 4.0, see data/traces); they carry
no prefix identity (which requests share a system prompt or a conversation), so a
prefix cache has nothing to match in them. A user trace may add either of two
optional columns: ``session_id`` (any label: rows with one label are the turns of one
conversation, in time order, each prompt starting with the previous turn's prompt and
answer) and ``prefix_group`` (any label: rows with one label start with the same
system prompt, of the service's shared_prefix.tokens); and ``priority_class``, the
name of one of the service's classes for every row.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from dcsim.csvfiles import read_csv_with
from dcsim.errors import DcsimError, Problem

BUILTIN_TRACES = {
    "azure-conv-2023": "AzureLLMInferenceTrace_conv.csv",
    "azure-code-2023": "AzureLLMInferenceTrace_code.csv",
}
COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BASE_TIME = pd.Timestamp("2023-11-16 18:00:00")  # clock origin of the traces dcsim writes
OPTIONAL = ("session_id", "prefix_group")  # labels, as integer codes from 0 (-1: blank)


MAX_TRACE_TOKENS = 10_000_000  # per request: ten times the longest context windows of 2026

def resolve_trace_path(spec: str, base_dir: Path | None = None) -> Path:
    """File path of `spec`: ``builtin:NAME`` or a path relative to `base_dir`."""
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        if name not in BUILTIN_TRACES:
            raise DcsimError(Problem("trace", spec, f"one of builtin:{', builtin:'.join(BUILTIN_TRACES)}"))
        root = resources.files("dcsim").joinpath("data", "traces", "azure_llm_2023")
        return Path(str(root)) / BUILTIN_TRACES[name]
    path = Path(spec)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if not path.is_file():
        raise DcsimError(Problem("trace", spec, "an existing trace CSV file (or builtin:NAME)"))
    return path


def load_trace(path: Path) -> pd.DataFrame:
    """Trace as `arrival_s` (from the first request), `prompt_tokens`, `output_tokens`,
    and `session_id` / `prefix_group` codes where the file has those columns."""
    raw = read_csv_with(path, COLUMNS, "trace CSV file")
    if raw.empty:
        raise DcsimError(Problem("rows", 0, "at least one request (the file has only its "
                                 "header)", str(path)))
    ts = pd.to_datetime(raw["TIMESTAMP"], errors="coerce", format="mixed")
    problems = [Problem(f"row {i + 2}.TIMESTAMP", raw.at[i, "TIMESTAMP"], "a date-time",
                        str(path)) for i in raw.index[ts.isna()][:10]]
    tokens = {}
    for col in COLUMNS[1:]:
        # as floats first: a count past 64 bits must not wrap to a small integer
        v = pd.to_numeric(raw[col].astype(str), errors="coerce").astype(float)
        bad = raw.index[~((v >= 0) & (v <= MAX_TRACE_TOKENS)) | (v != v.round())]
        problems += [Problem(f"row {i + 2}.{col}", raw.at[i, col], "a whole number of tokens "
                             f"from 0 to {MAX_TRACE_TOKENS:,}", str(path)) for i in bad[:10]]
        tokens[col] = v
    if problems:
        raise DcsimError(problems)
    order = np.argsort(ts.to_numpy(), kind="stable")
    t = ts.to_numpy()[order]
    arrival = (t - t[0]) / np.timedelta64(1, "s")
    out = pd.DataFrame({
        "arrival_s": arrival.astype(float),
        "prompt_tokens": tokens["ContextTokens"].to_numpy()[order].astype(np.int64),
        "output_tokens": tokens["GeneratedTokens"].to_numpy()[order].astype(np.int64),
    })
    for col in OPTIONAL:
        if col in raw.columns:  # labels of any kind; a blank cell: none
            codes, _ = pd.factorize(raw[col].astype("string"), use_na_sentinel=True)
            out[col] = codes[order].astype(np.int64)
    if "priority_class" in raw.columns:  # names of the service's classes
        out["priority_class"] = raw["priority_class"].astype("string").to_numpy()[order]
    return out


def write_trace(reqs: pd.DataFrame, path: Path) -> None:
    """The requests (arrival_s, prompt_tokens, output_tokens) as an Azure-format trace,
    arrivals from BASE_TIME to the microsecond, written whole or not at all."""
    from dcsim.output import atomic_file  # output imports the scenario, which imports us

    stamps = BASE_TIME + pd.to_timedelta(reqs["arrival_s"], unit="s")
    table = pd.DataFrame({"TIMESTAMP": stamps.dt.strftime("%Y-%m-%d %H:%M:%S.%f"),
                          "ContextTokens": reqs["prompt_tokens"],
                          "GeneratedTokens": reqs["output_tokens"]})
    with atomic_file(path) as tmp:
        table.to_csv(tmp, index=False)
