"""Server power: GPUs plus host (CPUs, memory, fans, NICs) through the power supplies.

    host_w = non_gpu_power_w * (f_idle + (1 - f_idle) * u),  u = GPU power / GPU TDPs
    dc_w   = gpu_w + host_w
    wall_w = dc_w / psu_efficiency(dc_w / max_power_w)

The PSU curve is the 80 PLUS Titanium minimum for 230 V internal redundant
supplies (90 % at 10 % load, 94 % at 20 %, 96 % at 50 %, 91 % at 100 %), linear
between those points and flat outside them. Works on floats and numpy arrays.
"""

from __future__ import annotations

import numpy as np

from dcsim.catalog.specs import GpuSpec, ServerSpec

PSU_LOAD = np.array([0.10, 0.20, 0.50, 1.00])
PSU_EFFICIENCY = np.array([0.90, 0.94, 0.96, 0.91])


def psu_efficiency(load_fraction: np.ndarray | float) -> np.ndarray:
    """Efficiency of the supplies at a load fraction of their rating."""
    return np.interp(load_fraction, PSU_LOAD, PSU_EFFICIENCY)


def host_power_w(gpu_w: np.ndarray | float, srv: ServerSpec, gpu: GpuSpec) -> np.ndarray:
    """Non-GPU power, rising with GPU load from f_idle to the full-load figure, W."""
    u = np.clip(np.asarray(gpu_w) / (srv.gpus_per_server * gpu.tdp_w), 0.0, 1.0)
    f = srv.non_gpu_idle_fraction
    return srv.non_gpu_power_w * (f + (1 - f) * u)


def server_power_w(gpu_w: np.ndarray | float, srv: ServerSpec, gpu: GpuSpec
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wall power, host power and PSU loss of servers whose GPUs draw gpu_w in total, W."""
    dc = np.asarray(gpu_w) + host_power_w(gpu_w, srv, gpu)
    wall = dc / psu_efficiency(dc / srv.max_power_w)
    return wall, dc - np.asarray(gpu_w), wall - dc


def wall_w(gpu_w: float, srv: ServerSpec, gpu: GpuSpec) -> float:
    """server_power_w's wall power for one server in plain floats, W (the power-capping
    controller meters a server at every change of its draw; numpy's per-call cost
    would dominate there)."""
    u = min(max(gpu_w / (srv.gpus_per_server * gpu.tdp_w), 0.0), 1.0)
    f = srv.non_gpu_idle_fraction
    dc = gpu_w + srv.non_gpu_power_w * (f + (1 - f) * u)
    x = dc / srv.max_power_w
    load, eff = _PSU_LOAD, _PSU_EFFICIENCY
    if x <= load[0]:
        return dc / eff[0]
    for k in range(1, len(load)):
        if x <= load[k]:
            w = (x - load[k - 1]) / (load[k] - load[k - 1])
            return dc / (eff[k - 1] + w * (eff[k] - eff[k - 1]))
    return dc / eff[-1]


_PSU_LOAD = PSU_LOAD.tolist()
_PSU_EFFICIENCY = PSU_EFFICIENCY.tolist()
