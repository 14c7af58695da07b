"""Energy, power and clocks of the measured device, read from NVML, never set.

Only NVML *query* functions are called here: the power limit and clocks are read
so the profile records what was in force, and are never changed. On a CPU run there
is no energy counter: `CpuMeter` reports energy as NaN and the profile marks it.
"""

from __future__ import annotations

import math
import os
import platform
import threading
import time
from dataclasses import dataclass
from typing import Any

SAMPLE_S = 0.02  # power and clock sampling period of the background thread


@dataclass(frozen=True)
class Window:
    """What one timed window drew: counter energy, mean sampled power and SM clock."""

    energy_j: float
    sampled_power_w: float
    sm_clock_mhz: float


class CpuMeter:
    """No energy counter: every window's energy is NaN, marked `energy_method=none`."""

    method = "none"

    def start(self) -> None:
        """Start a window (nothing to read on the CPU)."""
        pass

    def stop(self) -> Window:
        """End a window: no energy, power or clock known."""
        return Window(math.nan, math.nan, math.nan)

    def facts(self) -> dict[str, Any]:
        """What the machine is: processor, cores and memory."""
        return {"device": "cpu", "gpu": "cpu", "processor": platform.processor() or
                platform.machine(), "cpus": os.cpu_count(), "mem_gib": _host_mem_gib()}

    def idle(self, seconds: float) -> dict[str, float | None]:
        """Idle power and clock: not measurable on the CPU (None)."""
        return {"idle_power_w": None, "idle_sm_clock_mhz": None}  # not measurable here


class NvmlMeter:
    """NVML's total-energy counter over a window, with a 20 ms power and clock sampler."""

    method = "nvml_total_energy"

    def __init__(self, uuid: str | None, index: int) -> None:
        import pynvml

        self.nv = pynvml
        pynvml.nvmlInit()
        self.h = _handle(pynvml, uuid, index)
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._e0 = 0.0

    def _energy_j(self) -> float:
        return self.nv.nvmlDeviceGetTotalEnergyConsumption(self.h) / 1e3  # mJ -> J

    def _sample(self) -> tuple[float, float]:
        power = self.nv.nvmlDeviceGetPowerUsage(self.h) / 1e3  # mW -> W
        clock = self.nv.nvmlDeviceGetClockInfo(self.h, self.nv.NVML_CLOCK_SM)
        return power, float(clock)

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self._samples.append(self._sample())

    def start(self) -> None:
        """Start a window: read the energy counter and start the 20 ms sampler."""
        self._samples, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._e0 = self._energy_j()
        self._thread.start()

    def stop(self) -> Window:
        """End the window: energy from the counter, mean sampled power and SM clock."""
        energy = self._energy_j() - self._e0
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        samples = self._samples or [self._sample()]
        return Window(energy, sum(p for p, _ in samples) / len(samples),
                      sum(c for _, c in samples) / len(samples))

    def idle(self, seconds: float) -> dict[str, float]:
        """Power and SM clock of the device doing nothing, sampled for `seconds`."""
        self.start()
        time.sleep(seconds)
        w = self.stop()
        return {"idle_power_w": round(w.sampled_power_w, 2),
                "idle_sm_clock_mhz": round(w.sm_clock_mhz, 1)}

    def facts(self) -> dict[str, Any]:
        """The GPU, driver, power-limit range and default, and clocks, as NVML reads them."""
        nv, h = self.nv, self.h
        lo, hi = nv.nvmlDeviceGetPowerManagementLimitConstraints(h)
        name = nv.nvmlDeviceGetName(h)
        driver = nv.nvmlSystemGetDriverVersion()
        clocks = sorted({int(c) for mem in nv.nvmlDeviceGetSupportedMemoryClocks(h)[:1]
                         for c in nv.nvmlDeviceGetSupportedGraphicsClocks(h, mem)})
        return {
            "device": "cuda",
            "gpu": name.decode() if isinstance(name, bytes) else name,
            "driver": driver.decode() if isinstance(driver, bytes) else driver,
            "mem_gib": nv.nvmlDeviceGetMemoryInfo(h).total / 2**30,
            "power_limit_w": nv.nvmlDeviceGetPowerManagementLimit(h) / 1e3,
            "power_limit_default_w": nv.nvmlDeviceGetPowerManagementDefaultLimit(h) / 1e3,
            "power_limit_min_w": lo / 1e3,
            "power_limit_max_w": hi / 1e3,
            "max_sm_clock_mhz": nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM),
            "max_mem_clock_mhz": nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_MEM),
            "supported_sm_clocks_mhz": clocks,
        }


def _handle(nv: Any, uuid: str | None, index: int) -> Any:
    """The NVML handle of the GPU torch uses (by UUID: CUDA_VISIBLE_DEVICES renumbers)."""
    if uuid:
        want = uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"
        try:
            return nv.nvmlDeviceGetHandleByUUID(want)
        except nv.NVMLError:
            pass
    return nv.nvmlDeviceGetHandleByIndex(index)


def _host_mem_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return None
