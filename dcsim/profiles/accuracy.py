"""How well the store predicts measurements it was not given.

- leave-one-out: drop one measured point, answer it from the rest
  (interpolation, or derivation at the grid's edge);
- leave-one-model-out: drop every point of one model on one GPU and derive them
  from the other models measured there.
"""

from __future__ import annotations

import pandas as pd

from dcsim.catalog import Catalog
from dcsim.profiles.store import ProfileStore
from dcsim.profiles.table import PHASES


def _errors(store: ProfileStore, rows: pd.DataFrame) -> pd.DataFrame:
    out = []
    for r in rows.itertuples():
        a = store.query(r.gpu, r.model, r.phase, int(r.batch_size), int(r.seq_len), int(r.tp))
        out.append({
            "gpu": r.gpu, "model": r.model, "phase": r.phase, "batch_size": r.batch_size,
            "seq_len": r.seq_len, "provenance": a.provenance,
            "latency_rel_err": a.latency_ms / r.latency_ms - 1,
            "energy_rel_err": a.energy_j / r.energy_j - 1,
        })
    return pd.DataFrame(out)


def leave_one_out(store: ProfileStore) -> pd.DataFrame:
    """Relative errors when each measured point is predicted from all the others."""
    t = store.table
    idx = t.index[t["phase"].isin(PHASES) & t["power_cap_w"].isna()]
    frames = []
    for i in idx:
        rest = t.drop(index=i).reset_index(drop=True)
        sub = ProfileStore(rest, store.catalog)
        frames.append(_errors(sub, t.loc[[i]]))
    return pd.concat(frames, ignore_index=True)


def leave_one_model_out(store: ProfileStore, catalog: Catalog | None = None) -> pd.DataFrame:
    """Relative errors of derived answers for models held out entirely."""
    t = store.table
    meas = t[t["phase"].isin(PHASES) & t["power_cap_w"].isna()]
    frames = []
    for (gpu, model), rows in meas.groupby(["gpu", "model"]):
        rest = t[~((t["gpu"] == gpu) & (t["model"] == model))].reset_index(drop=True)
        sub = ProfileStore(rest, catalog or store.catalog)
        have = set(sub.measured()["phase"])
        frames.append(_errors(sub, rows[rows["phase"].isin(have)]))
    return pd.concat(frames, ignore_index=True)


def summarize(errors: pd.DataFrame) -> pd.DataFrame:
    """Median and worst absolute relative error of latency and energy, by phase and overall."""
    e = errors.assign(lat=errors["latency_rel_err"].abs(), en=errors["energy_rel_err"].abs())
    by = e.groupby("phase").agg(points=("lat", "size"), latency_median=("lat", "median"),
                                latency_max=("lat", "max"), energy_median=("en", "median"),
                                energy_max=("en", "max"))
    total = pd.DataFrame({"points": [len(e)], "latency_median": [e["lat"].median()],
                          "latency_max": [e["lat"].max()], "energy_median": [e["en"].median()],
                          "energy_max": [e["en"].max()]}, index=["all"])
    return pd.concat([by, total])
