"""Schemas of catalog entries: GPUs, servers and model shapes.

The same frozen models validate the shipped CSV rows and the entries a
scenario adds or overrides, so both obey one definition.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, description="Catalog key used by scenarios.")
    source: str = Field(
        default="user: scenario file",
        description="Where the figures come from (published / measured / derived and citation).",
    )


class GpuSpec(_Entry):
    """An accelerator type."""

    nvml_name: str = Field(default="", description="Name the driver reports (matches profile tables).")
    vendor: str = "nvidia"
    memory_gb: float = Field(gt=0, description="Device memory, GB (1e9 bytes).")
    memory_bandwidth_tbps: float = Field(gt=0, description="Peak memory bandwidth, TB/s.")
    bf16_dense_tflops: float = Field(gt=0, description="Peak dense BF16 tensor throughput, TFLOP/s.")
    fp8_dense_tflops: float | None = Field(
        default=None, gt=0, description="Peak dense FP8 tensor throughput, TFLOP/s; empty: "
        "no FP8 tensor cores (FP8 weights refused).")
    fp4_dense_tflops: float | None = Field(
        default=None, gt=0, description="Peak dense FP4 tensor throughput, TFLOP/s; empty: "
        "no FP4 tensor cores (FP4 weights refused).")
    tdp_w: float = Field(gt=0, description="Board power at the default limit, W.")
    idle_power_w: float = Field(gt=0, description="Power when idle at the lowest clock, W.")
    power_limit_min_w: float = Field(gt=0, description="Lowest settable power limit, W.")
    power_limit_max_w: float = Field(gt=0, description="Highest settable power limit, W.")
    scaleup_bandwidth_gbyte_s: float = Field(
        gt=0, description="Per-GPU scale-up (NVLink / Infinity Fabric / PCIe) bandwidth, GB/s."
    )
    link_latency_us: float = Field(
        default=1.0, ge=0, description="Alpha (per ring step) of the scale-up link, us."
    )
    pcie_gbyte_s: float | None = Field(
        default=None, gt=0, description="Host link (PCIe) bandwidth of one GPU, one "
        "direction, GB/s: KV blocks moved to and from host memory use it; empty: unknown.")
    dvfs_floor_w: float | None = Field(
        default=None, gt=0,
        description="Power that does not scale with the SM clock under load, W (DVFS model); "
        "empty: derived from the calibrated GPUs.",
    )
    dvfs_knee: float | None = Field(
        default=None, gt=0, le=1,
        description="Clock fraction below which voltage stops falling (DVFS model).",
    )
    dvfs_min_clock: float | None = Field(
        default=None, gt=0, le=1, description="Lowest SM clock / highest SM clock."
    )

    @model_validator(mode="after")
    def _limits_ordered(self) -> GpuSpec:
        if self.dvfs_floor_w is not None and self.dvfs_floor_w >= self.tdp_w:
            raise ValueError(f"dvfs_floor_w ({self.dvfs_floor_w}) must be below tdp_w ({self.tdp_w})")
        if not self.idle_power_w < self.power_limit_min_w <= self.power_limit_max_w:
            raise ValueError(
                "expected idle_power_w < power_limit_min_w <= power_limit_max_w, got "
                f"{self.idle_power_w}, {self.power_limit_min_w}, {self.power_limit_max_w}"
            )
        return self


class ServerSpec(_Entry):
    """A server type: a host with identical GPUs."""

    gpu: str = Field(description="GPU catalog id.")
    gpus_per_server: int = Field(gt=0)
    max_power_w: float = Field(gt=0, description="Nameplate maximum power, W.")
    non_gpu_power_w: float = Field(ge=0, description="CPUs, memory, fans, NICs at full load, W.")
    non_gpu_idle_fraction: float = Field(
        default=0.5, ge=0, le=1,
        description="Host (non-GPU) power with idle GPUs as a share of its full-load power; the "
        "shipped 0.5 is an assumption, set a measured value.",
    )
    liquid_cooled_fraction: float = Field(
        default=0.0, ge=0, le=1, description="Share of the server's heat taken by cold "
        "plates to a warm-water loop (facility.cooling.medium: by_server); the rest goes to "
        "air.")
    nics: int = Field(ge=0, description="Scale-out NICs per server.")
    nic_gbps: float = Field(gt=0, description="Line rate of one NIC, Gb/s.")


class ModelSpec(_Entry):
    """A decoder shape: dense (Llama-style) or mixture-of-experts; GQA or multi-head latent
    attention (MLA); optionally some layers with sliding-window attention."""

    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0, description="Key/value heads (GQA); MLA: as heads.")
    head_dim: int = Field(gt=0, description="Query/key head size; MLA: the part without "
                          "rotary position embedding (qk_nope_head_dim).")
    ffn: int = Field(gt=0, description="MLP intermediate size (SwiGLU) of dense layers.")
    vocab: int = Field(gt=0)
    tied_embeddings: bool = False
    published_params: int | None = Field(default=None, gt=0)
    published_active_params: int | None = Field(
        default=None, gt=0, description="Parameters one token uses, as its publisher counts "
        "them (mixture-of-experts models).")
    experts: int = Field(default=0, ge=0, description="Routed experts per MoE layer; 0: dense.")
    experts_per_token: int = Field(default=0, ge=0, description="Routed experts each token "
                                   "uses (top-k).")
    shared_experts: int = Field(default=0, ge=0, description="Experts every token uses.")
    expert_ffn: int = Field(default=0, ge=0, description="Intermediate size of one expert "
                            "(SwiGLU); 0: ffn.")
    dense_layers: int = Field(default=0, ge=0, description="Layers of an MoE model with a "
                              "dense MLP of width ffn instead of experts.")
    attention: Literal["gqa", "mla"] = Field(default="gqa", description="gqa: grouped-query "
                                             "(MHA, MQA); mla: multi-head latent attention.")
    q_lora_rank: int = Field(default=0, ge=0, description="MLA: rank of the query "
                             "compression; 0: full-rank queries.")
    kv_lora_rank: int = Field(default=0, ge=0, description="MLA: latent size cached per "
                              "token and layer.")
    rope_head_dim: int = Field(default=0, ge=0, description="MLA: rotary part of each query "
                               "/ key head; its key is shared by the heads and cached.")
    v_head_dim: int = Field(default=0, ge=0, description="Value head size; 0: head_dim.")
    sliding_window: int = Field(default=0, ge=0, description="Tokens a windowed layer "
                                "attends to (sliding window or chunked attention); 0: none.")
    window_layers: int = Field(default=0, ge=0, description="Layers with windowed attention.")
    attention_bias: bool = Field(default=False, description="Q, K, V and O projections have "
                                 "biases.")
    expert_bias: bool = Field(default=False, description="Router and expert projections "
                              "have biases.")

    @model_validator(mode="after")
    def _consistent(self) -> ModelSpec:
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        for problem in (*self._moe_problems(), *self._attention_problems()):
            raise ValueError(problem)
        return self

    def _moe_problems(self) -> list[str]:
        if self.experts == 0:
            extra = {k: getattr(self, k) for k in ("experts_per_token", "shared_experts",
                                                   "dense_layers", "expert_ffn")}
            set_ = [f"{k} ({v})" for k, v in extra.items() if v]
            return [f"{', '.join(set_)} need experts > 0 (a mixture-of-experts model)"
                    ] if set_ else []
        out = []
        if not 1 <= self.experts_per_token <= self.experts:
            out.append(f"experts_per_token ({self.experts_per_token}) must be within 1.."
                       f"experts ({self.experts})")
        if self.dense_layers >= self.layers:
            out.append(f"dense_layers ({self.dense_layers}) must be below layers "
                       f"({self.layers}): an MoE model has at least one MoE layer")
        return out

    def _attention_problems(self) -> list[str]:
        out = []
        mla = ("q_lora_rank", "kv_lora_rank", "rope_head_dim")
        if self.attention == "mla" and self.kv_lora_rank == 0:
            out.append("attention: mla needs kv_lora_rank > 0 (the cached latent size)")
        if self.attention == "gqa" and any(getattr(self, k) for k in mla):
            out.append(f"{', '.join(mla)} are MLA fields: set attention: mla or leave them 0")
        if (self.sliding_window > 0) != (self.window_layers > 0):
            out.append(f"sliding_window ({self.sliding_window}) and window_layers "
                       f"({self.window_layers}) go together: both > 0 or both 0")
        if self.window_layers > self.layers:
            out.append(f"window_layers ({self.window_layers}) must be at most layers "
                       f"({self.layers})")
        return out
