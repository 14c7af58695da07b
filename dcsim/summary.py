"""Typed records of a run's summary and their one serialised form (summary.json).

`summarize` (dcsim.results) builds a RunSummary; the CLI prints it, sweeps take their
metrics from it and the report reads it back with `RunSummary.from_dict`. Keys and
units are the field names; None is written as null.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, TypeVar

from dcsim.errors import DcsimError, Problem

R = TypeVar("R")


@dataclass(frozen=True)
class ServiceSummary:
    """One inference service after warm-up: counts, latency percentiles, SLO, energy."""

    requests_arrived: int
    requests_finished: int
    requests_unfinished: int
    requests_rejected: int
    requests_aborted: int
    requests_timed_out: int  # not admitted within max_queue_s
    throughput_req_s: float
    output_tokens_per_s: float
    ttft_p50_s: float | None
    ttft_p90_s: float | None
    ttft_p99_s: float | None
    tpot_p50_s: float | None
    tpot_p90_s: float | None
    tpot_p99_s: float | None
    e2e_p50_s: float | None
    e2e_p90_s: float | None
    e2e_p99_s: float | None
    slo_attainment: float | None  # dcsim.slo
    preemptions: int
    gpus: int
    gpu_hours: float
    energy_kwh: float  # GPU energy of its replicas, busy and idle
    facility_kwh_allocated: float
    carbon_kg: float
    cost_usd: float
    j_per_output_token: float | None
    profile_provenance: dict[str, dict[str, int]]
    # per phase: the measurements and scaling the answers rest on (older files: none)
    profile_basis: dict[str, str] = field(default_factory=dict)
    # GPU-hours its replicas were loading, serving or draining (gpu_hours: placed slots
    # over the run; they differ where a scaling starts and stops replicas; older: None)
    gpu_hours_in_use: float | None = None
    # disaggregated serving: per pool (prefill, decode) its replicas, GPUs, busy share,
    # GPU energy and mean power, and the KV moves (kv_transfer); None: colocated
    pools: dict[str, dict[str, float]] | None = None


def service_dict(v: ServiceSummary) -> dict[str, Any]:
    """A service as in summary.json (pools only where the service has them)."""
    d = asdict(v)
    if d["pools"] is None:
        del d["pools"]
    return d


@dataclass(frozen=True)
class JobSummary:
    """One training job: progress, goodput, failures, energy and its carbon and cost."""

    job: str
    gpus: int
    finished: bool
    runtime_s: float
    tokens_done: float
    goodput: float
    restarts: float
    lost_gpu_hours: float
    checkpoints: float
    energy_j: float
    tokens_per_s: float
    step_s: float
    carbon_kg: float
    cost_usd: float
    start_s: float | None = None  # when it started, s into the run (None: never)
    # when it ended, or (not finished) the end it is heading for at the goodput seen so
    # far (dcsim.results._job_times), s into the run
    end_s: float | None = None


@dataclass(frozen=True)
class ClusterSummary:
    """One replayed cluster trace: pods started, waiting, allocation, fragmentation."""

    workload: str
    pods: int
    pods_started: int
    wait_mean_s: float
    wait_p90_s: float
    gpu_allocation_mean: float
    gpu_allocation_peak: float
    fragmentation_mean_when_busy: float | None


@dataclass(frozen=True)
class Totals:
    """The whole run: requests, GPUs, GPU-hours, the energy split, carbon and cost."""

    requests_finished: int
    gpus: int
    gpus_serving: int
    gpus_training: int
    gpu_hours: float
    gpu_energy_kwh: float
    host_and_psu_energy_kwh: float
    network_energy_kwh: float
    it_energy_kwh: float
    cooling_kwh: float
    losses_kwh: float
    facility_kwh: float
    effective_pue: float | None
    carbon_kg: float
    cost_usd: float
    gpu_hours_in_use: float | None = None  # serving replicas' (older files: None)


@dataclass(frozen=True)
class DomainPeak:
    """One rack, row or facility: peak and p99 draw against its budget (the budget fields
    are None, and left out of summary.json, where the domain has no budget)."""

    domain: str
    name: str
    servers: int
    peak_w: float
    p99_w: float
    budget_w: float | None
    gpus: int
    idle_w: float
    throttled: bool
    gpu_limit_w: float
    headroom_w: float | None = None
    stranded_w: float | None = None
    worst_case_w: float | None = None
    extra_servers_at_p99: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """As in summary.json: the budget-only keys only where there is a budget."""
        d = asdict(self)
        if self.budget_w is None:
            for k in ("headroom_w", "stranded_w", "worst_case_w", "extra_servers_at_p99"):
                del d[k]
        return d


NOTES = {"energy_kwh": "per service: GPU energy of its replicas (busy + idle)",
         "it_energy_kwh": "servers at the wall: GPUs (idle ones too), host, PSU loss",
         "facility_kwh": "IT + cooling + losses (facility model)",
         "j_per_output_token": "GPU energy of finished requests per output token",
         "null": "no such value in this run: nothing to take it over (no finished request, "
                 "no budget, a domain without servers) or not a finite number"}


@dataclass(frozen=True)
class RunSummary:
    """summary.json: the run's scenario and window, per service, job, cluster replay and
    power domain, and in total."""

    scenario: str
    duration_s: float
    warmup_s: float
    seed: int
    services: dict[str, ServiceSummary]
    jobs: list[JobSummary]
    cluster_replays: list[ClusterSummary]
    total: Totals
    power_domains: list[DomainPeak]
    supply: dict[str, Any] | None = None  # facility.supply's dispatch (dcsim.supply.apply)
    power_trace: dict[str, Any] | None = None  # simulation.power_trace (dcsim.power_trace)
    # fleet.power_capping kind controller: per budgeted domain (dcsim.engine.capping)
    power_capping: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to summary.json."""
        return {"scenario": self.scenario, "duration_s": self.duration_s,
                "warmup_s": self.warmup_s, "seed": self.seed,
                "services": {k: service_dict(v) for k, v in self.services.items()},
                "jobs": [asdict(j) for j in self.jobs],
                "cluster_replays": [asdict(c) for c in self.cluster_replays],
                "total": asdict(self.total),
                "power_domains": [d.to_dict() for d in self.power_domains],
                **({"supply": self.supply} if self.supply is not None else {}),
                **({"power_trace": self.power_trace} if self.power_trace is not None else {}),
                **({"power_capping": self.power_capping}
                   if self.power_capping is not None else {}),
                "notes": dict(NOTES)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], origin: str = "summary.json") -> RunSummary:
        """Read a summary back; a missing key is a DcsimError naming it."""
        top = _need(d, ("scenario", "duration_s", "warmup_s", "seed", "services", "total",
                        "power_domains"), "", origin)
        for key, kind in (("scenario", "str"), ("duration_s", "float"), ("warmup_s", "float"),
                          ("seed", "int"), ("power_domains", "list"), ("jobs", "list"),
                          ("cluster_replays", "list")):
            value = top.get(key, [])
            ok = isinstance(value, list) if kind == "list" else _fits(value, kind)
            if not ok:
                raise DcsimError(Problem(key, value, f"a value of type {kind} (as dcsim "
                                         "writes it)", origin))
        return cls(str(top["scenario"]), float(top["duration_s"]), float(top["warmup_s"]),
                   int(top["seed"]),
                   {k: record(ServiceSummary, v, f"services.{k}", origin)
                    for k, v in _mapping(top["services"], "services", origin).items()},
                   [record(JobSummary, j, f"jobs[{i}]", origin)
                    for i, j in enumerate(d.get("jobs", []))],
                   [record(ClusterSummary, c, f"cluster_replays[{i}]", origin)
                    for i, c in enumerate(d.get("cluster_replays", []))],
                   record(Totals, top["total"], "total", origin),
                   [record(DomainPeak, p, f"power_domains[{i}]", origin)
                    for i, p in enumerate(top["power_domains"])],
                   d.get("supply") if isinstance(d.get("supply"), dict) else None,
                   d.get("power_trace") if isinstance(d.get("power_trace"), dict) else None,
                   d.get("power_capping") if isinstance(d.get("power_capping"), list) else None)


def record(cls: type[R], d: object, where: str, origin: str) -> R:
    """A summary record from its JSON object; missing required keys are errors."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    required = [f.name for f in fields(cls)  # type: ignore[arg-type]
                if f.default is MISSING and f.default_factory is MISSING]
    got = _need(_mapping(d, where, origin), required, where, origin)
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in got and not _fits(got[f.name], str(f.type)):
            raise DcsimError(Problem(f"{where}.{f.name}" if where else f.name, got[f.name],
                                     f"a value of type {f.type} (as dcsim writes it)", origin))
    return cls(**{k: got[k] for k in names if k in got})


def _fits(value: object, annotation: str) -> bool:
    """Does a JSON value fit a summary field's annotation (float, int | None, str, ...)?"""
    kinds = [a.strip() for a in annotation.split("|")]
    if value is None:
        return "None" in kinds
    number = isinstance(value, int | float) and not isinstance(value, bool)
    checks = {"float": number, "int": number and float(value).is_integer(),
              "str": isinstance(value, str), "bool": isinstance(value, bool)}
    return any(checks.get(k, isinstance(value, dict) if k.startswith("dict") else True)
               for k in kinds)


def _mapping(d: object, where: str, origin: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise DcsimError(Problem(where or "<root>", type(d).__name__, "a JSON object", origin))
    return d


def _need(d: object, keys: tuple[str, ...] | list[str], where: str, origin: str
          ) -> dict[str, Any]:
    m = _mapping(d, where, origin)
    missing = [k for k in keys if k not in m]
    if missing:
        path = f"{where}.{missing[0]}" if where else missing[0]
        raise DcsimError(Problem(path, None, "a key of a dcsim run summary (was the folder "
                                 "written by `dcsim run`?)", origin))
    return m


