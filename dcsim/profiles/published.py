"""dcsim's derived answers against published end-to-end vLLM measurements (ML.ENERGY v2).

The ML.ENERGY benchmark (v2) served ShareGPT chat prompts with vLLM 0.4.2 (chunked
prefill off) on A100-SXM4-40GB and H100 SXM, at fixed maximum batch sizes, and
published per configuration the batch it ran at on average, mean output length,
mean TPOT and GPU energy per request (Zeus, all GPUs of the replica). dcsim measured
neither GPU nor most of these models: each answer is derived from the H200
measurements (datasheet scaling, the work model, tensor parallelism, MoE).

The steady state compared, at the published average batch B and output length N
(prompts of P tokens; a request's context grows from P to P + N, so a decode step
sees P + N / 2 on average):

- a decode step of B sequences takes t_d(B, P + N/2) and costs e_d; B / N requests
  finish per step and as many prompts are prefilled, prefill-first, in batches of
  k = ceil(B / N): each step carries (B / N) / k of such a prefill, t_p(k, P), e_p;
- TPOT = t_d + (B / N) / k x t_p;  energy per output token = (e_d + (B / N) / k x e_p) / B.

Rows with pipeline parallelism (not modelled for serving) or a model the catalog lacks
are left out, and counted.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from dcsim.profiles.store import ProfileStore

DATA = Path(__file__).resolve().parents[1] / "data" / "reference" / "mlenergy_v2" / \
    "llm_text_generation.csv"
# First human turns of the benchmark's 500 ShareGPT prompts average 350 characters (about
# 88 tokens at 4 characters per token), plus the chat task's system prompt and template.
PROMPT_TOKENS = 150
MODELS = {"meta-llama/Meta-Llama-3.1-8B-Instruct": "llama-3.1-8b",
          "meta-llama/Meta-Llama-3.1-70B-Instruct": "llama-3.1-70b",
          "meta-llama/Meta-Llama-3.1-405B-Instruct": "llama-3.1-405b",
          "mistralai/Mistral-7B-Instruct-v0.3": "mistral-7b",  # v0.1 shape, vocab 32000
          "mistralai/Mixtral-8x7B-Instruct-v0.1": "mixtral-8x7b",
          "mistralai/Mixtral-8x22B-Instruct-v0.1": "mixtral-8x22b",
          "mistralai/Mixtral-8x22B-Instruct-v0.1-pp1": "mixtral-8x22b"}
GPUS = {"A100-SXM4-40GB": "A100-SXM4-40GB", "H100 80GB HBM3": "H100-SXM"}


def load(path: Path = DATA) -> pd.DataFrame:
    """The published rows of the chat task, with catalog ids (None where not in it)."""
    t = pd.read_csv(path).rename(columns={
        "Avg BS (reqs)": "avg_batch", "Avg Output Tokens": "output_tokens",
        "Avg TPOT (s)": "tpot_s", "Energy/req (J)": "energy_per_request_j"})
    t = t[t["task"] == "chat"].copy()
    t["model_id"] = t["model"].map(MODELS)
    t["gpu_id"] = t["gpu"].map(GPUS)
    return t.reset_index(drop=True)


def predict(store: ProfileStore, gpu: str, model: str, tp: int, batch: float,
            output_tokens: float, prompt_tokens: float = PROMPT_TOKENS) -> tuple[float, float]:
    """dcsim's steady-state TPOT (s) and GPU energy per output token (J) (module doc)."""
    dec = store.resolve(gpu, model, "decode", tp)
    pre = store.resolve(gpu, model, "prefill", tp)
    b = max(round(batch), 1)
    d = dec.evaluate(np.array([float(b)]), np.array([prompt_tokens + output_tokens / 2]))
    per_step = batch / max(output_tokens, 1.0)  # prompts prefilled per decode step
    k = max(math.ceil(per_step), 1)
    p = pre.evaluate(np.array([float(k)]), np.array([float(prompt_tokens)]))
    share = per_step / k
    tpot = float(d.latency_s[0] + share * p.latency_s[0])
    energy = float(d.energy_j[0] + share * p.energy_j[0]) / batch
    return tpot, energy


def comparison(store: ProfileStore, prompt_tokens: float = PROMPT_TOKENS,
               rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per comparable published configuration: published and predicted TPOT and
    energy per output token, relative errors (predicted / published - 1)."""
    t = load() if rows is None else rows
    ok = t["model_id"].notna() & t["gpu_id"].notna() & (t["PP"] == 1)
    out = []
    for r in t[ok].itertuples():
        tpot, j = predict(store, r.gpu_id, r.model_id, int(r.TP), r.avg_batch,
                          r.output_tokens, prompt_tokens)
        pub_j = r.energy_per_request_j / r.output_tokens
        out.append({"gpu": r.gpu_id, "model": r.model_id, "tp": int(r.TP),
                    "moe": bool(store.catalog.model(r.model_id).experts),
                    "batch": r.avg_batch, "tpot_s": r.tpot_s, "tpot_pred_s": tpot,
                    "j_per_token": pub_j, "j_per_token_pred": j,
                    "tpot_err": tpot / r.tpot_s - 1, "energy_err": j / pub_j - 1})
    return pd.DataFrame(out)


def error_summary(cmp: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Median and worst |relative error| of TPOT and energy per output token."""
    a = cmp.assign(tpot_abs=cmp["tpot_err"].abs(), energy_abs=cmp["energy_err"].abs())
    agg = {"points": ("tpot_abs", "size"), "tpot_median": ("tpot_abs", "median"),
           "tpot_worst": ("tpot_abs", "max"), "energy_median": ("energy_abs", "median"),
           "energy_worst": ("energy_abs", "max"),
           "tpot_bias": ("tpot_err", "median"), "energy_bias": ("energy_err", "median")}
    if not by:
        return a.assign(all="all").groupby("all").agg(**agg)
    return a.groupby(by).agg(**agg)


def _group(cmp: pd.DataFrame) -> pd.Series:
    return cmp["gpu"] + np.where(cmp["tp"] > 1, "/multi-GPU", "/one GPU")


def fit_overhead(cmp: pd.DataFrame, train: np.ndarray) -> pd.DataFrame:
    """The published engine's extra time and its power per (GPU, one or several GPUs),
    fitted on the `train` rows by least squares:

        TPOT gap = a + b x batch (non-negative a, b);
        energy gap per step = p x gpus x (a + b x batch)  (p: W per GPU meanwhile).

    What dcsim's answers (kernels measured under CUDA graphs) lack against vLLM 0.4.2:
    its scheduling, sampling and Python work each step (b per sequence, a per step, and
    with several GPUs the broadcast of each step to the workers), during which the GPUs
    draw p. An engine's property, not the GPU's: dcsim adds none of it to its answers.
    """
    from scipy.optimize import nnls

    rows = []
    groups = _group(cmp)
    for g in sorted(groups.unique()):
        sel = train & (groups == g).to_numpy()
        c = cmp[sel]
        x = np.column_stack([np.ones(len(c)), c["batch"]])
        (a, b), _ = nnls(x, (c["tpot_s"] - c["tpot_pred_s"]).to_numpy())
        gpu_s = (a + b * c["batch"]) * c["tp"]
        step_j = (c["j_per_token"] - c["j_per_token_pred"]) * c["batch"]
        p = float((gpu_s * step_j).sum() / max(float((gpu_s**2).sum()), 1e-30))
        rows.append({"group": g, "step_s": a, "per_sequence_s": b, "power_w": max(p, 0.0),
                     "points": len(c)})
    return pd.DataFrame(rows).set_index("group")


def with_overhead(cmp: pd.DataFrame, fit: pd.DataFrame) -> pd.DataFrame:
    """Predictions with the fitted engine overhead added (fit_overhead)."""
    par = fit.loc[_group(cmp)]
    extra = par["step_s"].to_numpy() + par["per_sequence_s"].to_numpy() * cmp["batch"]
    tpot = cmp["tpot_pred_s"] + extra
    j = cmp["j_per_token_pred"] + extra * par["power_w"].to_numpy() * cmp["tp"] / cmp["batch"]
    return cmp.assign(tpot_pred_s=tpot, j_per_token_pred=j,
                      tpot_err=tpot / cmp["tpot_s"] - 1, energy_err=j / cmp["j_per_token"] - 1)


def holdout_split(cmp: pd.DataFrame) -> np.ndarray:
    """Train on every other batch size of each (GPU, model), hold out the rest."""
    order = cmp.sort_values(["gpu", "model", "batch"]).groupby(["gpu", "model"]).cumcount()
    return (order.reindex(cmp.index) % 2 == 0).to_numpy()
