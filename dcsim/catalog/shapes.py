"""Transformer shape arithmetic: parameters, weight and KV bytes, FLOPs.

Pure functions on a `ModelSpec`. Counts are exact for decoders built of: GQA
attention (MHA and MQA included) or multi-head latent attention (MLA, DeepSeek-V3),
SwiGLU MLPs, dense or mixture-of-experts (routed top-k experts, shared experts, a
linear router), RMSNorm, optional tied embeddings. Not counted: QK-norm weights,
attention sinks and similar per-head vectors (under 0.01 % of any catalog model).
"""

from __future__ import annotations

import numpy as np

from dcsim.catalog.specs import ModelSpec

BF16_BYTES = 2


def _qk_dim(m: ModelSpec) -> int:
    return m.head_dim + m.rope_head_dim


def _v_dim(m: ModelSpec) -> int:
    return m.v_head_dim or m.head_dim


def attention_params(m: ModelSpec) -> int:
    """Projection parameters of one layer's attention (norms of MLA's low-rank paths
    included).

    GQA: Q (hidden x heads x d), K and V (hidden x kv_heads x d), O (heads x d x hidden).
    MLA: Q through a rank-q_lora bottleneck (or full rank) to heads x (d + rope); a joint
    down-projection to the latent (kv_lora) plus one shared rotary key (rope); the latent
    up-projected to per-head keys (d) and values (v); O (heads x v x hidden).
    """
    h, n = m.hidden, m.heads
    if m.attention == "mla":
        q_out = n * _qk_dim(m)
        q = (h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * q_out) if m.q_lora_rank \
            else h * q_out
        kv = h * (m.kv_lora_rank + m.rope_head_dim) + m.kv_lora_rank \
            + m.kv_lora_rank * n * (m.head_dim + _v_dim(m))
        return q + kv + n * _v_dim(m) * h
    q_out, kv_out = n * m.head_dim, m.kv_heads * m.head_dim
    bias = q_out + 2 * kv_out + h if m.attention_bias else 0
    return 2 * h * q_out + 2 * h * kv_out + bias


def mlp_params(m: ModelSpec, width: int, bias: bool = False) -> int:
    """A SwiGLU MLP of intermediate size `width`: gate, up and down projections."""
    return 3 * m.hidden * width + (2 * width + m.hidden if bias else 0)


def expert_params(m: ModelSpec) -> int:
    """One expert (routed or shared): a SwiGLU MLP of width expert_ffn (or ffn)."""
    return mlp_params(m, m.expert_ffn or m.ffn, m.expert_bias)


def moe_layers(m: ModelSpec) -> int:
    """Layers whose MLP is a mixture of experts (0 for a dense model)."""
    return m.layers - m.dense_layers if m.experts else 0


def router_params(m: ModelSpec) -> int:
    """The router of one MoE layer: hidden x experts (plus a bias)."""
    return m.hidden * m.experts + (m.experts if m.expert_bias else 0)


def _layers_params(m: ModelSpec, experts_used: float) -> float:
    """Parameters of all layers when each MoE layer uses `experts_used` routed experts."""
    dense_mlp = (m.layers - moe_layers(m)) * mlp_params(m, m.ffn)
    moe = moe_layers(m) * (router_params(m) + (experts_used + m.shared_experts)
                           * expert_params(m))
    return m.layers * (attention_params(m) + 2 * m.hidden) + dense_mlp + moe


def layer_params(m: ModelSpec) -> float:
    """Parameters one token uses per layer, on average: the size derivations rank by."""
    return _layers_params(m, m.experts_per_token) / m.layers


def embedding_params(m: ModelSpec) -> int:
    """Token embedding plus LM head (counted once when tied)."""
    return m.vocab * m.hidden * (1 if m.tied_embeddings else 2)


def total_params(m: ModelSpec) -> int:
    """All parameters, every expert included: layers + embeddings + final norm (a layer
    slice has neither)."""
    body = int(_layers_params(m, m.experts))
    return body if m.vocab == 0 else body + embedding_params(m) + m.hidden


def active_params(m: ModelSpec, input_embedding: bool = True) -> int:
    """Parameters one token uses: the top-k routed and the shared experts of each MoE
    layer, everything else. `input_embedding=False` leaves out the embedding table (a
    lookup, no matmul), as some publishers count."""
    body = int(_layers_params(m, m.experts_per_token))
    if m.vocab == 0:
        return body
    emb = embedding_params(m) - (0 if input_embedding or m.tied_embeddings else
                                 m.vocab * m.hidden)
    return body + emb + m.hidden


def expected_experts(m: ModelSpec, tokens: np.ndarray | float) -> np.ndarray:
    """Expected distinct routed experts one MoE layer runs for `tokens` tokens.

    Each token picks k of E experts; with routing uniform over experts, a given expert
    is missed by one token with probability 1 - k/E and, tokens being independent, by
    all B of them with probability (1 - k/E)^B. Summing over experts:

        E[touched] = E x (1 - (1 - k/E)^B)

    which is k for one token and tends to E as the batch grows. Real routers are skewed
    (popular experts), which touches fewer: this is the upper end for weight reads.
    """
    b = np.asarray(tokens, dtype=float)
    if m.experts == 0:
        return np.zeros_like(b)
    e, k = float(m.experts), float(m.experts_per_token)
    return e * (1.0 - (1.0 - k / e) ** b)


def weight_bytes(m: ModelSpec, dtype_bytes: float = BF16_BYTES) -> float:
    """Bytes of weights held in GPU memory (all experts)."""
    return total_params(m) * dtype_bytes


def weight_bytes_read(m: ModelSpec, tokens: np.ndarray | float,
                      dtype_bytes: float = BF16_BYTES) -> np.ndarray:
    """Weight bytes one forward pass over `tokens` tokens reads from memory: everything
    but the routed experts, plus the experts those tokens touch (expected_experts)."""
    b = np.asarray(tokens, dtype=float)
    unused = (m.experts - expected_experts(m, b)) * expert_params(m) * moe_layers(m)
    return (total_params(m) - unused) * dtype_bytes


def kv_elements_per_layer(m: ModelSpec) -> int:
    """Cache elements one token holds per layer: K and V per KV head (GQA), or the
    latent plus the shared rotary key (MLA)."""
    if m.attention == "mla":
        return m.kv_lora_rank + m.rope_head_dim
    return m.kv_heads * (m.head_dim + _v_dim(m))


def kv_bytes_per_token(m: ModelSpec, dtype_bytes: float = BF16_BYTES) -> float:
    """KV-cache bytes one token occupies in every layer (a windowed layer too, until the
    token leaves its window): layers x kv_elements_per_layer x bytes."""
    return m.layers * kv_elements_per_layer(m) * dtype_bytes


def layer_context(m: ModelSpec, context: np.ndarray | float) -> np.ndarray:
    """Tokens of context summed over the layers: a full layer sees all `context`, a
    windowed one at most its window (what one query attends to, and what the cache
    holds for one sequence, in layer-tokens)."""
    c = np.asarray(context, dtype=float)
    return (m.layers - m.window_layers) * c + m.window_layers * np.minimum(c, m.sliding_window)


def kv_bytes(m: ModelSpec, context: np.ndarray | float,
             dtype_bytes: float = BF16_BYTES) -> np.ndarray:
    """KV bytes of one sequence of `context` tokens: windowed layers hold at most their
    window."""
    return kv_elements_per_layer(m) * dtype_bytes * layer_context(m, context)


def linear_flops_per_token(m: ModelSpec) -> float:
    """Forward matmul FLOPs for one token through the layers: 2 x the parameters it uses
    (norms excluded)."""
    return 2 * (_layers_params(m, m.experts_per_token) - 2 * m.layers * m.hidden)


def head_flops_per_token(m: ModelSpec) -> int:
    """Forward FLOPs of the LM head for one output position: 2 x hidden x vocab."""
    return 2 * m.hidden * m.vocab


def _pair_flops(m: ModelSpec) -> int:
    """Score and value FLOPs of one (query, key) pair in one layer, all heads."""
    return 2 * m.heads * (_qk_dim(m) + _v_dim(m))


def attention_flops(m: ModelSpec, query_tokens: float, context_tokens: float) -> float:
    """Attention FLOPs of `query_tokens` queries each over `context_tokens` keys (decode);
    windowed layers see at most their window. GQA: 4 x layers x heads x d x q x k."""
    return _pair_flops(m) * np.asarray(query_tokens, dtype=float) * layer_context(
        m, context_tokens)


def causal_attention_flops(m: ModelSpec, sequences: float, length: float) -> float:
    """Attention FLOPs of prefilling `sequences` prompts of `length` tokens (causal).

    Token i attends to i keys (or min(i, W) in a windowed layer): the pairs sum to
    L^2 / 2, or W L - W^2 / 2 once L exceeds the window W (continuous approximation).
    """
    b, s = np.asarray(sequences, dtype=float), np.asarray(length, dtype=float)
    w = float(m.sliding_window)
    windowed = np.where(s <= w, s * s / 2, w * s - w * w / 2)
    pairs = (m.layers - m.window_layers) * s * s / 2 + m.window_layers * windowed
    return _pair_flops(m) * b * pairs


def forward_flops_per_token(m: ModelSpec) -> float:
    """Forward FLOPs per token excluding attention (about 2 x active parameters)."""
    return linear_flops_per_token(m) + head_flops_per_token(m)


def train_flops_per_token(m: ModelSpec) -> float:
    """Training FLOPs per token: forward + backward = 3 x forward (the 6N rule)."""
    return 3 * forward_flops_per_token(m)
