"""One measured point per phase: build the inputs, time the run, return a table row."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from dcsim.measure.timing import Target, Timed, as_graph, time_runs
from dcsim.measure.torch_model import Decoder, KVCache, training_loss

CPU_GEMM_N = 1024  # matrix size of the CPU compute ceiling (8192 on a GPU)
CPU_COPY_BYTES = 64 * 2**20  # bytes copied for the CPU memory ceiling (1 GiB on a GPU)


@dataclass(frozen=True)
class Point:
    """One measurement to take: phase, batch size and sequence length."""

    phase: str
    batch_size: int
    seq_len: int

    @property
    def tokens(self) -> int:
        """Tokens processed by one run (the unit of a throughput)."""
        if self.phase == "decode":
            return self.batch_size
        return self.seq_len if self.phase.startswith("gemm") else self.batch_size * self.seq_len


def fp8_gemm_supported(target: Target) -> bool:
    """FP8 tensor cores (compute capability 8.9 or above) and PyTorch's scaled matmul."""
    if not target.cuda or not hasattr(torch, "float8_e4m3fn") or not hasattr(torch, "_scaled_mm"):
        return False
    return torch.cuda.get_device_capability(target.device) >= (8, 9)


def ceiling_points(target: Target) -> list[Point]:
    """The compute (gemm, and gemm_fp8 where the GPU and PyTorch support FP8) and memory
    (copy) ceilings measured with every profile."""
    n = 8192 if target.cuda else CPU_GEMM_N
    size = 2**30 if target.cuda else CPU_COPY_BYTES
    fp8 = [Point("gemm_fp8", 1, n)] if fp8_gemm_supported(target) else []
    return [Point("gemm", 1, n), Point("copy", 1, size), *fp8]


def measure(point: Point, model: Decoder | None, target: Target, min_time_s: float,
            seed: int, graphs: bool = True) -> tuple[Timed, str]:
    """Time one point; returns the timing and the mode (`graph` or `eager`)."""
    gen = torch.Generator(device=target.device).manual_seed(seed)
    if point.phase == "train":
        assert model is not None
        return time_runs(_train_step(model, point, target, gen), target, min_time_s), "eager"
    with torch.inference_mode():
        if point.phase in ("gemm", "copy", "gemm_fp8"):
            run = _ceiling_run(point, target, gen)
        else:
            assert model is not None
            run = _inference_run(model, point, target, gen)
        run, mode = as_graph(run, target) if graphs else (run, "eager")
        return time_runs(run, target, min_time_s), mode


def _ceiling_run(point: Point, target: Target, gen: torch.Generator) -> Callable[[], object]:
    if point.phase == "gemm":
        n = point.seq_len
        a = torch.randn(n, n, device=target.device, dtype=target.dtype, generator=gen)
        b = torch.randn(n, n, device=target.device, dtype=target.dtype, generator=gen)
        return lambda: torch.mm(a, b)
    if point.phase == "gemm_fp8":  # W8A8 with unit scales, BF16 out (what FP8 serving runs)
        n = point.seq_len
        a = torch.randn(n, n, device=target.device, generator=gen).to(torch.float8_e4m3fn)
        b = torch.randn(n, n, device=target.device, generator=gen).to(torch.float8_e4m3fn)
        bt = b.t()  # the second operand column-major, as the kernel requires
        one = torch.ones((), device=target.device)
        return lambda: torch._scaled_mm(a, bt, scale_a=one, scale_b=one,
                                        out_dtype=torch.bfloat16)
    src = torch.empty(point.seq_len // 2, dtype=torch.uint8, device=target.device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)  # seq_len counts bytes read plus bytes written


def _inference_run(model: Decoder, point: Point, target: Target, gen: torch.Generator
                   ) -> Callable[[], object]:
    b, s = point.batch_size, point.seq_len
    slots = torch.arange(b, device=target.device)
    if point.phase == "prefill":
        cache = KVCache(model.m, model.n_layers, b, s, target.device, target.dtype)
        x = model.inputs(b, s, target.device, target.dtype, gen)
        lengths = torch.full((b,), s, device=target.device)
        return lambda: model.prefill(x, lengths, cache, slots)
    cache = KVCache(model.m, model.n_layers, b, s + 1, target.device, target.dtype)
    x = model.inputs(b, 1, target.device, target.dtype, gen)
    pos = torch.full((b,), s, device=target.device)  # s tokens cached, the next at s
    return lambda: model.decode(x, pos, cache, slots, s + 1)


def _train_step(model: Decoder, point: Point, target: Target, gen: torch.Generator
                ) -> Callable[[], object]:
    """One optimizer step of an fp32 model (master weights), bf16 autocast on a GPU and
    fused AdamW there."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=target.cuda)
    x = model.inputs(point.batch_size, point.seq_len, target.device, torch.float32, gen)

    def step() -> None:
        """One training step: forward, backward and the optimizer update."""
        with torch.autocast(target.device.type, dtype=torch.bfloat16, enabled=target.cuda):
            loss = training_loss(model, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def row(point: Point, timed: Timed, mode: str, gpu: str, model: str, cap_w: float | None,
        dtype: str, energy_method: str) -> dict[str, object]:
    """The profile-table row of a measured point (schema of dcsim.profiles.table)."""
    out = {"gpu": gpu, "model": model, "tp": 1, **asdict(point), "tokens": point.tokens,
           "power_cap_w": cap_w if cap_w is not None else math.nan}
    out.update(asdict(timed))
    out.update(mode=mode, dtype=dtype, energy_method=energy_method, source="measured")
    return out
