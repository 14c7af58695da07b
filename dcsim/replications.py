"""Replications: one scenario under independent seeds, and a 95 % interval on every figure.

Replication 0 keeps the scenario's seed, so one replication is exactly the plain run;
replication k draws its seed from ``SeedSequence((seed, k))`` (deterministic, and
independent of the others as numpy's seed sequences are). Every numeric figure of the
summary gets the mean across replications and a 95 % Student t-interval of that mean,
mean +- t(0.975, n - 1) s / sqrt(n) with s the sample standard deviation: it assumes
the replications' figures are independent and roughly normal (means of many requests
are; a p99 of few requests less so). The interval is over random seeds only: the
profile's own error is not in it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from scipy import stats

from dcsim.engine.context import Context
from dcsim.scenario import Scenario, scenario_from_data

QUANTILES = np.linspace(0.0, 1.0, 201)  # latency quantiles kept per replication (0.5 % steps)
LATENCIES = ("ttft", "tpot", "e2e")
METHOD = ("95 % Student t-interval of the mean across replications (independent seeds; "
          "profile error not included)")
T = TypeVar("T")


def replication_seeds(seed: int, n: int) -> list[int]:
    """Seeds of n replications: the scenario's own first, then SeedSequence((seed, k))."""
    out = [int(seed)]
    for k in range(1, n):
        state = np.random.SeedSequence([int(seed), k]).generate_state(1, np.uint64)[0]
        out.append(int(state >> np.uint64(1)))  # below 2**63, as simulation.seed requires
    return out


def t_interval(values: list[float] | np.ndarray) -> tuple[float, float | None, float | None]:
    """Mean and 95 % t-interval of the mean (no interval from a single value)."""
    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if v.size < 2:
        return mean, None, None
    half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return mean, mean - half, mean + half


def flatten(d: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a summary dict by path (``services.chat.ttft_p99_s``,
    ``power_domains[0].peak_w``); booleans and text left out."""
    out: dict[str, float] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out |= flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            out |= flatten(v, f"{prefix}[{i}]")
    elif isinstance(d, int | float) and not isinstance(d, bool) and math.isfinite(d):
        out[prefix] = float(d)
    return out


def intervals(summaries: list[dict]) -> dict[str, dict[str, float | None]]:
    """Per figure found in every replication: mean, low and high of its interval."""
    flat = [flatten(s) for s in summaries]
    common = [k for k in flat[0] if k != "seed" and all(k in f for f in flat[1:])]
    out = {}
    for k in common:
        mean, low, high = t_interval([f[k] for f in flat])
        out[k] = {"mean": mean, "low": low, "high": high}
    return out


def block(seeds: list[int], summaries: list[dict], profile_uncertainty: bool = False
          ) -> dict[str, Any]:
    """The `replications` entry of summary.json."""
    method = METHOD if not profile_uncertainty else METHOD.replace(
        "profile error not included", "each seed also draws the profile's error per GPU, "
        "model and phase (dcsim.profiles.uncertainty)")
    return {"n": len(seeds), "seeds": seeds, "method": method,
            "profile_uncertainty": profile_uncertainty, "metrics": intervals(summaries)}


def context_for(s: Scenario, base_dir: Path, seed: int, profile_uncertainty: bool
                ) -> Context:
    """The run's context; with profile uncertainty its store draws errors from `seed`."""
    ctx = Context.load(s, base_dir)
    return ctx.with_store(ctx.store.with_uncertainty(seed)) if profile_uncertainty else ctx


def facility_series(power: pd.DataFrame) -> pd.DataFrame:
    """The facility rows of a power table: bucket times, IT and facility power, W."""
    f = power[power["domain"] == "facility"].sort_values("t_start_s")
    total = f["power_w"] + f["cooling_w"].fillna(0.0) + f["losses_w"].fillna(0.0)
    return pd.DataFrame({"t_start_s": f["t_start_s"].to_numpy(), "t_end_s": f["t_end_s"].to_numpy(),
                         "it_w": f["power_w"].to_numpy(), "facility_w": total.to_numpy()})


@dataclass(frozen=True)
class Sample:
    """What one replication hands back: its summary as plain JSON and the series the
    report draws bands of (facility power, latency quantiles, busy share per service)."""

    summary: dict
    power: pd.DataFrame
    latency: pd.DataFrame
    busy: pd.DataFrame


def sample(summary: dict, tables: dict[str, pd.DataFrame]) -> Sample:
    """A replication's sample from its summary (plain JSON) and results tables."""
    return Sample(summary, facility_series(tables["power"]),
                  latency_quantiles(tables.get("requests", pd.DataFrame())),
                  busy_series(tables.get("timeseries", pd.DataFrame())))


def latency_quantiles(requests: pd.DataFrame) -> pd.DataFrame:
    """Per service and latency (TTFT, TPOT, E2E), its quantiles over finished requests
    outside the warm-up at the QUANTILES grid: columns service, metric, q, value_s."""
    cols = ["service", "metric", "q", "value_s"]
    if requests.empty:
        return pd.DataFrame(columns=cols)
    done = requests[(requests["status"] == "finished") & ~requests.get(
        "in_warmup", pd.Series(False, index=requests.index)).astype(bool)]
    parts = []
    for svc, g in done.groupby("service", sort=True):
        for key in LATENCIES:
            v = g[f"{key}_s"].dropna().to_numpy(float)
            if v.size:
                parts.append(pd.DataFrame({"service": svc, "metric": key, "q": QUANTILES,
                                           "value_s": np.quantile(v, QUANTILES)}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)


def busy_series(ts: pd.DataFrame) -> pd.DataFrame:
    """Per service and time bucket, the mean busy share and KV-cache use of its
    replicas: columns service, t_start_s, t_end_s, busy_fraction, kv_use."""
    cols = ["service", "t_start_s", "t_end_s", "busy_fraction", "kv_use"]
    if ts.empty:
        return pd.DataFrame(columns=cols)
    return (ts.groupby(["service", "t_start_s", "t_end_s"], sort=True)[["busy_fraction", "kv_use"]]
            .mean().reset_index()[cols])


def _one(data: dict, base_dir: str, seed: int, profile_uncertainty: bool) -> Sample:
    """One replication's sample (runs in a worker process)."""
    from dcsim.output import plain_json
    from dcsim.runner import run_tables

    data = data | {"simulation": data["simulation"] | {"seed": seed}}
    s = scenario_from_data(data)
    tables, summary = run_tables(
        s, Path(base_dir), context=context_for(s, Path(base_dir), seed, profile_uncertainty))
    return sample(json.loads(plain_json(summary.to_dict())), tables)


def _bands(frames: list[pd.DataFrame], keys: list[str], values: list[str]) -> pd.DataFrame:
    """Per key row found in every frame, each value's mean across the frames and its
    95 % t-interval: columns keys, <value>_mean, _low, _high."""
    tall = pd.concat([f.assign(_rep=i) for i, f in enumerate(frames)], ignore_index=True)
    rows = []
    for key, g in tall.groupby(keys, sort=True):
        if g["_rep"].nunique() < len(frames):
            continue  # a service with no finished request in some replication
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        for col in values:
            mean, low, high = t_interval(g[col].to_numpy(float))
            row |= {f"{col}_mean": mean, f"{col}_low": low, f"{col}_high": high}
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, *(f"{c}_{k}" for c in values
                                                for k in ("mean", "low", "high"))])


def latency_bands(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Per service, latency and quantile level: the quantile's mean across replications
    and a 95 % t-interval of it (a band around each latency CDF)."""
    return _bands(frames, ["service", "metric", "q"], ["value_s"])


def busy_bands(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Per service and time bucket: mean busy share and KV use across replications
    with their 95 % t-intervals."""
    return _bands(frames, ["service", "t_start_s", "t_end_s"], ["busy_fraction", "kv_use"])


def power_bands(series: list[pd.DataFrame]) -> pd.DataFrame:
    """Per time bucket, IT and facility power's mean across replications and a 95 %
    t-interval of it (the replications share the buckets: same duration and width)."""
    return _bands(series, ["t_start_s", "t_end_s"], ["it_w", "facility_w"])


def band_tables(samples: list[Sample]) -> dict[str, pd.DataFrame]:
    """The results tables of a replicated run's bands: power, latency CDFs, busy share."""
    return {"replications_power": power_bands([x.power for x in samples]),
            "replications_latency": latency_bands([x.latency for x in samples]),
            "replications_busy": busy_bands([x.busy for x in samples])}


def with_replications(s: Scenario, base_dir: Path, seeds: list[int], workers: int,
                      first: Callable[[], T], profile_uncertainty: bool = False
                      ) -> tuple[T, list[Sample]]:
    """Run `first` (replication 0, in this process) while the other seeds run in worker
    processes; their samples, in seed order."""
    if len(seeds) < 2:
        return first(), []
    data = s.model_dump(mode="json")
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(seeds) - 1))) as pool:
        futures = [pool.submit(_one, data, str(base_dir), k, profile_uncertainty)
                   for k in seeds[1:]]
        try:
            result = first()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        return result, [f.result() for f in futures]


def point_intervals(table: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """Per sweep point, each numeric figure's mean and 95 % t-interval across its
    finished seeds: columns ``<figure>_mean``, ``_low``, ``_high`` and ``seeds``."""
    done = table[table["status"] == "finished"]
    skip = {"point", "seed", "wall_s", *axes}
    figures = [c for c in done.columns if c not in skip and pd.api.types.is_numeric_dtype(
        done[c]) and not pd.api.types.is_bool_dtype(done[c])]
    rows = []
    for point, g in done.groupby("point", sort=True):
        row: dict[str, object] = {"point": point, **g.iloc[0][axes].to_dict(), "seeds": len(g)}
        for c in figures:
            v = g[c].dropna().to_numpy(float)
            mean, low, high = t_interval(v) if v.size else (float("nan"), None, None)
            row |= {f"{c}_mean": mean, f"{c}_low": low, f"{c}_high": high}
        rows.append(row)
    return pd.DataFrame(rows)


def default_workers() -> int:
    """Worker processes for the other replications: the CPUs but one (the first
    replication runs in the command's own process)."""
    return max(1, (os.cpu_count() or 2) - 1)
