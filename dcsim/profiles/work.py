"""Work one GPU does in one run of a phase: the features latency and energy scale with.

A run is described by five features, per GPU of a tensor-parallel group of ``tp``:

``[1, layers, linear_flops, attention_flops, bytes]``

- ``1`` and ``layers``: fixed launch and per-layer overheads;
- ``linear_flops``: matmul FLOPs (projections, MLP, LM head) = 2 x params per token;
- ``attention_flops``: score and value FLOPs, quadratic in prompt length (causal) for
  prefill and training, batch x context for decode;
- ``bytes``: HBM traffic: weights read once per run, KV cache read (decode) or written
  (prefill); for training the weights, gradients, fp32 master copy and two Adam moments
  (16 bytes per parameter).

Latency and energy are fitted as non-negative combinations of these features, so
prefill is linear in tokens (plus the attention term) and decode is affine in batch
and in total context, as the physics says. Everything accepts numpy arrays.
"""

from __future__ import annotations

import numpy as np

from dcsim.catalog import shapes
from dcsim.catalog.specs import ModelSpec

N_FEATURES = 5
TRAIN_STATE_BYTES_PER_PARAM = 16  # bf16 weights + bf16 grads + fp32 master + 2 fp32 Adam moments


def work_features(
    m: ModelSpec, phase: str, batch: np.ndarray | float, seq: np.ndarray | float, tp: int = 1
) -> np.ndarray:
    """Feature matrix, shape (n, 5), of `phase` runs with `batch` sequences of length `seq`."""
    b = np.atleast_1d(np.asarray(batch, dtype=float))
    s = np.atleast_1d(np.asarray(seq, dtype=float))
    b, s = np.broadcast_arrays(b, s)
    lin = shapes.linear_flops_per_token(m)
    head = shapes.head_flops_per_token(m) if m.vocab else 0
    kv = shapes.kv_bytes_per_token(m)
    weights = shapes.weight_bytes(m)
    if phase == "prefill":
        f_lin = b * s * lin + b * head  # logits only for the last position
        f_att = shapes.attention_flops(m, b * s, s) / 2  # causal mask halves the work
        nbytes = weights + b * s * kv
    elif phase == "decode":
        f_lin = b * (lin + head)
        f_att = shapes.attention_flops(m, b, s)
        nbytes = weights + b * s * kv
    elif phase == "train":
        f_lin = 3 * b * s * (lin + head)
        f_att = 3 * shapes.attention_flops(m, b * s, s) / 2
        nbytes = np.full_like(b, shapes.total_params(m) * TRAIN_STATE_BYTES_PER_PARAM)
    else:
        raise ValueError(f"phase must be prefill, decode or train, got {phase!r}")
    ones = np.ones_like(b)
    return np.column_stack([ones, ones * m.layers, f_lin / tp, f_att / tp, nbytes / tp])


def allreduce_bytes(m: ModelSpec, phase: str, batch: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """Bytes each tensor-parallel all-reduce moves: activations of the tokens in flight."""
    b = np.asarray(batch, dtype=float)
    s = np.asarray(seq, dtype=float)
    tokens = b if phase == "decode" else b * s
    return tokens * m.hidden * shapes.BF16_BYTES


def allreduces_per_run(m: ModelSpec, phase: str) -> int:
    """Tensor-parallel all-reduces per run: 2 per layer forward, 2 more backward in training."""
    return m.layers * (4 if phase == "train" else 2)
