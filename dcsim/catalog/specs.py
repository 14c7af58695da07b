"""Schemas of catalog entries: GPUs, servers and model shapes.

The same frozen models validate the shipped CSV rows and the entries a
scenario adds or overrides, so both obey one definition.
"""

from __future__ import annotations

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
    nics: int = Field(ge=0, description="Scale-out NICs per server.")
    nic_gbps: float = Field(gt=0, description="Line rate of one NIC, Gb/s.")


class ModelSpec(_Entry):
    """A Llama-style decoder shape."""

    layers: int = Field(gt=0)
    hidden: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    ffn: int = Field(gt=0, description="MLP intermediate size (SwiGLU).")
    vocab: int = Field(gt=0)
    tied_embeddings: bool = False
    published_params: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelSpec:
        if self.heads % self.kv_heads:
            raise ValueError(f"heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        return self
