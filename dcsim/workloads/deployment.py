"""Scenario schema of a service's deployment: one pool of replicas serving prefill and
decode together, or a prefill pool and a decode pool with the KV cache moved between
them (disaggregated serving)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from dcsim.schema_base import Spec


class Deployment(Spec):
    """How a service is deployed: replicas of tp x ep GPUs of one type."""

    gpu: str = Field(description="GPU catalog id.")
    tp: int = Field(default=1, ge=1, le=72, description="Tensor-parallel degree (GPUs/replica "
                    "with ep 1).")
    ep: int = Field(default=1, ge=1, le=72, description="Expert-parallel degree (MoE models): "
                    "the replica is ep attention groups of tp GPUs, each serving 1/ep of the "
                    "batch (data-parallel attention), with the routed experts spread over all "
                    "tp x ep GPUs, dispatch and combine all-to-all in each MoE layer. "
                    "tp x ep GPUs must share one NVLink domain (a server).")
    weights_dtype: Literal["bf16", "fp8", "fp4"] = Field(
        default="bf16", description="Weight type: bytes per parameter (2, 1, 0.5625 with "
        "NVFP4's block scales) and the matmul rate (the GPU's datasheet peak for the type; "
        "fp8 and fp4 need tensor cores for them). Answers off the BF16 measurements are "
        "derived.")
    replicas: int = Field(ge=1, le=1_000_000, description="Number of model replicas.")
    max_num_seqs: int = Field(default=256, ge=1, le=65536, description="Most sequences in one "
                              "batch (at most 65,536: cost tables hold a row per batch size).")
    max_batched_tokens: int = Field(
        default=8192, ge=1, description="Token budget of one iteration (prefill + decode)."
    )
    chunked_prefill: bool = Field(default=True, description="Split long prompts over iterations.")
    scheduler: Literal["mixed", "prefill_first"] = Field(
        default="mixed", description="Iteration policy. mixed: every iteration decodes each "
        "running sequence and fills the rest of the token budget with prefill (vLLM v1, "
        "TensorRT-LLM in-flight batching). prefill_first: when a waiting prompt can be "
        "admitted the iteration is prefill only and running sequences wait; they decode in "
        "iterations with no prefill (SGLang's default, TGI, vLLM v0).")
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0, le=1, description="Share of GPU memory for weights + KV cache."
    )
    kv_block_tokens: int = Field(
        default=16, ge=1, le=1024, description="Tokens per KV-cache block, a power of two "
        "(vLLM's default block is 16, SGLang's page 1): a sequence holds whole blocks, its "
        "last one partly empty.")
    prefix_caching: bool = Field(
        default=False, description="Keep the KV blocks of shared prompt prefixes for reuse "
        "(vLLM's automatic prefix caching, SGLang's radix cache): a request whose prefix is "
        "cached prefills only the rest; unused blocks are evicted least recently used first.")
    kv_cache_dtype: Literal["bf16", "fp8"] = Field(
        default="bf16", description="KV-cache element type: fp8 halves the bytes a token "
        "holds, so twice the tokens fit and decode reads half the cache bytes (derived from "
        "the BF16 measurements).")
    host_kv_gb: float = Field(
        default=0.0, ge=0, le=100_000, description="Host memory of the replica's server "
        "for KV blocks, GB (1e9 bytes): the prefix cache's evicted blocks wait there and "
        "come back over PCIe (the GPU's pcie_gbyte_s x the replica's tp x ep GPUs) instead "
        "of being recomputed; "
        "0: no host tier.")
    preemption: Literal["recompute", "swap"] = Field(
        default="recompute", description="What preemption does with a decoding sequence's "
        "KV: recompute (drop it and prefill again later, vLLM's default) or swap (copy it "
        "to host memory and back over PCIe; needs host_kv_gb).")
    max_waiting_requests: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Most requests waiting for admission "
        "at one replica (central_queue: this many per replica in the shared queue); an "
        "arrival finding the queue full is rejected. Default: no limit.")
    power_cap_w: float | None = Field(default=None, gt=0, description="Power limit per GPU, W.")
    servers: list[str] | None = Field(
        default=None, description="Server of each replica by name (rack/type-k, as in "
        "power.parquet), e.g. from an optimizer plan; default: first fit in fleet order.")

    @property
    def gpus_per_replica(self) -> int:
        """GPUs one replica runs on: tp x ep."""
        return self.tp * self.ep

    @model_validator(mode="after")
    def _budget_holds_a_batch(self) -> Deployment:
        if self.servers is not None and len(self.servers) != self.replicas:
            raise ValueError(f"servers names {len(self.servers)} servers for {self.replicas} "
                             "replicas: give one per replica")
        if self.preemption == "swap" and self.host_kv_gb <= 0:
            raise ValueError("preemption: swap needs host memory: set host_kv_gb above 0")
        if self.kv_block_tokens & (self.kv_block_tokens - 1):
            raise ValueError(f"kv_block_tokens ({self.kv_block_tokens}) must be a power of "
                             "two (1, 2, 4, ..., 1024)")
        if self.max_batched_tokens < self.max_num_seqs:
            raise ValueError(f"max_batched_tokens ({self.max_batched_tokens}) must be at least "
                             f"max_num_seqs ({self.max_num_seqs}): each decoding sequence needs "
                             "one token of the iteration budget")
        return self


class Disaggregated(Spec):
    """Prefill and decode on separate pools of replicas (Splitwise, DistServe, NVIDIA
    Dynamo, llm-d): a request is prefilled on a prefill replica, its KV cache moved to a
    decode replica over NVLink (same server) or the servers' NICs and the leaf-spine
    fabric, and decoded there. Each pool has its own GPU type, parallelism, batch limits,
    scheduler and power limit."""

    prefill: Deployment = Field(description="The pool that prefills prompts; a request's "
                                "first token comes at the end of its prefill.")
    decode: Deployment = Field(description="The pool that decodes: a replica admits a "
                               "request when a batch slot and KV blocks for its whole "
                               "prompt are free, then receives its KV cache.")
    decode_routing: Literal["round_robin", "least_outstanding", "power_of_two",
                            "central_queue"] = Field(
        default="least_outstanding", description="How prefilled requests pick a decode "
        "replica (the service's routing picks the prefill replica); central_queue: one "
        "FIFO the decode replicas admit from.")

    @model_validator(mode="after")
    def _pools_agree(self) -> Disaggregated:
        if self.prefill.kv_cache_dtype != self.decode.kv_cache_dtype:
            raise ValueError(f"prefill.kv_cache_dtype ({self.prefill.kv_cache_dtype}) and "
                             f"decode.kv_cache_dtype ({self.decode.kv_cache_dtype}) differ: "
                             "the KV cache moves between the pools as it is, give one type")
        if self.decode.prefix_caching:
            raise ValueError("decode.prefix_caching: the decode pool receives every "
                             "prompt's KV from the prefill pool and computes no prefix; "
                             "set prefix_caching on the prefill pool")
        return self


POOL_KEYS = frozenset(Disaggregated.model_fields)


def _deployment_kind(v: object) -> str:
    """The tag of a deployment given as a mapping or a model: pools or one deployment."""
    if isinstance(v, dict):
        return "disaggregated" if POOL_KEYS & set(v) else "deployment"
    return "disaggregated" if isinstance(v, Disaggregated) else "deployment"


# the tags are the classes' names in lower case (dcsim.validation finds the arm by them)
DeploymentSpec = Annotated[
    Annotated[Deployment, Tag("deployment")] | Annotated[Disaggregated, Tag("disaggregated")],
    Discriminator(_deployment_kind)]
DEPLOYMENTS = {"deployment": Deployment, "disaggregated": Disaggregated}
