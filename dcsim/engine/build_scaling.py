"""Build stage of a service's scaling: its slots, their servers, each schedule step's cost
tables under the step's limit (within the budgets), and the bytes a cold start reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dcsim.catalog import GpuSpec, ModelSpec
from dcsim.engine.costs import IterationCosts
from dcsim.engine.scaling import Step
from dcsim.profiles.work import layout_of, weight_bytes_per_gpu
from dcsim.workloads.scaling import WARMUP_S, Autoscaler, ScheduledScaling
from dcsim.workloads.spec import Deployment, InferenceService

if TYPE_CHECKING:
    from dcsim.engine.build import Placement
    from dcsim.scenario import Fleet


@dataclass(frozen=True)
class ScalingModel:
    """What the run needs to scale one service."""

    service: int
    spec: ScheduledScaling | Autoscaler
    slots: tuple[int, ...]  # global replica indices, in slot order
    servers: tuple[int, ...]  # per slot, its server's index
    steps: tuple[Step, ...]  # a schedule's steps (an autoscaler: none)
    initial: int  # replicas serving, warm, at the start
    weight_bytes: float  # read from the file system by one cold start


def scaling_model(svc: InferenceService, service: int, slots: range, pl: Placement,
                  costs_for: Callable[[float | None], IterationCosts], model: ModelSpec
                  ) -> ScalingModel:
    """The scaling of service `service`, whose replicas are `slots`."""
    from dcsim.engine.build import limit_after_budgets

    sc, d = svc.scaling, svc.deployment
    assert sc is not None
    servers = tuple(pl.where_index[r] for r in slots)
    steps: list[Step] = []
    if isinstance(sc, ScheduledScaling):
        for st in sc.steps:
            caps = tuple(limit_after_budgets(st.power_cap_w or d.power_cap_w, pl.where[r],
                                             float(pl.server_caps[pl.where_index[r]]))
                         for r in slots)
            steps.append(Step(st.at_s, st.replicas, tuple(costs_for(c) for c in caps), caps,
                              st.max_num_seqs or d.max_num_seqs))
        initial = sc.steps[0].replicas
    else:
        initial = sc.initial_replicas or sc.max_replicas or d.replicas
    return ScalingModel(service, sc, tuple(slots), servers, tuple(steps), initial,
                        replica_weight_bytes(d, pl.where[slots[0]].gpu, model))


def replica_weight_bytes(d: Deployment, gpu: GpuSpec, model: ModelSpec) -> float:
    """Bytes a cold start reads: each GPU's weights (work.weight_bytes_per_gpu) x its GPUs."""
    lay = layout_of(gpu, d.weights_dtype, d.kv_cache_dtype, d.ep)
    return weight_bytes_per_gpu(model, d.tp, lay) * d.gpus_per_replica


def cold_start_lead_s(fleet: Fleet, d: Deployment, gpu: GpuSpec, model: ModelSpec,
                      warmup_s: float = WARMUP_S) -> float:
    """Seconds from a replica's start to ready, as the run's cold start takes them: boot
    (if unused servers switch off) + weight bytes / per-client bandwidth + warm-up."""
    boot = fleet.server_boot_s if fleet.unused_servers == "switched_off" else 0.0
    return (boot + replica_weight_bytes(d, gpu, model)
            / (fleet.storage.per_client_gbyte_s * 1e9) + warmup_s)
