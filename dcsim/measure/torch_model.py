"""A Llama-shaped decoder in PyTorch with random weights, built to be timed.

The shapes come from a catalog ModelSpec (or a layer slice of one): RMSNorm, fused
QKV projection with grouped-query attention, rotary embeddings, scaled-dot-product
attention, SwiGLU MLP. Timing and energy do not depend on weight values, so weights
are random and nothing is downloaded. A slice (`layers` below the model's depth) has
no embedding or LM head: its rows are per-layer costs the profile store scales.

Sequences live in slots of a preallocated KV cache (`KVCache`): a prefill writes a
slot's first tokens, each decode step appends one token to every active slot.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dcsim.catalog.specs import ModelSpec

ROPE_BASE = 500_000.0  # Llama 3's rotary base


def _rope(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rotate query/key pairs by position: x is [B, H, T, D], pos is [B, T]."""
    half = x.shape[-1] // 2
    inv = ROPE_BASE ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    ang = pos.to(torch.float32)[:, None, :, None] * inv  # [B, 1, T, half]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class KVCache:
    """Keys and values of `slots` sequences up to `max_len` tokens, one pair per layer."""

    def __init__(self, m: ModelSpec, layers: int, slots: int, max_len: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        shape = (slots, m.kv_heads, max_len, m.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.max_len = max_len


class Layer(nn.Module):
    """One decoder layer: RMSNorm, fused QKV with grouped-query attention and RoPE, RMSNorm,
    SwiGLU MLP."""

    def __init__(self, m: ModelSpec) -> None:
        super().__init__()
        self.m = m
        self.n1, self.n2 = nn.RMSNorm(m.hidden), nn.RMSNorm(m.hidden)
        self.qkv = nn.Linear(m.hidden, (m.heads + 2 * m.kv_heads) * m.head_dim, bias=False)
        self.o = nn.Linear(m.heads * m.head_dim, m.hidden, bias=False)
        self.gate_up = nn.Linear(m.hidden, 2 * m.ffn, bias=False)
        self.down = nn.Linear(m.ffn, m.hidden, bias=False)

    def _split(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, ...]:
        m, (b, t, _) = self.m, x.shape
        q, k, v = self.qkv(self.n1(x)).split(
            [m.heads * m.head_dim, m.kv_heads * m.head_dim, m.kv_heads * m.head_dim], dim=-1)
        q = q.view(b, t, m.heads, m.head_dim).transpose(1, 2)
        k = k.view(b, t, m.kv_heads, m.head_dim).transpose(1, 2)
        v = v.view(b, t, m.kv_heads, m.head_dim).transpose(1, 2)
        return _rope(q, pos), _rope(k, pos), v

    def _finish(self, x: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
        b, _, t, _ = att.shape
        x = x + self.o(att.transpose(1, 2).reshape(b, t, -1))
        gate, up = self.gate_up(self.n2(x)).chunk(2, dim=-1)
        return x + self.down(F.silu(gate) * up)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Causal attention over the whole input (prefill without cache, training)."""
        q, k, v = self._split(x, pos)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self._finish(x, att)

    def prefill(self, x: torch.Tensor, pos: torch.Tensor, cache: KVCache, i: int,
                slots: torch.Tensor) -> torch.Tensor:
        """Causal attention over right-padded prompts; keys and values go to `slots`."""
        q, k, v = self._split(x, pos)
        t = x.shape[1]
        cache.k[i][slots, :, :t] = k
        cache.v[i][slots, :, :t] = v
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        return self._finish(x, att)

    def decode(self, x: torch.Tensor, pos: torch.Tensor, cache: KVCache, i: int,
               slots: torch.Tensor, span: int) -> torch.Tensor:
        """One new token per slot at position `pos`, attending to the first `span` cached."""
        q, k, v = self._split(x, pos[:, None])
        cache.k[i][slots, :, pos] = k[:, :, 0]
        cache.v[i][slots, :, pos] = v[:, :, 0]
        keys, vals = cache.k[i][slots, :, :span], cache.v[i][slots, :, :span]
        mask = torch.arange(span, device=x.device)[None, :] <= pos[:, None]  # [B, span]
        att = F.scaled_dot_product_attention(q, keys, vals, attn_mask=mask[:, None, None, :],
                                             enable_gqa=True)
        return self._finish(x, att)


class Decoder(nn.Module):
    """The layers of model `m`; embedding and head unless `m` is a layer slice (the
    catalog gives a slice no vocabulary)."""

    def __init__(self, m: ModelSpec) -> None:
        super().__init__()
        self.m, self.n_layers = m, m.layers
        self.full = m.vocab > 0
        self.layers = nn.ModuleList(Layer(m) for _ in range(self.n_layers))
        if self.full:
            self.embed = nn.Embedding(m.vocab, m.hidden)
            self.norm = nn.RMSNorm(m.hidden)
            self.head = nn.Linear(m.hidden, m.vocab, bias=False)

    def inputs(self, batch: int, seq: int, device: torch.device, dtype: torch.dtype,
               gen: torch.Generator) -> torch.Tensor:
        """Random token ids (full model) or hidden states (slice) of shape [batch, seq(, h)]."""
        if self.full:
            return torch.randint(0, self.m.vocab, (batch, seq), device=device, generator=gen)
        return torch.randn(batch, seq, self.m.hidden, device=device, dtype=dtype, generator=gen)

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x) if self.full else x

    def _out(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(h)) if self.full else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """All positions' outputs (logits or hidden states): the training forward."""
        h = self._in(x)
        pos = torch.arange(h.shape[1], device=h.device).expand(h.shape[0], -1)
        for layer in self.layers:
            h = layer(h, pos)
        return self._out(h)

    def prefill(self, x: torch.Tensor, lengths: torch.Tensor, cache: KVCache,
                slots: torch.Tensor) -> torch.Tensor:
        """Right-padded prompts; outputs at each prompt's last real position [B, ...]."""
        h = self._in(x)
        pos = torch.arange(h.shape[1], device=h.device).expand(h.shape[0], -1)
        for i, layer in enumerate(self.layers):
            h = layer.prefill(h, pos, cache, i, slots)
        last = h[torch.arange(h.shape[0], device=h.device), lengths - 1]
        return self._out(last[:, None])[:, 0]

    def decode(self, x: torch.Tensor, pos: torch.Tensor, cache: KVCache,
               slots: torch.Tensor, span: int) -> torch.Tensor:
        """One step: x is [B, 1] tokens (or [B, 1, h] states) at positions `pos` [B]."""
        h = self._in(x)
        for i, layer in enumerate(self.layers):
            h = layer.decode(h, pos, cache, i, slots, span)
        return self._out(h)[:, 0]


def build(m: ModelSpec, device: torch.device, dtype: torch.dtype) -> Decoder:
    """The model with random weights initialised on `device` itself (initialising billions
    of weights on the host first would take minutes), in `dtype`."""
    with torch.device(device):
        return Decoder(m).to(dtype)


def training_loss(model: Decoder, x: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy for a full model; a slice has no vocabulary, so the mean
    square of its output stands in (same backward graph through every layer)."""
    out = model(x)
    if model.full:
        return F.cross_entropy(out[:, :-1].flatten(0, 1).float(), x[:, 1:].flatten())
    return out.float().pow(2).mean()
