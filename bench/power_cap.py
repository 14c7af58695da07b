"""The DVFS power-cap model against the Zeus power-limit sweeps, and H200 cap curves.

Run: python bench/power_cap.py
"""

from __future__ import annotations

import numpy as np

from dcsim.catalog import load_catalog
from dcsim.hardware import dvfs
from dcsim.hardware.calibration import calibrate, curve_errors, energy_optimal_limits, load_zeus
from dcsim.profiles.store import ProfileStore


def main() -> None:
    cat = load_catalog()
    for gpu in ("V100-PCIe-32GB", "A40"):
        df = load_zeus(gpu)
        d, err = calibrate(df, dvfs.DERIVED_MIN_CLOCK)
        e = curve_errors(df, d)
        picks = energy_optimal_limits(e)
        print(f"{gpu}: floor {d.floor_w} W, knee {d.knee}; median |error| over all jobs {err:.3f}")
        for net, grp in e.groupby("network"):
            p = picks[picks["network"] == net]
            print(f"  {net:18s} time {grp['time_rel_err'].abs().median():.3f}  power "
                  f"{grp['power_rel_err'].abs().median():.3f}  energy-optimal limit matched "
                  f"{(p['measured_limit_w'] == p['model_limit_w']).mean():.0%}, worst energy "
                  f"penalty of the model's pick {p['energy_at_model_choice_rel'].max():.1%}")
    store = ProfileStore.from_files(cat)
    print("\nH200, Llama-3.1-8B: latency and energy relative to the 700 W default")
    for phase, b in (("prefill", 4), ("decode", 1), ("decode", 64)):
        base = store.query("H200-SXM", "llama-3.1-8b", phase, b, 2048)
        cells = []
        for cap in (600, 500, 400, 300, 200):
            a = store.query("H200-SXM", "llama-3.1-8b", phase, b, 2048, power_cap_w=cap)
            cells.append(f"{cap} W: t x{a.latency_ms / base.latency_ms:.2f} "
                         f"E x{a.energy_j / base.energy_j:.2f}")
        print(f"  {phase} batch {b}: " + "; ".join(cells))
    print(f"\nderived DVFS constants: floor/TDP {dvfs.DERIVED_FLOOR_RATIO}, knee "
          f"{dvfs.DERIVED_KNEE}, lowest clock {dvfs.DERIVED_MIN_CLOCK} (mean of V100/A40: "
          f"{np.mean([27.5 / 250, 75 / 300]):.4f}, {np.mean([0.875, 0.85]):.4f})")


if __name__ == "__main__":
    main()
