"""Work one GPU does in one run of a phase: the features latency and energy scale with.

A run is described by five features, per GPU of a replica of ``tp x ep`` GPUs:

``[1, layers, linear_flops, attention_flops, bytes]``

- ``1`` and ``layers``: fixed launch and per-layer overheads;
- ``linear_flops``: matmul FLOPs (projections, MLP or the experts a token uses, LM
  head) = 2 x active params per token, in BF16-equivalent FLOPs (a low-precision
  matmul counts datasheet BF16 peak / its peak per FLOP, see ``Layout``);
- ``attention_flops``: score and value FLOPs, quadratic in prompt length (causal) for
  prefill and training, batch x context for decode; windowed layers see their window;
- ``bytes``: HBM traffic: weights read once per run (of an MoE layer, the experts the
  run's tokens touch), KV cache read (decode) or written (prefill); for training the
  weights, gradients, fp32 master copy and two Adam moments (16 bytes per parameter).

Latency and energy are fitted as non-negative combinations of these features, so
prefill is linear in tokens (plus the attention term) and decode is affine in batch
and in total context, as the physics says. Everything accepts numpy arrays.

Expert parallelism (``ep`` > 1) is modelled as the engines run it at scale (SGLang
and vLLM with data-parallel attention, DeepSeek's serving): the replica is ``ep``
attention groups of ``tp`` GPUs, each running 1/ep of the batch, and the routed
experts are spread over all ``tp x ep`` GPUs (E / ep per group). Every GPU then does
1/(tp ep) of the FLOPs and holds 1/(tp ep) of the experts, but a full 1/tp copy of the
attention, dense-MLP and embedding weights, which each group reads for its tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dcsim.catalog import shapes
from dcsim.catalog.specs import GpuSpec, ModelSpec
from dcsim.errors import DcsimError, Problem

N_FEATURES = 5
TRAIN_STATE_BYTES_PER_PARAM = 16  # bf16 weights + bf16 grads + fp32 master + 2 fp32 Adam moments
ACTIVATION_BYTES = shapes.BF16_BYTES  # activations move between GPUs in BF16


@dataclass(frozen=True)
class Layout:
    """How a deployment stores and splits the model (beyond tp): numerics and experts.

    weight_bytes / kv_bytes: bytes per parameter and per cache element; matmul_scale:
    BF16-equivalent FLOPs per matmul FLOP on the target GPU (datasheet BF16 peak over
    the peak of the weights' type, 1 for BF16); ep: expert-parallel degree.
    """

    weight_bytes: float = shapes.BF16_BYTES
    kv_bytes: float = shapes.BF16_BYTES
    matmul_scale: float = 1.0
    ep: int = 1
    weights_dtype: str = "bf16"
    scale_basis: str = "datasheet"  # where matmul_scale comes from: datasheet | measured

    @property
    def is_default(self) -> bool:
        """True for BF16 weights and cache without expert parallelism (what is measured)."""
        return self == Layout()


BF16 = Layout()


def expert_weight_bytes(m: ModelSpec, lay: Layout) -> float:
    """Bytes of all routed experts (the part expert parallelism shards)."""
    return shapes.moe_layers(m) * m.experts * shapes.expert_params(m) * lay.weight_bytes


def weight_bytes_per_gpu(m: ModelSpec, tp: int, lay: Layout = BF16) -> float:
    """Weights one GPU holds: the routed experts over tp x ep, the rest over tp."""
    experts = expert_weight_bytes(m, lay)
    return (shapes.weight_bytes(m, lay.weight_bytes) - experts) / tp + experts / (tp * lay.ep)


def _weights_read(m: ModelSpec, tokens: np.ndarray, tp: int, lay: Layout) -> np.ndarray:
    """Weight bytes one GPU reads in a run over `tokens` tokens (all groups together)."""
    touched = shapes.weight_bytes_read(m, tokens, lay.weight_bytes)
    routed = shapes.expected_experts(m, tokens) * shapes.expert_params(m) * \
        shapes.moe_layers(m) * lay.weight_bytes
    return (touched - routed) / tp + routed / (tp * lay.ep)


def work_features(
    m: ModelSpec, phase: str, batch: np.ndarray | float, seq: np.ndarray | float, tp: int = 1,
    lay: Layout = BF16,
) -> np.ndarray:
    """Feature matrix, shape (n, 5), of `phase` runs with `batch` sequences of length `seq`."""
    b = np.atleast_1d(np.asarray(batch, dtype=float))
    s = np.atleast_1d(np.asarray(seq, dtype=float))
    b, s = np.broadcast_arrays(b, s)
    lin = shapes.linear_flops_per_token(m) * lay.matmul_scale
    head = shapes.head_flops_per_token(m) * lay.matmul_scale if m.vocab else 0
    gpus = tp * lay.ep
    if phase == "prefill":
        f_lin = b * s * lin + b * head  # logits only for the last position
        f_att = shapes.causal_attention_flops(m, b, s)
        nbytes = _weights_read(m, b * s, tp, lay) + b * shapes.kv_bytes(m, s, lay.kv_bytes) / gpus
    elif phase == "decode":
        f_lin = b * (lin + head)
        f_att = shapes.attention_flops(m, b, s)
        nbytes = _weights_read(m, b, tp, lay) + b * shapes.kv_bytes(m, s, lay.kv_bytes) / gpus
    elif phase == "train":
        f_lin = 3 * b * s * (lin + head)
        f_att = 3 * shapes.causal_attention_flops(m, b, s)
        nbytes = np.full_like(b, shapes.total_params(m) * TRAIN_STATE_BYTES_PER_PARAM / tp)
    else:
        raise ValueError(f"phase must be prefill, decode or train, got {phase!r}")
    ones = np.ones_like(b)
    return np.column_stack([ones, ones * m.layers, f_lin / gpus, f_att / gpus, nbytes])


def tokens_in_flight(phase: str, batch: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """Tokens whose activations a run moves: one per sequence (decode) or all."""
    b = np.asarray(batch, dtype=float)
    return b if phase == "decode" else b * np.asarray(seq, dtype=float)


def allreduce_bytes(m: ModelSpec, phase: str, batch: np.ndarray, seq: np.ndarray,
                    ep: int = 1) -> np.ndarray:
    """Bytes each tensor-parallel all-reduce moves: activations of one attention group's
    tokens in flight (1/ep of the batch)."""
    return tokens_in_flight(phase, batch, seq) / ep * m.hidden * ACTIVATION_BYTES


def allreduces_per_run(m: ModelSpec, phase: str) -> int:
    """Tensor-parallel all-reduces per run: 2 per layer forward, 2 more backward in training."""
    return m.layers * (4 if phase == "train" else 2)


def alltoall_bytes(m: ModelSpec, phase: str, batch: np.ndarray, seq: np.ndarray,
                   gpus: int) -> np.ndarray:
    """Bytes one GPU sends in one expert-parallel dispatch (or combine): its share of the
    tokens, each to its k experts: tokens x k x hidden x 2 B / (tp x ep)."""
    per_token = m.experts_per_token * m.hidden * ACTIVATION_BYTES
    return tokens_in_flight(phase, batch, seq) * per_token / gpus


def alltoalls_per_run(m: ModelSpec, phase: str) -> int:
    """Expert-parallel all-to-alls per run: dispatch and combine in each MoE layer."""
    return shapes.moe_layers(m) * (4 if phase == "train" else 2)


DTYPE_BYTES = {"bf16": 2.0, "fp8": 1.0, "fp4": 0.5625}  # fp4: NVFP4, 4 bits + an fp8 scale per 16


def layout_of(g: GpuSpec, weights_dtype: str = "bf16", kv_dtype: str = "bf16", ep: int = 1,
              path: str = "deployment") -> Layout:
    """The Layout of a deployment on GPU `g`; refuses a type the GPU has no tensor cores for.

    Bytes per parameter: bf16 2, fp8 1, fp4 0.5625 (NVFP4: 4-bit values and one 8-bit
    scale per 16). Matmul scale: BF16 peak / peak of the weights' type (W8A8 and W4A4
    matmuls run at that type's rate; attention stays BF16).
    """
    peaks = {"bf16": g.bf16_dense_tflops, "fp8": g.fp8_dense_tflops, "fp4": g.fp4_dense_tflops}
    for field, dtype in (("weights_dtype", weights_dtype), ("kv_cache_dtype", kv_dtype)):
        if dtype not in DTYPE_BYTES:
            raise DcsimError(Problem(f"{path}.{field}", dtype, f"one of {sorted(DTYPE_BYTES)}"))
    peak = peaks[weights_dtype]
    if peak is None:
        have = [k for k, v in peaks.items() if v is not None]
        raise DcsimError(Problem(f"{path}.weights_dtype", weights_dtype, f"a type {g.id} has "
                                 f"tensor cores for: {', '.join(have)}"))
    return Layout(DTYPE_BYTES[weights_dtype], DTYPE_BYTES[kv_dtype],
                  g.bf16_dense_tflops / peak, ep, weights_dtype)


def layout_notes(g: GpuSpec, m: ModelSpec, lay: Layout) -> list[str]:
    """How a derived answer departs from the BF16, ep = 1 measurements (its basis)."""
    notes = []
    if m.experts:
        notes.append(f"mixture of experts: FLOPs of {m.experts_per_token} of {m.experts} "
                     f"routed experts per token, weight reads of the expected distinct experts "
                     f"a batch touches")
    if m.attention == "mla" or m.window_layers:
        notes.append("attention and KV bytes of "
                     + ("multi-head latent attention" if m.attention == "mla" else
                        f"{m.window_layers} windowed layers ({m.sliding_window} tokens)"))
    if lay.weight_bytes != shapes.BF16_BYTES:
        what = ("measured gemm ratio" if lay.scale_basis == "measured" else
                "datasheet peak ratio")
        notes.append(f"{lay.weights_dtype} weights at {lay.weight_bytes:g} B/parameter, "
                     f"matmuls at {g.id}'s {what} (BF16-equivalent FLOPs x "
                     f"{lay.matmul_scale:.3g})")
    if lay.kv_bytes != shapes.BF16_BYTES:
        notes.append(f"KV cache at {lay.kv_bytes:g} B/element")
    if lay.ep > 1:
        notes.append(f"ep={lay.ep}: routed experts over tp x ep GPUs, dispatch and combine "
                     f"all-to-all over the scale-up link")
    return notes
