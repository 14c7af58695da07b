"""Checks that need the catalog: names exist, models fit, inventory suffices."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from dcsim.catalog import Catalog, GpuSpec, ModelSpec, load_catalog, shapes
from dcsim.errors import DcsimError, Problem
from dcsim.profiles.work import layout_of, weight_bytes_per_gpu
from dcsim.scenario import Scenario
from dcsim.workloads.cluster_trace import resolve as resolve_cluster_trace
from dcsim.workloads.spec import (
    ClusterReplaySpec,
    Deployment,
    EmpiricalLength,
    InferenceService,
    TraceArrivals,
    TrainingJob,
)
from dcsim.workloads.traces import load_trace, resolve_trace_path

T = TypeVar("T")


def scenario_catalog(s: Scenario) -> Catalog:
    """Built-in catalog with the scenario's additions and overrides."""
    o = s.catalog
    return load_catalog().with_overrides(tuple(o.gpus), tuple(o.servers), tuple(o.models))


def _lookup(problems: list[Problem], path: str, fn: Callable[[str], T], key: str) -> T | None:
    try:
        return fn(key)
    except DcsimError as exc:
        problems.append(Problem(path, key, exc.problems[0].expected))
        return None


def check_references(s: Scenario, base_dir: Path) -> list[Problem]:
    """Every problem of names, memory fit, power caps, inventory and files."""
    problems: list[Problem] = []
    cat = scenario_catalog(s)
    inventory: dict[str, int] = {}
    for i, rack in enumerate(s.fleet.racks):
        for j, grp in enumerate(rack.servers):
            srv = _lookup(problems, f"fleet.racks[{i}].servers[{j}].type", cat.server, grp.type)
            if srv and _lookup(problems, f"fleet.racks[{i}].servers[{j}].type", cat.gpu, srv.gpu):
                inventory[srv.gpu] = inventory.get(srv.gpu, 0) + (
                    rack.count * grp.count * srv.gpus_per_server)
    for i, w in enumerate(s.workloads):
        p = f"workloads[{i}]"
        if isinstance(w, ClusterReplaySpec):
            try:
                resolve_cluster_trace(w.trace, base_dir)
            except DcsimError as exc:
                problems.append(Problem(f"{p}.trace", w.trace, exc.problems[0].expected))
            continue
        model = _lookup(problems, f"{p}.model", cat.model, w.model)
        if isinstance(w, InferenceService):
            for pool, view in w.views():
                dp = f"{p}.deployment{'.' + pool if pool else ''}"
                d = view.colocated()
                gpu = _lookup(problems, f"{dp}.gpu", cat.gpu, d.gpu)
                if gpu and model:
                    problems += _inference_fit(view, gpu, model, dp, cat, base_dir)
                if gpu and model and pool == "decode":
                    problems += _decode_room(view, gpu, model, dp)
                problems += _cap_in_range(gpu, d.power_cap_w, f"{dp}.power_cap_w")
            problems += _trace_files(w, base_dir, p)
        else:
            gpu = _lookup(problems, f"{p}.gpu", cat.gpu, w.gpu)
            if gpu:
                problems += _training_fit(w, cat, p)
            problems += _cap_in_range(gpu, w.power_cap_w, f"{p}.power_cap_w")
        inference = isinstance(w, InferenceService)
        steps = (getattr(w.scaling, "steps", None) or []) if inference else []
        for k, step in enumerate(steps):
            problems += _cap_in_range(gpu, step.power_cap_w,
                                      f"{p}.scaling.steps[{k}].power_cap_w")
    problems += _inventory(s, inventory)
    problems += _catalog_physics(s, cat)
    if s.optimize is not None and s.optimize.candidates.gpus is not None:
        for i, g in enumerate(s.optimize.candidates.gpus):
            _lookup(problems, f"optimize.candidates.gpus[{i}]", cat.gpu, g)
    if not problems:  # the fleet can be built: its budgets and placement can be checked
        problems += _budgets_above_idle(s, cat)
    if not problems:
        problems += _placement(s, cat)
    problems += _profile_files(s, cat, base_dir)
    problems += _facility_files(s, base_dir)
    return problems


def _cap_in_range(gpu: GpuSpec | None, cap: float | None, where: str) -> list[Problem]:
    if gpu is None or cap is None or gpu.power_limit_min_w <= cap <= gpu.power_limit_max_w:
        return []
    return [Problem(where, cap, f"a power limit within {gpu.id}'s range "
                    f"{gpu.power_limit_min_w:g}-{gpu.power_limit_max_w:g} W")]


def _placement(s: Scenario, cat: Catalog) -> list[Problem]:
    """What the run's build stage refuses: no room for a deployment or a job, a budget that
    even every GPU at its lowest limit exceeds (so `validate` agrees with `run`)."""
    from dcsim.engine.build import placement, split_workloads

    try:
        services, jobs = split_workloads(s)
        placement(s, services, jobs, cat)
    except DcsimError as exc:
        return list(exc.problems)
    return []


def _catalog_physics(s: Scenario, cat: Catalog) -> list[Problem]:
    """The scenario's catalog entries are physical: a GPU's TDP within its power-limit
    range, a server's power rating at least its GPUs at their highest limit."""
    out = []
    for i, g in enumerate(s.catalog.gpus):
        if not g.power_limit_min_w <= g.tdp_w <= g.power_limit_max_w:
            out.append(Problem(f"catalog.gpus[{i}].tdp_w", g.tdp_w, "a TDP within the power "
                               f"limit range {g.power_limit_min_w:g}-{g.power_limit_max_w:g} W"))
    for i, x in enumerate(s.catalog.servers):
        gpu = _lookup(out, f"catalog.servers[{i}].gpu", cat.gpu, x.gpu)
        if gpu and x.max_power_w < x.gpus_per_server * gpu.power_limit_max_w:
            out.append(Problem(f"catalog.servers[{i}].max_power_w", x.max_power_w,
                               f"at least its {x.gpus_per_server} GPUs at their highest limit "
                               f"({x.gpus_per_server * gpu.power_limit_max_w:g} W)"))
    return out


def _budgets_above_idle(s: Scenario, cat: Catalog) -> list[Problem]:
    """Every budget holds its servers idle (switched-off fleets are checked by the run)."""
    from dcsim.engine.fleet import domains, fleet_servers
    from dcsim.hardware.placement import idle_w

    if s.fleet.unused_servers != "idle" or not s.fleet.racks:
        return []
    servers = fleet_servers(s, cat)
    out = []
    for d in domains(s, servers):
        floor = idle_w(servers, d.servers)
        if d.budget_w is None or floor <= d.budget_w:
            continue
        out.append(Problem(d.field or f"{d.kind} {d.name}", d.budget_w / 1e3,
                           f"at least {floor / 1e3:.2f} kW: a power budget holds the idle "
                           f"draw of {d.kind} {d.name}'s servers"))
    return out


def _facility_files(s: Scenario, base_dir: Path) -> list[Problem]:
    from dcsim.hardware.series import load_hourly
    from dcsim.scenario import WeatherFile

    f = s.facility
    files = [("facility.carbon_intensity_file", f.carbon_intensity_file, "g_per_kwh"),
             ("facility.electricity_price_file", f.electricity_price_file, "usd_per_kwh")]
    if f.cooling is not None and isinstance(f.cooling.weather, WeatherFile):
        files.append(("facility.cooling.weather.path", f.cooling.weather.path, "dry_bulb_c"))
    for i, r in enumerate(f.supply.renewables if f.supply is not None else []):
        files.append((f"facility.supply.renewables[{i}].capacity_factor_file",
                      r.capacity_factor_file, "capacity_factor"))
    out = []
    if f.supply is not None and f.supply.on_shortfall == "cap" and (
            s.fleet.power_capping.kind != "controller"):
        out.append(Problem("facility.supply.on_shortfall", "cap",
                           "fleet.power_capping kind 'controller' beside it (the controller "
                           "caps the GPUs at run time), or on_shortfall 'report'"))
    for where, name, column in files:
        if name is None:
            continue
        path = Path(name) if Path(name).is_absolute() else base_dir / name
        try:
            load_hourly(path, column)
        except DcsimError as exc:
            out += [Problem(f"{where} {e.path}".strip(), e.value, e.expected) for e in exc.problems]
    return out


def _inference_fit(w: InferenceService, gpu: GpuSpec, model: ModelSpec, dp: str,
                   cat: Catalog, base_dir: Path) -> list[Problem]:
    """What a deployment (`dp`: its path) of a colocated service, or of one pool, must
    satisfy on its GPU: TP and EP that hold the model, a budget for unchunked prompts, a
    host link for a host tier, something for a prefix cache to reuse."""
    d = w.colocated()
    out = _tp_fits(d.tp, model, cat, gpu.id, f"{dp}.tp")
    out += _ep_fits(d, model, cat, gpu.id, dp)
    try:
        lay = layout_of(gpu, d.weights_dtype, d.kv_cache_dtype, d.ep, dp)
    except DcsimError as exc:
        out += exc.problems
        lay = None
    need = 0.0 if lay is None else weight_bytes_per_gpu(model, d.tp, lay) / 1e9
    have = gpu.memory_gb * d.gpu_memory_utilization
    if need >= have:
        out.append(Problem(f"{dp}.tp", d.tp, f"a TP degree whose GPUs hold {model.id}: "
                           f"weights need {need:.1f} GB per GPU at tp={d.tp}, ep={d.ep} in "
                           f"{d.weights_dtype}, {gpu.id} offers {have:.1f} GB (memory x "
                           "gpu_memory_utilization)"))
    longest = _longest_prompt(w)
    if longest is not None and w.shared_prefix is not None:
        longest += w.shared_prefix.tokens  # the prefix comes before every prompt
    if not d.chunked_prefill and longest is not None and longest > d.max_batched_tokens:
        out.append(Problem(f"{dp}.max_batched_tokens", d.max_batched_tokens,
                           f"at least the longest prompt ({longest} tokens) when "
                           "chunked_prefill is off: a prompt must fit one iteration"))
    if d.host_kv_gb > 0 and gpu.pcie_gbyte_s is None:
        out.append(Problem(f"{dp}.host_kv_gb", d.host_kv_gb, f"0, or a GPU whose "
                           f"catalog entry gives pcie_gbyte_s ({gpu.id} has none)"))
    if d.prefix_caching and w.shared_prefix is None and w.sessions is None and not (
            _traced_sessions(w, base_dir)):
        out.append(Problem(f"{dp}.prefix_caching", True, "a service with "
                           "shared_prefix or sessions (requests that share no prefix have "
                           "nothing to reuse)"))
    return out


def _traced_sessions(w: InferenceService, base_dir: Path) -> bool:
    """The service replays a trace with a session_id column (errors: reported elsewhere)."""
    if not isinstance(w.arrival, TraceArrivals):
        return False
    try:
        return "session_id" in load_trace(resolve_trace_path(w.arrival.path, base_dir))
    except DcsimError:
        return False


def _decode_room(w: InferenceService, gpu: GpuSpec, model: ModelSpec, dp: str
                 ) -> list[Problem]:
    """A decode replica must hold one request's KV: the longest prompt and its next token
    (one token where the longest is not known up front)."""
    from dcsim.engine.build import kv_capacity_tokens

    longest = (_longest_prompt(w) or 1) + (w.shared_prefix.tokens if w.shared_prefix else 0)
    try:
        room = kv_capacity_tokens(w, gpu, model)
    except DcsimError:  # (a type the GPU cannot run: reported by _inference_fit)
        return []
    if room >= longest + 1:
        return []
    return [Problem(dp, f"{max(room, 0)} KV tokens a replica", f"decode replicas that hold "
                    f"one request's KV ({longest + 1} tokens: the longest prompt and its "
                    "next token): more GPUs (tp), memory (gpu_memory_utilization) or an "
                    "fp8 KV cache")]


def _longest_prompt(w: InferenceService) -> int | None:
    """The longest prompt the length distribution can give (None: not known up front)."""
    spec = w.prompt_tokens
    if spec is None or isinstance(spec, EmpiricalLength):
        return None
    return int(getattr(spec, "tokens", None) or getattr(spec, "max_tokens", 0)) or None


def _ep_fits(d: Deployment, model: ModelSpec, cat: Catalog, gpu: str, where: str
             ) -> list[Problem]:
    """Expert parallelism needs experts it divides evenly, and tp x ep GPUs in one
    NVLink domain (one server: a rack-scale system is one server of 72 GPUs)."""
    if d.ep == 1:
        return []
    if model.experts == 0:
        return [Problem(f"{where}.ep", d.ep, f"1: {model.id} is dense (no experts to spread)")]
    out = []
    if model.experts % d.ep:
        out.append(Problem(f"{where}.ep", d.ep, f"a divisor of {model.id}'s {model.experts} "
                           "routed experts (each GPU group holds the same number)"))
    per_server = [s.gpus_per_server for s in cat.servers.values() if s.gpu == gpu]
    if per_server and d.gpus_per_replica > max(per_server):
        out.append(Problem(f"{where}.ep", d.ep, f"tp x ep ({d.tp} x {d.ep} = "
                           f"{d.gpus_per_replica}) at most {max(per_server)}, the GPUs of one "
                           f"{gpu} NVLink domain (server)"))
    return out


def _tp_fits(tp: int, model: ModelSpec, cat: Catalog, gpu: str, where: str) -> list[Problem]:
    """TP splits attention heads evenly and stays inside one server's GPUs (NVLink)."""
    out = []
    if model.heads % tp or (model.kv_heads % tp and tp % model.kv_heads):
        out.append(Problem(where, tp, f"a TP degree that splits {model.id}'s {model.heads} "
                           f"attention heads and {model.kv_heads} KV heads evenly"))
    per_server = [s.gpus_per_server for s in cat.servers.values() if s.gpu == gpu]
    if per_server and tp > max(per_server):
        out.append(Problem(where, tp, f"at most {max(per_server)} (GPUs in one {gpu} server; "
                           "TP stays inside a server's NVLink domain)"))
    return out


TRAIN_BYTES_PER_PARAM = 16  # bf16 weights and gradients, fp32 master weights, Adam moments


def _training_fit(w: TrainingJob, cat: Catalog, p: str) -> list[Problem]:
    model = cat.model(w.model)
    par = w.parallelism
    out = _tp_fits(par.tp, model, cat, w.gpu, f"{p}.parallelism.tp")
    if par.pp > model.layers:
        out.append(Problem(f"{p}.parallelism.pp", par.pp, f"at most {model.layers} pipeline "
                           f"stages ({model.id} has {model.layers} layers)"))
    # even fully sharded over every GPU of the job (ZeRO-3 / FSDP), the training state
    # must fit: the most optimistic layout, so no real layout is refused
    need = shapes.total_params(model) * TRAIN_BYTES_PER_PARAM / w.gpus / 1e9
    have = cat.gpu(w.gpu).memory_gb
    if need > have:
        out.append(Problem(f"{p}.gpus", w.gpus, f"enough GPUs to hold {model.id}'s training "
                           f"state ({TRAIN_BYTES_PER_PARAM} B per parameter: {need:.0f} GB per "
                           f"GPU even fully sharded, {w.gpu} has {have:.0f} GB)"))
    return out


def _trace_files(w: InferenceService, base_dir: Path, p: str) -> list[Problem]:
    refs = []
    if isinstance(w.arrival, TraceArrivals):
        refs.append((f"{p}.arrival.path", w.arrival.path))
    for field in ("prompt_tokens", "output_tokens"):
        spec = getattr(w, field)
        if isinstance(spec, EmpiricalLength):
            refs.append((f"{p}.{field}.trace", spec.trace))
    out = []
    for where, ref in refs:
        try:
            path = resolve_trace_path(ref, base_dir)
        except DcsimError as exc:
            out.append(Problem(where, ref, exc.problems[0].expected))
            continue
        try:
            load_trace(path)  # what run would read: its rows and values too
        except DcsimError as exc:
            out += [Problem(f"{where} {e.path}".strip(), e.value, e.expected, e.file)
                    for e in exc.problems]
    return out


def _inventory(s: Scenario, inventory: dict[str, int]) -> list[Problem]:
    if not s.fleet.racks:
        return []
    need: dict[str, int] = {}
    out = []
    for i, w in enumerate(s.workloads):
        if isinstance(w, InferenceService):
            for _, d in w.pools:
                need[d.gpu] = need.get(d.gpu, 0) + d.replicas * d.gpus_per_replica
        elif w.gpus > inventory.get(w.gpu, 0):
            out.append(Problem(f"workloads[{i}].gpus", w.gpus,
                               f"at most the {inventory.get(w.gpu, 0)} {w.gpu} GPUs in the fleet"))
    for gpu, n in need.items():
        if n > inventory.get(gpu, 0):
            out.append(Problem("workloads", f"{n} {gpu} GPUs for inference replicas",
                               f"at most the {inventory.get(gpu, 0)} {gpu} GPUs in fleet.racks"))
    return out


def _profile_files(s: Scenario, cat: Catalog, base_dir: Path) -> list[Problem]:
    from dcsim.profiles.store import ProfileStore

    out = []
    for i, f in enumerate(s.profiles):
        path = Path(f) if Path(f).is_absolute() else base_dir / f
        try:
            ProfileStore.from_files(cat, [path], builtin=False)
        except DcsimError as exc:
            out += [Problem(f"profiles[{i}] {e.path}".strip(), e.value, e.expected)
                    for e in exc.problems]
    return out
