"""Accuracy of the profile store against the shipped H200 measurements.

Run: python bench/profile_accuracy.py
Prints median and worst relative errors for leave-one-out (interpolation) and
leave-one-model-out (derivation from other models on the same GPU).
"""

from __future__ import annotations

import time

import pandas as pd

from dcsim.catalog import load_catalog
from dcsim.profiles.accuracy import leave_one_model_out, leave_one_out, summarize
from dcsim.profiles.store import ProfileStore


def main() -> None:
    pd.set_option("display.width", 120)
    store = ProfileStore.from_files(load_catalog())
    t0 = time.perf_counter()
    loo = leave_one_out(store)
    print(f"leave-one-out over {len(loo)} measured H200 points ({time.perf_counter() - t0:.1f} s)")
    print(summarize(loo).round(3).to_string())
    print("\nby provenance of the held-out answer:")
    print(loo.assign(abs_lat=loo["latency_rel_err"].abs(), abs_en=loo["energy_rel_err"].abs())
          .groupby("provenance")[["abs_lat", "abs_en"]].median().round(3).to_string())
    lomo = leave_one_model_out(store)
    print(f"\nleave-one-model-out (derived from other models) over {len(lomo)} points")
    print(summarize(lomo).round(3).to_string())
    print("\nby held-out model (median |latency error|):")
    print(lomo.assign(abs_lat=lomo["latency_rel_err"].abs()).groupby("model")["abs_lat"]
          .median().round(3).to_string())


if __name__ == "__main__":
    main()
