"""What a real deployment measured: its requests as served, and its GPU energy.

Request formats (`--format`):

- ``dcsim``: a CSV with one row per request: ``arrival_s, first_token_s, finish_s,
  prompt_tokens, output_tokens`` (times in seconds on one clock; other columns ignored).
- ``vllm``: the JSON ``vllm bench serve --save-result --save-detailed`` (formerly
  ``benchmarks/benchmark_serving.py``) writes: lists ``start_times`` (send time, s),
  ``ttfts`` (s), ``itls`` (the gaps between later tokens, s), ``input_lens``,
  ``output_lens`` and ``errors``; requests with an error are left out.
- ``sglang``: the JSONL ``python -m sglang.bench_serving --output-details`` appends (the
  last line is read): the same lists without send times, so only a run with
  ``request_rate`` ``inf`` (every request sent at once, its default) can be replayed.

Energy: a total in joules, or a power log as ``nvidia-smi --query-gpu=timestamp,
power.draw --format=csv`` writes it (``timestamp, power.draw [W]`` per GPU and sample,
optionally ``index`` or ``pci.bus_id`` to tell GPUs apart): integrated per GPU by the
trapezoid rule and summed. Bad rows are refused with their row number.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from dcsim.csvfiles import read_csv_with
from dcsim.errors import DcsimError, Problem

COLUMNS = ("arrival_s", "first_token_s", "finish_s", "prompt_tokens", "output_tokens")
FORMATS = ("dcsim", "vllm", "sglang")
MAX_GAP_S = 5.0  # a power log with a longer gap between samples is refused


def read_requests(path: Path, fmt: str = "dcsim") -> pd.DataFrame:
    """The measured requests in arrival order, times from the first arrival."""
    if fmt not in FORMATS:
        raise DcsimError(Problem("--format", fmt, f"one of {', '.join(FORMATS)}"))
    raw = {"dcsim": _dcsim, "vllm": _vllm, "sglang": _sglang}[fmt](path)
    check_requests(raw, str(path))
    out = raw.reset_index(drop=True)
    t0 = float(out["arrival_s"].iloc[0])
    for c in ("arrival_s", "first_token_s", "finish_s"):
        out[c] = out[c] - t0
    return out


def check_requests(t: pd.DataFrame, origin: str) -> None:
    """Refuse rows no serving engine produces, naming the row (2 = first data row)."""
    if t.empty:
        raise DcsimError(Problem("rows", 0, "at least one measured request", origin))
    problems = []
    bad = {
        "arrival_s": (~np.isfinite(t["arrival_s"]), "a finite time, s"),
        "first_token_s": (~(t["first_token_s"] > t["arrival_s"]),
                          "after its arrival_s (a first token takes time)"),
        "finish_s": (~(t["finish_s"] >= t["first_token_s"]), "at or after its first_token_s"),
        "prompt_tokens": (~(t["prompt_tokens"] >= 1), "a whole number of tokens >= 1"),
        "output_tokens": (~(t["output_tokens"] >= 1), "a whole number of tokens >= 1"),
    }
    for col, (mask, expected) in bad.items():
        for i in np.flatnonzero(mask.to_numpy())[:5]:
            problems.append(Problem(f"row {i + 2}.{col}", _plain(t[col].iloc[i]), expected,
                                    origin))
    arrival = t["arrival_s"].to_numpy(float)
    late = np.flatnonzero(arrival[1:] < arrival[:-1])
    if late.size and not problems:
        i = int(late[0]) + 1
        problems.append(Problem(f"row {i + 2}.arrival_s", _plain(t["arrival_s"].iloc[i]),
                                f"rows in arrival order: at or after the row before's "
                                f"{_plain(t['arrival_s'].iloc[i - 1])}", origin))
    if problems:
        raise DcsimError(problems)


def _plain(v: object) -> object:
    return v.item() if hasattr(v, "item") else v


def _dcsim(path: Path) -> pd.DataFrame:
    t = read_csv_with(path, COLUMNS, "measured requests CSV")
    for c in COLUMNS:
        t[c] = pd.to_numeric(t[c], errors="coerce")
    for c in ("prompt_tokens", "output_tokens"):
        frac = t[c].notna() & (t[c] % 1 != 0)
        if frac.any():
            i = int(np.flatnonzero(frac.to_numpy())[0])
            raise DcsimError(Problem(f"row {i + 2}.{c}", _plain(t[c].iloc[i]),
                                     "a whole number of tokens", str(path)))
    return t[list(COLUMNS)]


def _json(path: Path, last_line: bool) -> dict:
    text = Path(path).read_text(encoding="utf-8")
    if last_line:
        lines = [x for x in text.splitlines() if x.strip()]
        text = lines[-1] if lines else ""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DcsimError(Problem(str(path), f"line {exc.lineno}", "a benchmark result in "
                                 "JSON")) from None
    if not isinstance(d, dict):
        raise DcsimError(Problem(str(path), type(d).__name__, "a JSON object"))
    return d


def _lists(d: dict, keys: tuple[str, ...], path: Path) -> dict[str, list]:
    missing = [k for k in keys if not isinstance(d.get(k), list)]
    if missing:
        raise DcsimError(Problem(str(path), sorted(d)[:8], f"the per-request lists {missing} "
                                 "(run the benchmark with its detailed output)"))
    n = {len(d[k]) for k in keys}
    if len(n) != 1:
        raise DcsimError(Problem(str(path), {k: len(d[k]) for k in keys},
                                 "per-request lists of one length"))
    return {k: d[k] for k in keys}


def _from_lists(d: dict[str, list], start: list[float]) -> pd.DataFrame:
    keep = [i for i, e in enumerate(d.get("errors") or [""] * len(start)) if not e]
    ttft = np.array([d["ttfts"][i] for i in keep], dtype=float)
    decode = np.array([sum(d["itls"][i] or []) for i in keep], dtype=float)
    arrival = np.array([start[i] for i in keep], dtype=float)
    return pd.DataFrame({"arrival_s": arrival, "first_token_s": arrival + ttft,
                         "finish_s": arrival + ttft + decode,
                         "prompt_tokens": [d["input_lens"][i] for i in keep],
                         "output_tokens": [d["output_lens"][i] for i in keep]})


def _vllm(path: Path) -> pd.DataFrame:
    d = _json(path, last_line=False)
    lists = _lists(d, ("start_times", "ttfts", "itls", "input_lens", "output_lens"), path)
    lists["errors"] = d.get("errors")
    return _from_lists(lists, lists["start_times"])


def _sglang(path: Path) -> pd.DataFrame:
    d = _json(path, last_line=True)
    lists = _lists(d, ("ttfts", "itls", "input_lens", "output_lens"), path)
    lists["errors"] = d.get("errors")
    rate = d.get("request_rate")
    if rate not in (None, "inf") and not (isinstance(rate, float) and math.isinf(rate)):
        raise DcsimError(Problem(f"{path}: request_rate", rate, "inf: SGLang's output has "
                                 "no send times, so only a run sending every request at once "
                                 "can be replayed (use --format dcsim with your own times)"))
    return _from_lists(lists, [0.0] * len(lists["ttfts"]))


def energy_from_power_log(path: Path) -> float:
    """GPU energy, J, of an nvidia-smi power log: trapezoids per GPU, summed."""
    t = read_csv_with(path, (), "power log CSV")
    t.columns = [c.strip() for c in t.columns]
    power_col = next((c for c in t.columns if c.startswith("power.draw")), None)
    if "timestamp" not in t.columns or power_col is None:
        raise DcsimError(Problem("columns", list(t.columns), "timestamp and power.draw [W] "
                                 "(nvidia-smi --query-gpu=timestamp,power.draw --format=csv)",
                                 str(path)))
    stamp = pd.to_datetime(t["timestamp"].astype(str).str.strip(), errors="coerce",
                           format="mixed")
    watts = pd.to_numeric(t[power_col].astype(str).str.replace("W", "").str.strip(),
                          errors="coerce")
    for name, bad, expected in (("timestamp", stamp.isna(), "a date and time"),
                                (power_col, ~(watts >= 0), "a power in W, >= 0")):
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DcsimError(Problem(f"row {i + 2}.{name}", str(t[name].iloc[i])[:40],
                                     expected, str(path)))
    gpu = next((t[c] for c in ("index", "pci.bus_id") if c in t.columns), pd.Series(0, t.index))
    total = 0.0
    for _, rows in pd.DataFrame({"s": stamp, "w": watts, "g": gpu}).groupby("g", sort=False):
        s = (rows["s"] - rows["s"].iloc[0]).dt.total_seconds().to_numpy()
        gaps = np.diff(s)
        if (gaps <= 0).any() or (gaps > MAX_GAP_S).any():
            i = int(np.flatnonzero((gaps <= 0) | (gaps > MAX_GAP_S))[0]) + 1
            raise DcsimError(Problem(f"row {rows.index[i] + 2}.timestamp",
                                     str(t["timestamp"].iloc[rows.index[i]]).strip(),
                                     f"samples in time order, at most {MAX_GAP_S:g} s apart",
                                     str(path)))
        w = rows["w"].to_numpy(float)
        total += float(np.sum((w[1:] + w[:-1]) / 2 * gaps))
    return total
