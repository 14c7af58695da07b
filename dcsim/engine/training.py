"""A training job as a SimPy process: work, checkpoints, failures, restarts.

Events scale with checkpoints and failures, not steps: the job advances whole
runs of steps up to its next checkpoint in one timeout. A failure stops the job,
loses the work since the last checkpoint, and costs the restart time plus reading
the checkpoint back. GPUs draw the step's power while computing, the DVFS floor
while writing a checkpoint, and idle power while the job restarts.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field

import numpy as np
import simpy

from dcsim.engine.metrics import TimeSeries
from dcsim.hardware.network import Fabric
from dcsim.training.step import StepModel


@dataclass
class JobRun:
    """What happened to one job (filled in as it runs)."""

    name: str
    gpus: int
    steps_total: int
    submit_s: float
    start_s: float = math.nan
    end_s: float = math.nan
    steps_done: int = 0  # committed: checkpointed, or the job finished
    steps_uncommitted: int = 0  # run since the last checkpoint (lost if it fails now)
    steps_lost: int = 0
    restarts: int = 0
    checkpoints: int = 0
    checkpoint_s: float = 0.0
    lost_s: float = 0.0  # compute thrown away plus restart downtime
    energy_j: float = 0.0
    failures: list[tuple[float, int, float]] = field(default_factory=list)  # time, steps, GPU-h


def failure_gaps(n_gpus: int, mtbf_h: float | None, shape: float, kind: str,
                 replay: list[float] | None, rng: np.random.Generator) -> Iterator[float]:
    """Running time between job failures: the first of n_gpus GPUs to fail.

    Replayed times are absolute; drawn gaps use the job's MTBF = GPU MTBF / n_gpus
    (exponential, or Weibull with that mean).
    """
    if replay is not None:
        prev = 0.0
        for t in sorted(replay):
            yield t - prev
            prev = t
        while True:
            yield math.inf
    if mtbf_h is None:
        while True:
            yield math.inf
    mean = mtbf_h * 3600 / n_gpus
    while True:
        if kind == "weibull":
            yield float(rng.weibull(shape)) * mean / math.gamma(1 + 1 / shape)
        else:
            yield float(rng.exponential(mean))


class JobProcess:
    """Runs one job; `finish` charges the segment in flight when the simulation ends."""

    def __init__(self, env: simpy.Environment, run: JobRun, step: StepModel, interval_s: float,
                 write_s: float, read_s: float, restart_s: float, idle_w: float,
                 gaps: Iterator[float], series: TimeSeries, row: int,
                 fabric: Fabric, job: int, leaves: dict[int, int], nic_byte_s: float) -> None:
        self.env, self.run, self.step, self.series, self.row = env, run, step, series, row
        self.base = step
        self.fabric, self.job, self.leaves, self.nic = fabric, job, leaves, nic_byte_s
        self.dp_seconds = 0.0  # time-weighted step, for the mean reported in jobs.parquet
        self.interval_s, self.write_s, self.read_s = interval_s, write_s, read_s
        self.restart_s, self.idle_w, self.gaps = restart_s, idle_w, gaps
        self.current: tuple[float, float, bool] | None = None  # start, power, busy
        env.process(self.main())

    def main(self) -> Generator[simpy.Event, None, None]:
        run, step, env = self.run, self.step, self.env
        if run.submit_s > env.now:
            yield env.timeout(run.submit_s - env.now)
        run.start_s = env.now
        self.fabric.start(self.job, self.leaves, self.nic)
        # an infinite interval (Young/Daly without failures) never checkpoints
        per_ckpt = (run.steps_total if math.isinf(self.interval_s)
                    else max(1, round(self.interval_s / step.step_s)))
        to_fail = next(self.gaps)
        while run.steps_done + run.steps_uncommitted < run.steps_total:
            # the fabric's share may have changed since the last slice
            self.step = step = self.base.with_bandwidth(self.fabric.per_gpu[self.job])
            step_w = step.energy_j / step.step_s  # the job's power while stepping
            # work runs in slices of at most one time bucket, so the power series is right
            max_slice = max(1, int(self.series.bucket_s // step.step_s))
            left = run.steps_total - run.steps_done - run.steps_uncommitted
            n = min(per_ckpt - run.steps_uncommitted, left, max_slice)
            work = n * step.step_s
            if to_fail < work:  # fails mid-work: all work since the checkpoint is lost
                yield from self._fail(to_fail, step_w)
                to_fail = next(self.gaps)
                continue
            yield from self._spend(work, step_w, True)
            to_fail -= work
            run.steps_uncommitted += n
            if run.steps_uncommitted < per_ckpt or n == left:
                continue
            if to_fail < self.write_s:  # fails while writing: the checkpoint never completes
                yield from self._fail(to_fail, step.wait_power_w * run.gpus)
                to_fail = next(self.gaps)
                continue
            yield from self._spend(self.write_s, step.wait_power_w * run.gpus, True)
            to_fail -= self.write_s
            run.checkpoint_s += self.write_s
            run.checkpoints += 1
            run.steps_done += run.steps_uncommitted
            run.steps_uncommitted = 0
        run.steps_done += run.steps_uncommitted
        run.steps_uncommitted = 0
        run.end_s = env.now
        self.current = None
        self.fabric.end(self.job)

    def _spend(self, seconds: float, power_w: float, busy: bool
               ) -> Generator[simpy.Event, None, None]:
        t0 = self.env.now
        self.current = (t0, power_w, busy)
        yield self.env.timeout(seconds)
        self.current = None
        self._charge(t0, self.env.now, power_w, busy)

    def _charge(self, t0: float, t1: float, power_w: float, busy: bool) -> None:
        self.run.energy_j += power_w * (t1 - t0)
        self.series.add(self.row, t0, t1, power_w * (t1 - t0), busy,
                        self.run.gpus if busy else 0.0, 0.0, 0.0)

    def _fail(self, seconds: float, power_w: float) -> Generator[simpy.Event, None, None]:
        """Run `seconds` more, fail, lose the uncommitted steps, restart from the checkpoint."""
        run = self.run
        yield from self._spend(seconds, power_w, True)
        lost = run.steps_uncommitted * self.step.step_s + seconds + self.restart_s + self.read_s
        run.failures.append((self.env.now, run.steps_uncommitted, lost * run.gpus / 3600))
        run.lost_s += lost
        run.steps_lost += run.steps_uncommitted
        run.steps_uncommitted = 0
        run.restarts += 1
        yield from self._spend(self.restart_s + self.read_s, self.idle_w * run.gpus, False)

    def finish(self, now: float) -> None:
        """Charge the part of the segment in flight at the end of the run."""
        if self.current is not None:
            t0, power_w, busy = self.current
            self._charge(t0, now, power_w, busy)
            self.current = None
