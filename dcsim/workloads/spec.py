"""Scenario schema of workloads: inference services and training jobs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from dcsim.engine.gang import Policy
from dcsim.schema_base import Spec
from dcsim.workloads.deployment import (
    POOL_KEYS,
    Deployment,
    DeploymentSpec,
    Disaggregated,
)
from dcsim.workloads.scaling import Autoscaler, ScalingSpec
from dcsim.workloads.traffic import PriorityClass, Sessions, SharedPrefix

# -- arrival processes -------------------------------------------------------



MAX_RATE_PER_S = 1e6


class PoissonArrivals(Spec):
    """Exponential inter-arrival times at a constant rate."""

    kind: Literal["poisson"] = "poisson"
    rate_per_s: float = Field(gt=0, le=MAX_RATE_PER_S, description="Mean arrivals per second "
                              "(at most 1e6: a million requests a second).")


class GammaArrivals(Spec):
    """Bursty arrivals: Gamma inter-arrival times with a coefficient of variation."""

    kind: Literal["gamma"] = "gamma"
    rate_per_s: float = Field(gt=0, le=MAX_RATE_PER_S, description="Mean arrivals per second "
                              "(at most 1e6: a million requests a second).")
    cv: float = Field(gt=0, le=100, description="Coefficient of variation of inter-arrival "
                      "times (1 = Poisson; at most 100).")


class DiurnalArrivals(Spec):
    """Non-homogeneous Poisson arrivals whose rate follows the hour of day."""

    kind: Literal["diurnal"] = "diurnal"
    hourly_rate_per_s: list[float] | None = Field(
        default=None, min_length=24, max_length=24,
        description="Rate for each hour 0..23 (req/s); or give mean/peak for a sinusoid.",
    )
    mean_rate_per_s: float | None = Field(default=None, gt=0, le=MAX_RATE_PER_S,
                                          description="Sinusoid mean, req/s.")
    amplitude: float = Field(default=0.5, ge=0, lt=1, description="Sinusoid amplitude / mean.")
    peak_hour: float = Field(default=14.0, ge=0, lt=24, description="Hour of the sinusoid's peak.")
    start_hour: float = Field(default=0.0, ge=0, lt=24, description="Hour of day at t = 0.")

    @model_validator(mode="after")
    def _one_shape(self) -> DiurnalArrivals:
        if (self.hourly_rate_per_s is None) == (self.mean_rate_per_s is None):
            raise ValueError("give exactly one of hourly_rate_per_s or mean_rate_per_s")
        if self.hourly_rate_per_s is not None and any(
                not 0 <= r <= MAX_RATE_PER_S for r in self.hourly_rate_per_s):
            raise ValueError(f"hourly_rate_per_s must be 0 to {MAX_RATE_PER_S:g} for every hour")
        return self


class StepArrivals(Spec):
    """Poisson arrivals whose rate is constant within each step of `step_s` (a forecast per
    period, as dcsim optimize's plan scenario gives each configuration its load)."""

    kind: Literal["steps"] = "steps"
    step_s: float = Field(gt=0, le=86400 * 366, description="Length of each step, s.")
    rates_per_s: list[float] = Field(min_length=1, max_length=100_000, description="Rate of "
                                     "each step, req/s (the last holds to the end of the run).")

    @field_validator("rates_per_s")
    @classmethod
    def _rates_in_range(cls, v: list[float]) -> list[float]:
        bad = [r for r in v if not 0 <= r <= MAX_RATE_PER_S]
        if bad:
            raise ValueError(f"rates_per_s must be 0 to {MAX_RATE_PER_S:g} req/s; got {bad[0]}")
        return v


class TraceArrivals(Spec):
    """Replay of an Azure-LLM-format trace (TIMESTAMP, ContextTokens, GeneratedTokens)."""

    kind: Literal["trace"] = "trace"
    path: str = Field(
        description="CSV path (relative to the scenario file), or builtin:azure-conv-2023 / "
        "builtin:azure-code-2023."
    )
    time_scale: float = Field(default=1.0, gt=0, le=1e6,
                              description="Multiply inter-arrival gaps by this.")
    rate_scale: float = Field(
        default=1.0, gt=0, le=1e4,
        description="Multiply the request rate: >1 replicates requests, <1 thins them "
        "(at most 10,000 times).",
    )
    use_token_lengths: bool = Field(
        default=True, description="Take prompt/output lengths from the trace rows."
    )


ArrivalSpec = Annotated[
    PoissonArrivals | GammaArrivals | DiurnalArrivals | StepArrivals | TraceArrivals,
    Field(discriminator="kind")
]
ARRIVALS = {"poisson": PoissonArrivals, "gamma": GammaArrivals, "diurnal": DiurnalArrivals,
            "steps": StepArrivals, "trace": TraceArrivals}

# -- token-length distributions ----------------------------------------------


class ConstantLength(Spec):
    """Every request has the same length."""

    kind: Literal["constant"] = "constant"
    tokens: int = Field(gt=0, description="Every request has this many tokens.")


class LognormalLength(Spec):
    """Lengths drawn from a lognormal distribution with the given mean, clipped."""

    kind: Literal["lognormal"] = "lognormal"
    mean_tokens: float = Field(gt=0, description="Mean length, tokens.")
    sigma: float = Field(gt=0, description="Sigma of the underlying normal.")
    max_tokens: int = Field(default=32768, gt=0, description="Lengths are clipped to this.")


class GeometricLength(Spec):
    """Memoryless lengths (geometric): with per-token decode time constant, service is ~exponential."""

    kind: Literal["geometric"] = "geometric"
    mean_tokens: float = Field(ge=1, description="Mean length, tokens.")
    max_tokens: int = Field(default=1_000_000, gt=0, description="Lengths are clipped to this.")


class EmpiricalLength(Spec):
    """Lengths resampled from a trace's token counts."""

    kind: Literal["empirical"] = "empirical"
    trace: str = Field(description="Azure-format CSV (or builtin:...) to resample lengths from.")


LengthSpec = Annotated[
    ConstantLength | LognormalLength | GeometricLength | EmpiricalLength, Field(discriminator="kind")
]
LENGTHS = {"constant": ConstantLength, "lognormal": LognormalLength, "geometric": GeometricLength,
           "empirical": EmpiricalLength}

# -- inference services ------------------------------------------------------


class Slo(Spec):
    """Latency objectives; a request meets the SLO when every given bound holds."""

    ttft_p99_s: float | None = Field(default=None, gt=0, description="Time to first token, s.")
    tpot_p99_s: float | None = Field(default=None, gt=0, description="Time per output token, s.")
    e2e_p99_s: float | None = Field(default=None, gt=0, description="End-to-end latency, s.")


class InferenceService(Spec):
    """An LLM service: model, arrivals, lengths, SLO, deployment and routing."""

    kind: Literal["inference"] = "inference"
    name: str = Field(min_length=1)
    model: str = Field(description="Model catalog id.")
    arrival: ArrivalSpec
    prompt_tokens: LengthSpec | None = Field(
        default=None, description="Prompt lengths (required unless the trace supplies them)."
    )
    output_tokens: LengthSpec | None = Field(
        default=None, description="Output lengths (required unless the trace supplies them)."
    )
    slo: Slo = Slo()
    shared_prefix: SharedPrefix | None = Field(
        default=None, description="A system prompt (or groups of them) before every "
        "prompt; with deployment.prefix_caching its KV blocks are reused.")
    sessions: Sessions | None = Field(
        default=None, description="Multi-turn chat: arrivals start sessions whose turns "
        "re-send their history; with deployment.prefix_caching the history's KV blocks "
        "are reused.")
    classes: list[PriorityClass] | None = Field(
        default=None, min_length=1, max_length=64, description="Priority classes of the "
        "requests (SLO classes): a trace's priority_class column names them, else each "
        "request draws one by share.")
    max_queue_s: float | None = Field(
        default=None, gt=0, le=86_400, description="A request not admitted this long after "
        "its arrival is dropped and counted as timed_out (a class may set its own).")
    deployment: DeploymentSpec = Field(description="One pool of replicas (gpu, tp, "
                                       "replicas, ...), or `prefill` and `decode` pools.")
    scaling: ScalingSpec | None = Field(
        default=None, description="Replicas that change over time (a schedule or an "
        "autoscaler) within deployment.replicas; default: all of them serve throughout.")
    routing: Literal["round_robin", "least_outstanding", "power_of_two", "central_queue",
                     "prefix_affinity"] = Field(
        default="least_outstanding",
        description="round_robin | least_outstanding | power_of_two: pick a replica on arrival; "
        "central_queue: one FIFO per service, replicas pull when they have room; "
        "prefix_affinity: a session's turns (else a shared prefix's requests) go to the "
        "replica that served it last (see affinity_slack_requests), others to the least "
        "loaded.",
    )
    affinity_slack_requests: int = Field(
        default=4, ge=0, le=1_000_000, description="prefix_affinity: a prefix stays on its "
        "replica while that replica has at most this many more requests outstanding than "
        "the least loaded one; beyond it the prefix moves to the least loaded.")

    @field_validator("classes")
    @classmethod
    def _classes_partition(cls, v: list[PriorityClass] | None) -> list[PriorityClass] | None:
        if v is not None:
            names = [c.name for c in v]
            if len(set(names)) != len(names):
                raise ValueError(f"class names {names}: each name once")
            total = sum(c.share for c in v)
            if abs(total - 1.0) > 1e-9:
                raise ValueError(f"class shares add up to {total:g}: they must add up to 1")
        return v

    @model_validator(mode="after")
    def _lengths_given(self) -> InferenceService:
        from_trace = isinstance(self.arrival, TraceArrivals) and self.arrival.use_token_lengths
        if not from_trace and (self.prompt_tokens is None or self.output_tokens is None):
            raise ValueError("prompt_tokens and output_tokens are required unless a trace "
                             "arrival with use_token_lengths supplies them")
        if self.sessions is not None and (self.prompt_tokens is None
                                          or self.output_tokens is None):
            raise ValueError("sessions need prompt_tokens and output_tokens (the new tokens "
                             "and the answer of each turn; a trace gives session starts only)")
        return self

    @model_validator(mode="before")
    @classmethod
    def _one_deployment_or_pools(cls, data: object) -> object:
        d = data.get("deployment") if isinstance(data, dict) else None
        if isinstance(d, dict) and POOL_KEYS & set(d) and set(d) - POOL_KEYS:
            raise ValueError(
                f"deployment gives both one deployment ({', '.join(sorted(set(d) - POOL_KEYS))})"
                f" and pools ({', '.join(sorted(POOL_KEYS & set(d)))}): give either gpu, tp, "
                "replicas, ... for one pool, or prefill and decode pools")
        return data

    @property
    def pools(self) -> list[tuple[str, Deployment]]:
        """(pool, deployment) of each pool: ("", the deployment) for one pool, else
        ("prefill", ...) and ("decode", ...)."""
        d = self.deployment
        if isinstance(d, Disaggregated):
            return [("prefill", d.prefill), ("decode", d.decode)]
        return [("", d)]

    def views(self) -> list[tuple[str, InferenceService]]:
        """(pool, the service with that pool as its one deployment) of each pool: what
        placement and the replicas' cost tables are built from."""
        if not isinstance(self.deployment, Disaggregated):
            return [("", self)]
        return [(pool, self.model_copy(update={"deployment": d})) for pool, d in self.pools]

    @property
    def disaggregated(self) -> bool:
        """Prefill and decode on separate pools."""
        return isinstance(self.deployment, Disaggregated)

    def colocated(self, where: str = "", hint: str = "") -> Deployment:
        """The one deployment of a colocated service; a clear error for pools (what
        `where`, e.g. "dcsim size", does not take; `hint`: what to do instead)."""
        d = self.deployment
        if isinstance(d, Disaggregated):
            from dcsim.errors import DcsimError, Problem
            raise DcsimError(Problem(f"workloads[{self.name}].deployment", "prefill/decode "
                                     "pools", f"one deployment: {where or 'this'} does not "
                                     "take disaggregated prefill and decode pools"
                                     + (f" ({hint})" if hint else "")))
        return d

    @model_validator(mode="after")
    def _scaling_within_slots(self) -> InferenceService:
        sc, d = self.scaling, self.deployment
        if sc is None:
            return self
        if isinstance(d, Disaggregated):
            raise ValueError("scaling: the replicas of disaggregated prefill and decode "
                             "pools are fixed (scaling them over time is not modelled)")
        if isinstance(sc, Autoscaler):
            for name in ("max_replicas", "initial_replicas", "min_replicas"):
                n = getattr(sc, name)
                if n is not None and n > d.replicas:
                    raise ValueError(f"scaling.{name} ({n}) is above deployment.replicas "
                                     f"({d.replicas}), the replica slots placed on servers")
            return self
        for k, step in enumerate(sc.steps):
            if step.replicas > d.replicas:
                raise ValueError(f"scaling.steps[{k}].replicas ({step.replicas}) is above "
                                 f"deployment.replicas ({d.replicas}), the replica slots "
                                 "placed on servers")
            if step.max_num_seqs is not None and step.max_num_seqs > d.max_num_seqs:
                raise ValueError(f"scaling.steps[{k}].max_num_seqs ({step.max_num_seqs}) is "
                                 f"above deployment.max_num_seqs ({d.max_num_seqs})")
        return self

# -- training jobs -----------------------------------------------------------


class Parallelism(Spec):
    """How a training job is split: tensor, pipeline and data parallel degrees."""

    tp: int = Field(default=1, ge=1, description="Tensor-parallel degree (within a server).")
    pp: int = Field(default=1, ge=1, description="Pipeline stages.")
    dp: int = Field(default=1, ge=1, description="Data-parallel replicas.")


class Checkpointing(Spec):
    """When a training job checkpoints and how many bytes per parameter it writes."""

    interval_s: float | Literal["young_daly"] = Field(
        default="young_daly", description="Seconds between checkpoints, or the Young/Daly optimum."
    )
    bytes_per_param: float = Field(
        default=14.0, gt=0, description="Checkpoint bytes per parameter (bf16 weights + fp32 Adam)."
    )

    @model_validator(mode="after")
    def _positive(self) -> Checkpointing:
        if isinstance(self.interval_s, float | int) and self.interval_s <= 0:
            raise ValueError("interval_s must be > 0 or 'young_daly'")
        return self


class Failures(Spec):
    """Hardware failures of a training job's GPUs (each failure stops the whole job)."""

    gpu_mtbf_hours: float | None = Field(
        default=None, gt=0, description="Mean time between failures of one GPU (with its "
        "server share), hours; none: no failures."
    )
    distribution: Literal["exponential", "weibull"] = "exponential"
    weibull_shape: float = Field(default=1.0, gt=0, description="Shape k (k < 1: infant mortality).")
    restart_s: float = Field(default=600.0, ge=0,
                             description="Time to restart the job, s (assumed default).")
    times_s: list[float] | None = Field(
        default=None, description="Replay these failure times instead of drawing them, s."
    )
    repair_s: float = Field(
        default=14400.0, ge=0, description="Time the failed server is out of service, s "
        "(assumed default: 4 h to swap and burn in a node). The job restarts on a spare or "
        "free server, or waits for the repair.")


class TrainingJob(Spec):
    """A training job: model, GPUs and parallelism, work, checkpoints, failures, priority,
    power limit, racks and deadline."""

    kind: Literal["training"] = "training"
    name: str = Field(min_length=1)
    model: str = Field(description="Model catalog id.")
    gpu: str = Field(description="GPU catalog id.")
    gpus: int = Field(ge=1, description="GPUs the job runs on (tp x pp x dp).")
    parallelism: Parallelism = Parallelism()
    total_tokens: float | None = Field(default=None, gt=0, le=1e17, description="Tokens to "
                                       "train on (at most 1e17, 1,000 times today's largest runs).")
    steps: int | None = Field(default=None, ge=1, le=10**12,
                              description="Optimizer steps (or total_tokens).")
    global_batch_tokens: int = Field(gt=0, description="Tokens per optimizer step.")
    seq_len: int = Field(default=4096, gt=0, description="Sequence length, tokens.")
    micro_batches: int = Field(default=8, ge=1, description="Micro-batches per step (pipeline).")
    start_s: float = Field(default=0.0, ge=0, description="Submission time, s.")
    priority: int = Field(default=0, description="Higher runs first under priority scheduling.")
    checkpoint: Checkpointing = Checkpointing()
    failures: Failures = Failures()
    dp_allreduce: Literal["ring", "tree"] = Field(
        default="ring", description="Algorithm of the data-parallel gradient all-reduce "
        "(alpha-beta cost: ring, or binomial tree).")
    dp_overlap: float = Field(
        default=0.0, ge=0, le=1,
        description="Share of the data-parallel gradient all-reduce hidden behind backward.",
    )
    achieved_tflops_per_gpu: float | None = Field(
        default=None, gt=0,
        description="Use this measured average throughput (6 N tokens / GPU-s) instead of the "
        "profile-derived step time, e.g. to replay a published run.",
    )
    power_cap_w: float | None = Field(default=None, gt=0, description="Power limit per GPU, W.")
    deadline_s: float | None = Field(
        default=None, gt=0, description="Finish by this time (s from the start); `dcsim "
        "optimize` picks the job's power limit and racks to meet it.")
    racks: list[str] | None = Field(
        default=None, min_length=1, description="Start the job only on servers of these "
        "fleet racks (an optimizer plan sets them); replacements after a failure may come "
        "from anywhere.")

    @model_validator(mode="after")
    def _consistent(self) -> TrainingJob:
        p = self.parallelism
        if p.tp * p.pp * p.dp != self.gpus:
            raise ValueError(f"parallelism tp x pp x dp = {p.tp * p.pp * p.dp} must equal gpus "
                             f"= {self.gpus}")
        if (self.total_tokens is None) == (self.steps is None):
            raise ValueError("give exactly one of total_tokens or steps")
        return self


class ClusterReplaySpec(Spec):
    """Replay a GPU cluster trace (Alibaba 2023 format) through a scheduler."""

    kind: Literal["cluster_replay"] = "cluster_replay"
    name: str = Field(min_length=1)
    trace: str = Field(default="builtin:alibaba-gpu-2023",
                       description="builtin:NAME, or 'nodes.csv,pods.csv' (relative paths).")
    policy: Policy = Field(
        default="easy_backfill", description="fifo: in submission order; priority: by QoS "
        "class, then submission; easy_backfill: FIFO, later pods may jump ahead if they do "
        "not delay the first blocked pod's reserved start (traced run times as estimates).")
    arrival_time_scale: float = Field(
        default=1.0, gt=0, le=1, description="Multiply submission times (< 1 compresses them "
        "and raises the load; run times stay as traced)."
    )
    node_fraction: float = Field(default=1.0, gt=0, le=1,
                                 description="Keep this share of the trace's nodes.")


WorkloadSpec = Annotated[InferenceService | TrainingJob | ClusterReplaySpec,
                         Field(discriminator="kind")]
WORKLOADS = {"inference": InferenceService, "training": TrainingJob,
             "cluster_replay": ClusterReplaySpec}
