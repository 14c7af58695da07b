"""A training job as a SimPy process: queueing, work, checkpoints, failures, restarts.

Events scale with checkpoints and failures, not steps: the job advances whole
runs of steps up to its next checkpoint in one timeout. The job first queues for
servers (dcsim.engine.scheduler). Checkpoints and restores are transfers on the
shared file system, so jobs checkpointing at once slow each other down. A failure
stops the job, loses the work since the last checkpoint, takes the failed server
away for repair, and costs the wait for a replacement, the restart time and reading
the checkpoint back. GPUs draw the step's power while computing, the DVFS floor
while writing a checkpoint, and idle power while the job is down.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field

import numpy as np
import simpy

from dcsim.engine.metrics import TimeSeries
from dcsim.engine.scheduler import Ask, JobScheduler
from dcsim.hardware.network import Fabric
from dcsim.hardware.storage import SharedStorage
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
    lost_s: float = 0.0  # compute thrown away plus downtime (replacement, restart, restore)
    replacement_wait_s: float = 0.0
    servers: int = 0
    leaves: int = 0  # leaves its first placement spans
    energy_j: float = 0.0
    failures: list[list[float]] = field(default_factory=list)  # time, steps lost, GPU-h lost
    checkpoint_times: list[tuple[float, float]] = field(default_factory=list)  # start, end


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


@dataclass
class Shared:
    """What every job of a run shares."""

    env: simpy.Environment
    scheduler: JobScheduler
    storage: SharedStorage
    fabric: Fabric
    leaf: list[int]
    series: TimeSeries


@dataclass
class JobPlan:
    """One job's fixed inputs."""

    index: int  # the job's number in the scenario, also its fabric and scheduler key
    row: int  # its row in the jobs' time series
    gpu: str
    priority: int
    estimate_s: float  # run time without failures, for backfill
    step_for: Callable[[list[int]], tuple[StepModel, float]]  # servers -> step, NIC B/s/GPU
    interval_s: float
    checkpoint_bytes: float
    restart_s: float
    repair_s: float
    idle_w: float  # per GPU
    gaps: Iterator[float]
    rng: np.random.Generator  # which server fails
    racks: frozenset[str] | None = None  # the racks the job may run in (None: any)


class JobProcess:
    """Runs one job; `finish` charges the segment in flight when the simulation ends."""

    def __init__(self, sh: Shared, run: JobRun, plan: JobPlan) -> None:
        self.sh, self.env, self.run, self.plan = sh, sh.env, run, plan
        self.servers: list[int] = []
        self.base: StepModel | None = None  # step time at full fabric bandwidth, this placement
        self.step: StepModel | None = None  # as last shared by the fabric
        self.nic = 0.0
        self._bw, self._stepped_base = 0.0, None  # what self.step was derived from
        self.current: tuple[float, float, bool, int] | None = None  # start, power, busy, GPUs
        self.down_since: float | None = None  # failed and not yet restored
        self.env.process(self.main())

    def main(self) -> Generator[simpy.Event, None, None]:
        """The job's life: wait for its submission time and servers, then work, checkpoint
        and fail until every step is done."""
        run, plan, env = self.run, self.plan, self.env
        if run.submit_s > env.now:
            yield env.timeout(run.submit_s - env.now)
        ask = Ask(plan.index, plan.gpu, run.gpus, plan.priority, run.submit_s, plan.estimate_s,
                  env.event(), plan.racks)
        self.servers = list((yield self.sh.scheduler.request(ask)))
        run.start_s = env.now
        run.servers = len(self.servers)
        run.leaves = len({self.sh.leaf[i] for i in self.servers})
        self._join()
        assert self.base is not None
        # an infinite interval (Young/Daly without failures) never checkpoints
        per_ckpt = (run.steps_total if math.isinf(plan.interval_s)
                    else max(1, round(plan.interval_s / self.base.step_s)))
        to_fail = next(plan.gaps)
        while run.steps_done + run.steps_uncommitted < run.steps_total:
            to_fail = yield from self._work(per_ckpt, to_fail)
        run.steps_done += run.steps_uncommitted
        run.steps_uncommitted = 0
        run.end_s = env.now
        self.current = None
        self.sh.fabric.end(plan.index)
        self.sh.scheduler.release(plan.index)

    def _join(self) -> None:
        """Step model for the servers held now; join the fabric with their leaves."""
        self.base, self.nic = self.plan.step_for(self.servers)
        leaves: dict[int, int] = {}
        for i in self.servers:
            g = self.sh.scheduler.held[self.plan.index][i]
            leaves[self.sh.leaf[i]] = leaves.get(self.sh.leaf[i], 0) + g
        self.sh.fabric.start(self.plan.index, leaves, self.nic)

    def _work(self, per_ckpt: int, to_fail: float) -> Generator[simpy.Event, None, float]:
        """One slice of steps, and the checkpoint if it is due; returns time to next failure."""
        run, sh = self.run, self.sh
        assert self.base is not None
        # the fabric's share may have changed since the last slice
        bw = sh.fabric.per_gpu[self.plan.index]
        if self.step is None or bw != self._bw or self._stepped_base is not self.base:
            self.step = self.base.with_bandwidth(bw)
            self._bw, self._stepped_base = bw, self.base
        step = self.step
        step_w = step.energy_j / step.step_s  # the job's power while stepping
        # work runs in slices of at most one time bucket, so the power series is right
        max_slice = max(1, int(sh.series.bucket_s // step.step_s))
        left = run.steps_total - run.steps_done - run.steps_uncommitted
        n = min(per_ckpt - run.steps_uncommitted, left, max_slice)
        work = n * step.step_s
        if to_fail < work:  # fails mid-work: all work since the checkpoint is lost
            yield from self._fail(to_fail, step_w)
            return next(self.plan.gaps)
        yield from self._spend(work, step_w, True)
        run.steps_uncommitted += n
        to_fail -= work
        if run.steps_uncommitted < per_ckpt or n == left:
            return to_fail
        key, done = sh.storage.transfer(self.plan.checkpoint_bytes, len(self.servers), True)
        t0 = self.env.now
        wrote = yield from self._hold(done, to_fail, step.wait_power_w * run.gpus, True)
        if not wrote:  # fails while writing: the checkpoint never completes
            sh.storage.drop(key)
            yield from self._fail(0.0, 0.0, wasted_s=self.env.now - t0)
            return next(self.plan.gaps)
        took = self.env.now - t0
        run.checkpoint_times.append((t0, self.env.now))
        run.checkpoint_s += took
        run.checkpoints += 1
        run.steps_done += run.steps_uncommitted
        run.steps_uncommitted = 0
        return to_fail - took

    def _spend(self, seconds: float, power_w: float, busy: bool
               ) -> Generator[simpy.Event, None, None]:
        yield from self._hold(self.env.timeout(seconds), np.inf, power_w, busy)

    def _hold(self, event: simpy.Event, limit_s: float, power_w: float, busy: bool
              ) -> Generator[simpy.Event, None, bool]:
        """Wait for `event` at power_w, at most limit_s; True if the event came first."""
        t0 = self.env.now
        gpus = sum(self.sh.scheduler.held.get(self.plan.index, {}).values())
        self.current = (t0, power_w, busy, gpus)
        if math.isinf(limit_s):
            yield event
            came = True
        else:
            got = yield event | self.env.timeout(limit_s)
            came = event in got
        self.current = None
        self._charge(t0, self.env.now, power_w, busy, gpus)
        return came

    def _charge(self, t0: float, t1: float, power_w: float, busy: bool, gpus: int) -> None:
        # GPUs held and active time, for attributing the job's energy to the servers it
        # held (dcsim.engine.jobs)
        self.run.energy_j += power_w * (t1 - t0)
        self.sh.series.add(self.plan.row, t0, t1, power_w * (t1 - t0), busy, gpus, 1.0)

    def _fail(self, seconds: float, power_w: float, wasted_s: float = 0.0
              ) -> Generator[simpy.Event, None, None]:
        """Run `seconds` more, fail, lose the uncommitted steps, get a replacement, restart."""
        run, plan, sh = self.run, self.plan, self.sh
        assert self.step is not None
        if seconds > 0:
            yield from self._spend(seconds, power_w, True)
        t_fail = self.env.now
        lost_work = run.steps_uncommitted * self.step.step_s + seconds + wasted_s
        run.failures.append([t_fail, run.steps_uncommitted, lost_work * run.gpus / 3600])
        run.lost_s += lost_work
        run.steps_lost += run.steps_uncommitted
        run.steps_uncommitted = 0
        run.restarts += 1
        self.down_since = t_fail
        sh.fabric.end(plan.index)
        bad = self.servers[int(plan.rng.integers(len(self.servers)))]
        self.servers.remove(bad)
        got = sh.scheduler.fail(plan.index, bad, plan.repair_s)
        held = sum(sh.scheduler.held[plan.index].values())
        yield from self._hold(got, np.inf, plan.idle_w * held, False)
        run.replacement_wait_s += self.env.now - t_fail
        self.servers.append(got.value)
        yield from self._spend(plan.restart_s, plan.idle_w * run.gpus, False)
        _, done = sh.storage.transfer(plan.checkpoint_bytes, len(self.servers), False)
        yield from self._hold(done, np.inf, plan.idle_w * run.gpus, False)
        self._count_downtime(self.env.now)
        self._join()

    def _count_downtime(self, now: float) -> None:
        """Add the time down since the last failure to its lost GPU-hours."""
        if self.down_since is None:
            return
        down = now - self.down_since
        self.run.lost_s += down
        self.run.failures[-1][2] += down * self.run.gpus / 3600
        self.down_since = None

    def finish(self, now: float) -> None:
        """Charge the part of the segment in flight at the end of the run."""
        self._count_downtime(now)
        if self.current is not None:
            t0, power_w, busy, gpus = self.current
            self._charge(t0, now, power_w, busy, gpus)
            self.current = None
