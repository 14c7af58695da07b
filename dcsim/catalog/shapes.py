"""Transformer shape arithmetic: parameters, weight and KV bytes, FLOPs.

Pure functions on a `ModelSpec`; every count is exact for a Llama-style
decoder (GQA attention, SwiGLU MLP, RMSNorm, optional tied embeddings).
"""

from __future__ import annotations

from dcsim.catalog.specs import ModelSpec

BF16_BYTES = 2


def layer_params(m: ModelSpec) -> int:
    """Parameters of one decoder layer: Q, K, V, O projections, SwiGLU MLP, two norms."""
    q_out = m.heads * m.head_dim
    kv_out = m.kv_heads * m.head_dim
    attn = m.hidden * q_out + 2 * m.hidden * kv_out + q_out * m.hidden
    mlp = 3 * m.hidden * m.ffn
    return attn + mlp + 2 * m.hidden


def embedding_params(m: ModelSpec) -> int:
    """Token embedding plus LM head (counted once when tied)."""
    return m.vocab * m.hidden * (1 if m.tied_embeddings else 2)


def total_params(m: ModelSpec) -> int:
    """All parameters: layers + embeddings + final norm (a layer slice has neither)."""
    if m.vocab == 0:
        return m.layers * layer_params(m)
    return m.layers * layer_params(m) + embedding_params(m) + m.hidden


def weight_bytes(m: ModelSpec, dtype_bytes: int = BF16_BYTES) -> int:
    """Bytes of weights held in GPU memory."""
    return total_params(m) * dtype_bytes


def kv_bytes_per_token(m: ModelSpec, dtype_bytes: int = BF16_BYTES) -> int:
    """KV-cache bytes one token occupies: 2 (K and V) x layers x kv_heads x head_dim x bytes."""
    return 2 * m.layers * m.kv_heads * m.head_dim * dtype_bytes


def linear_flops_per_token(m: ModelSpec) -> int:
    """Forward matmul FLOPs for one token through the layers: 2 x layer params (norms excluded)."""
    return 2 * m.layers * (layer_params(m) - 2 * m.hidden)


def head_flops_per_token(m: ModelSpec) -> int:
    """Forward FLOPs of the LM head for one output position: 2 x hidden x vocab."""
    return 2 * m.hidden * m.vocab


def attention_flops(m: ModelSpec, query_tokens: float, context_tokens: float) -> float:
    """Attention score and value FLOPs: 4 x layers x heads x head_dim x queries x keys."""
    return 4.0 * m.layers * m.heads * m.head_dim * query_tokens * context_tokens


def forward_flops_per_token(m: ModelSpec) -> int:
    """Forward FLOPs per token excluding attention (about 2 x parameters)."""
    return linear_flops_per_token(m) + head_flops_per_token(m)


def train_flops_per_token(m: ModelSpec) -> int:
    """Training FLOPs per token: forward + backward = 3 x forward (the 6N rule)."""
    return 3 * forward_flops_per_token(m)
