"""How well dcsim derives GPUs and models it never measured: against ML.ENERGY v2.

Run: python bench/derived_accuracy.py [--prompt-tokens 150]

The published rows (vLLM 0.4.2 on A100-SXM4-40GB and H100, dense and MoE models, see
dcsim.profiles.published) against dcsim's answers derived from the H200 measurements.
Prints the median and worst |error| of TPOT and GPU energy per output token:

1. as dcsim answers (kernels only: no engine host overhead);
2. held out: with the engine's overhead (a + b x batch per step, and its power) fitted
   on every other batch size of each (GPU, model) and scored on the rest.

The second figure is the GPU and model derivation's own error; the first adds the
gap between a GPU-bound engine and vLLM 0.4.2.
"""

from __future__ import annotations

import argparse

import pandas as pd

from dcsim.catalog import load_catalog
from dcsim.profiles import published as pb
from dcsim.profiles.store import ProfileStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt-tokens", type=float, default=pb.PROMPT_TOKENS,
                    help="Mean prompt length assumed for the published runs, tokens.")
    args = ap.parse_args()
    pd.set_option("display.width", 140)
    store = ProfileStore.from_files(load_catalog())
    rows = pb.load()
    cmp = pb.comparison(store, args.prompt_tokens, rows)
    print(f"{len(cmp)} published configurations compared (of {len(rows)} chat rows: "
          f"{int(rows['model_id'].isna().sum())} models not in the catalog, "
          f"{int((rows['PP'] > 1).sum())} with pipeline parallelism); prompts of "
          f"{args.prompt_tokens:g} tokens assumed")
    cols = ["points", "tpot_median", "tpot_worst", "energy_median", "energy_worst",
            "tpot_bias", "energy_bias"]
    print("\n1. dcsim's answers (GPU-bound engine) against vLLM 0.4.2:")
    print(pb.error_summary(cmp)[cols].round(3).to_string())
    print(pb.error_summary(cmp, ["gpu", "moe"])[cols].round(3).to_string())
    train = pb.holdout_split(cmp)
    fit = pb.fit_overhead(cmp, train)
    held = pb.with_overhead(cmp, fit)[~train]
    print("\nfitted engine overhead (train half):")
    print(fit.round(6).to_string())
    print("\n2. held-out half, with that overhead (the derivation's own error):")
    print(pb.error_summary(held)[cols].round(3).to_string())
    print(pb.error_summary(held, ["gpu", "moe"])[cols].round(3).to_string())


if __name__ == "__main__":
    main()
