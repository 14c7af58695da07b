"""Timing one run on the measured device: warm-up, CUDA graphs, a minimum window.

A point's `latency_ms` is the mean wall time per run over a window of at least
`min_time_s` (runs issued back to back, one synchronisation per batch of runs),
and its `energy_j` is the device's energy counter over that same window divided by
the number of runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dcsim.errors import DcsimError, Problem
from dcsim.measure.meter import CpuMeter, NvmlMeter

log = logging.getLogger(__name__)
WARMUP_RUNS = 2


@dataclass
class Target:
    """The device runs go to, its number format and its meter."""

    device: torch.device
    dtype: torch.dtype
    meter: CpuMeter | NvmlMeter

    @property
    def cuda(self) -> bool:
        """The device is a CUDA GPU."""
        return self.device.type == "cuda"

    def sync(self) -> None:
        """Wait for the device's queued work (a no-op on the CPU)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)


def open_target(device: str) -> Target:
    """`cuda`, `cuda:N` or `cpu`; CUDA runs in bf16 with NVML, CPU in fp32 without energy."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DcsimError(Problem("--device", device, "cuda, cuda:N or cpu")) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DcsimError(Problem("--device", device, "a CUDA device PyTorch can see "
                                     "(none is visible; use --device cpu)"))
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        dev = torch.device("cuda", index)
        uuid = str(getattr(torch.cuda.get_device_properties(index), "uuid", "") or "")
        return Target(dev, torch.bfloat16, NvmlMeter(uuid or None, index))
    if dev.type != "cpu":
        raise DcsimError(Problem("--device", device, "cuda, cuda:N or cpu"))
    return Target(dev, torch.float32, CpuMeter())


def as_graph(fn: Callable[[], object], target: Target) -> tuple[Callable[[], object], str]:
    """Capture `fn` as a CUDA graph (static inputs) when the device allows; else run eagerly."""
    if not target.cuda:
        return fn, "eager"
    try:
        stream = torch.cuda.Stream(target.device)
        stream.wait_stream(torch.cuda.current_stream(target.device))
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_RUNS):
                fn()
        torch.cuda.current_stream(target.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph.replay, "graph"
    except RuntimeError as exc:  # some kernels cannot be captured: time them eagerly
        log.info("CUDA graph capture failed (%s); timing eagerly", exc)
        target.sync()
        return fn, "eager"


@dataclass(frozen=True)
class Timed:
    """One timed point: latency per iteration, energy and power from the meter, sampled
    power and clock, iterations."""

    latency_ms: float
    energy_j: float
    avg_power_w: float
    sampled_power_w: float
    sm_clock_mhz: float
    n_iters: int


def time_runs(run: Callable[[], object], target: Target, min_time_s: float) -> Timed:
    """Mean time and energy per run over a window of at least `min_time_s`."""
    for _ in range(WARMUP_RUNS):
        run()
    target.sync()
    t0 = time.perf_counter()
    run()
    target.sync()
    one = max(time.perf_counter() - t0, 1e-6)
    per_batch = max(1, int(min_time_s / 4 / one))  # ~4 synchronisations per window
    n = 0
    target.meter.start()
    start = time.perf_counter()
    while True:
        for _ in range(per_batch):
            run()
        target.sync()
        n += per_batch
        elapsed = time.perf_counter() - start
        if elapsed >= min_time_s:
            break
    window = target.meter.stop()
    latency_s = elapsed / n
    energy = window.energy_j / n
    power = energy / latency_s  # NaN when the device has no energy counter
    return Timed(latency_s * 1e3, energy, power, window.sampled_power_w, window.sm_clock_mhz, n)
