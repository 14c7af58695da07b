"""Scenario schema of deployments that change over time: schedules and autoscalers.

`deployment.replicas` is the number of replica slots placed on servers (the most that
can run); a service's `scaling` says how many of them serve when. Replicas that start
cold-start (server boot if it was off, weight loading from the shared file system,
engine warm-up); replicas that stop drain (no new requests, the admitted ones finish).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from dcsim.schema_base import Spec

# An assumption, stated as such: vLLM's start-up after the weights are in GPU memory
# (profiling the KV room, CUDA-graph capture for its batch sizes) takes seconds to
# tens of seconds on H100/H200-class GPUs; set yours from your engine's logs.
WARMUP_S = 20.0


class ScheduleStep(Spec):
    """From `at_s` on: this many replicas serve, under this power limit and batch limit."""

    at_s: float = Field(ge=0, description="Time the step takes effect, s from the start.")
    replicas: int = Field(ge=0, le=1_000_000, description="Replicas serving from at_s (at "
                          "most deployment.replicas, the slots placed on servers; 0: none, "
                          "arrivals wait at the router until one is ready).")
    power_cap_w: float | None = Field(default=None, gt=0, description="GPU power limit of the "
                                      "service's replicas from at_s, W (default: "
                                      "deployment.power_cap_w).")
    max_num_seqs: int | None = Field(default=None, ge=1, le=65536, description="Batch limit "
                                     "from at_s (at most deployment.max_num_seqs; default it).")


class ScheduledScaling(Spec):
    """Replicas, power limits and batch limits by time of day, as an operator's plan
    (or dcsim optimize's plan) sets them."""

    kind: Literal["schedule"] = "schedule"
    steps: list[ScheduleStep] = Field(min_length=1, max_length=100_000, description="In time "
                                      "order; the first at 0 s (the replicas serving, warm, "
                                      "at the start).")
    warmup_s: float = Field(default=WARMUP_S, ge=0, le=3600, description="Engine warm-up of "
                            "a replica after its weights are loaded (KV profiling, CUDA-graph "
                            "capture), s; an assumption unless set from your logs.")

    @model_validator(mode="after")
    def _in_order(self) -> ScheduledScaling:
        if self.steps[0].at_s != 0:
            raise ValueError(f"steps[0].at_s is {self.steps[0].at_s:g}: the first step must "
                             "be at 0 s (the replicas serving at the start)")
        for k in range(1, len(self.steps)):
            if self.steps[k].at_s <= self.steps[k - 1].at_s:
                raise ValueError(f"steps[{k}].at_s ({self.steps[k].at_s:g}) must be after "
                                 f"steps[{k - 1}].at_s ({self.steps[k - 1].at_s:g}): steps "
                                 "in time order, one per time")
        return self


class Autoscaler(Spec):
    """A reactive autoscaler on an engine metric, in the manner of Kubernetes' HPA (or
    KEDA) scaling vLLM pods on its Prometheus gauges: every `interval_s` it reads the
    metric over the ready replicas, wants ceil(ready x metric / target) replicas
    (nothing changes within `tolerance` of the target), scales up at most once per
    `scale_up_cooldown_s`, and scales down only to the highest count it wanted over
    the last `scale_down_window_s` (HPA's down-scale stabilization window)."""

    kind: Literal["autoscaler"] = "autoscaler"
    metric: Literal["outstanding_per_replica", "waiting_per_replica", "kv_use"] = Field(
        default="outstanding_per_replica", description="outstanding_per_replica: requests "
        "running + waiting per ready replica (vLLM's num_requests_running + "
        "num_requests_waiting); waiting_per_replica: waiting only; kv_use: KV-cache use, "
        "0-1 (vLLM's gpu_cache_usage_perc).")
    target: float = Field(gt=0, le=1e6, description="Target value of the metric per replica.")
    interval_s: float = Field(default=15.0, gt=0, le=3600, description="Evaluation period, s "
                              "(HPA's sync period is 15 s).")
    tolerance: float = Field(default=0.1, ge=0, lt=1, description="No change while the metric "
                             "is within this share of the target (HPA's default 0.1).")
    scale_up_cooldown_s: float = Field(default=60.0, ge=0, le=86400, description="Least time "
                                       "between two scale-ups, s.")
    scale_down_window_s: float = Field(default=300.0, ge=0, le=86400, description="Scale down "
                                       "to the most replicas wanted over this window, s "
                                       "(HPA's default 300 s).")
    min_replicas: int = Field(default=1, ge=1, le=1_000_000, description="Fewest replicas.")
    max_replicas: int | None = Field(default=None, ge=1, le=1_000_000, description="Most "
                                     "replicas (default: deployment.replicas, the slots "
                                     "placed).")
    initial_replicas: int | None = Field(default=None, ge=1, le=1_000_000, description="Warm "
                                         "replicas at the start (default: max_replicas).")
    warmup_s: float = Field(default=WARMUP_S, ge=0, le=3600, description="Engine warm-up "
                            "after the weights are loaded, s (see the schedule's).")

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaler:
        if self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas "
                             f"({self.max_replicas})")
        if self.initial_replicas is not None and (
                self.initial_replicas < self.min_replicas
                or (self.max_replicas is not None and self.initial_replicas > self.max_replicas)):
            raise ValueError(f"initial_replicas ({self.initial_replicas}) must lie within "
                             "min_replicas..max_replicas")
        return self


ScalingSpec = Annotated[ScheduledScaling | Autoscaler, Field(discriminator="kind")]
SCALING_KINDS: dict[str, type[Spec]] = {"schedule": ScheduledScaling, "autoscaler": Autoscaler}
