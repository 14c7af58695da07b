"""Catalog entries for a profiled device, so scenarios can place replicas on it.

A GPU the catalog knows (matched by the driver's name) keeps its entry, with the
idle power measured here. Any other device gets an entry derived from its profile:
memory from the machine file, compute and memory ceilings from the measured `gemm`
and `copy` points, power figures from NVML. A CPU has no power readings: its power
fields are nominal (1 W limit, 1 mW idle) so the schema holds, and nothing that
depends on them is reported for it.
"""

from __future__ import annotations

import pandas as pd

from dcsim.catalog import Catalog
from dcsim.errors import DcsimError

NOMINAL = "nominal, not measured (a CPU has no power readings)"


def _ceiling(points: pd.DataFrame, phase: str) -> tuple[float, float]:
    row = points[points["phase"] == phase]
    if row.empty:
        raise DcsimError(f"the profile has no `{phase}` point: measure the device's ceilings "
                         "(dcsim profile always does)")
    r = row.iloc[0]
    return float(r["seq_len"]), float(r["latency_ms"]) / 1e3


def gpu_entry(machine: dict, points: pd.DataFrame, catalog: Catalog) -> dict:
    """The GPU catalog entry (as scenario data) of the profiled device."""
    name = machine["gpu"]
    idle = machine.get("idle_power_w")
    try:
        known = catalog.gpu(name).model_dump()
    except DcsimError:
        known = None
    if known is not None:
        if idle:
            known["idle_power_w"] = idle
            known["source"] += f"; idle power measured by dcsim profile ({machine.get('date')})"
        return known
    n, gemm_s = _ceiling(points, "gemm")
    nbytes, copy_s = _ceiling(points, "copy")
    bandwidth_tbps = nbytes / copy_s / 1e12
    entry = {
        "id": name, "nvml_name": name, "vendor": "measured",
        "memory_gb": float(machine["mem_gib"]) * 2**30 / 1e9,
        "memory_bandwidth_tbps": bandwidth_tbps,
        "bf16_dense_tflops": 2 * n**3 / gemm_s / 1e12,
        "scaleup_bandwidth_gbyte_s": bandwidth_tbps * 1e3,
    }
    if (points["phase"] == "gemm_fp8").any():
        n8, fp8_s = _ceiling(points, "gemm_fp8")
        entry["fp8_dense_tflops"] = 2 * n8**3 / fp8_s / 1e12
    if machine.get("device") == "cuda":
        entry |= {"tdp_w": machine["power_limit_default_w"], "idle_power_w": idle,
                  "power_limit_min_w": machine["power_limit_min_w"],
                  "power_limit_max_w": machine["power_limit_max_w"],
                  "source": "measured by dcsim profile: memory, power limits and idle power "
                  "(NVML), compute and memory ceilings (gemm, copy points); scale-up "
                  "bandwidth set to the memory ceiling (unused at tp=1)"}
    else:
        entry |= {"tdp_w": 1.0, "idle_power_w": 0.001, "power_limit_min_w": 1.0,
                  "power_limit_max_w": 1.0,
                  "source": "measured by dcsim profile: memory, compute and memory ceilings "
                  f"(gemm, copy points, {machine.get('dtype')}); power fields {NOMINAL}"}
    return entry


def device_entries(machine: dict, points: pd.DataFrame, catalog: Catalog
                   ) -> tuple[list[dict], list[dict], str]:
    """GPU and one-device server entries, and the GPU id replicas deploy on."""
    gpu = gpu_entry(machine, points, catalog)
    server = {"id": "profiled-host", "gpu": gpu["id"], "gpus_per_server": 1,
              "max_power_w": gpu["tdp_w"], "non_gpu_power_w": 0.0, "nics": 0, "nic_gbps": 1.0,
              "source": "derived: the profiled device alone as a server; host power is not "
              "modelled (non-GPU power 0), NIC figures unused by one server"}
    return [gpu], [server], gpu["id"]
