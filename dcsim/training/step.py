"""Time and energy of one optimizer step of a parallel training job.

With tensor parallelism t, pipeline stages p, data parallelism d and m micro-batches:

- a stage runs L / p layers of the model on t GPUs; one micro-batch of
  B / (d m) tokens through a stage takes the store's `train` time of that layer
  slice (forward, backward, optimizer; tensor-parallel collectives included when
  t > 1) - embedding and head on the end stages are left out;
- compute = m x micro-batch time; the 1F1B pipeline bubble adds (p - 1) micro-batch
  times, a share (p - 1) / m of compute;
- gradients (2 bytes per parameter of a GPU's shard) are all-reduced across the d
  replicas over the scale-out network (ring, alpha-beta) at the bandwidth the fabric
  grants (dcsim.hardware.network), of which `dp_overlap` is hidden behind backward.

GPUs waiting in the bubble or on the network draw their DVFS floor power (the
clock-independent power calibrated on the Zeus sweeps; dcsim.hardware.dvfs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from dcsim.catalog import Catalog, shapes
from dcsim.errors import DcsimError, Problem
from dcsim.hardware.collectives import allreduce_s
from dcsim.hardware.dvfs import dvfs_of
from dcsim.profiles.store import ProfileStore
from dcsim.workloads.spec import TrainingJob


@dataclass(frozen=True)
class StepModel:
    """One optimizer step of a job (times in s, energy in J for all of the job's GPUs)."""

    micro_batch_s: float
    compute_s: float
    bubble_s: float
    dp_allreduce_s: float
    exposed_dp_s: float
    step_s: float
    busy_power_w: float  # per GPU while computing
    wait_power_w: float  # per GPU in the bubble or waiting on the network
    energy_j: float
    tokens: int
    provenance: str
    gpus: int = 0
    dp_ranks: int = 1
    grad_bytes: float = 0.0  # gradient bytes per GPU all-reduced each step
    alpha_s: float = 0.0
    dp_overlap: float = 0.0
    fixed: bool = False  # a published throughput: the network does not enter
    power_cap_w: float | None = None  # the GPU limit it ran under (None: default limit)
    algorithm: str = "ring"  # of the data-parallel all-reduce

    @property
    def tokens_per_s(self) -> float:
        """Training throughput of the job, tokens per second."""
        return self.tokens / self.step_s

    def with_bandwidth(self, byte_s: float) -> StepModel:
        """The same step with the data-parallel all-reduce at `byte_s` per GPU."""
        if self.fixed:
            return self
        dp = allreduce_s(self.algorithm, self.grad_bytes, self.dp_ranks, byte_s, self.alpha_s)
        exposed = (1 - self.dp_overlap) * dp
        step = self.compute_s + self.bubble_s + exposed
        energy = self.gpus * (self.busy_power_w * self.compute_s
                              + self.wait_power_w * (self.bubble_s + exposed))
        return replace(self, dp_allreduce_s=dp, exposed_dp_s=exposed, step_s=step,
                       energy_j=energy)


def nic_bytes_s_per_gpu(job: TrainingJob, cat: Catalog) -> float:
    """Scale-out bandwidth of one GPU: its server's NICs shared by the server's GPUs."""
    servers = [s for s in cat.servers.values() if s.gpu == job.gpu]
    if not servers:
        raise DcsimError(Problem("gpu", job.gpu, "a GPU with a catalog server (its NICs carry "
                                 "the data-parallel traffic)"))
    srv = max(servers, key=lambda s: s.gpus_per_server)
    return srv.nics * srv.nic_gbps / srv.gpus_per_server * 1e9 / 8


def step_model(job: TrainingJob, cat: Catalog, store: ProfileStore, link_latency_s: float
               ) -> StepModel:
    """The step alone on the network (line rate, `link_latency_s` per message: the
    all-reduce's alpha); Fabric shares decide the rest."""
    p = job.parallelism
    m = cat.model(job.model)
    seqs = job.global_batch_tokens / (p.dp * job.micro_batches * job.seq_len)
    if seqs < 1:
        raise DcsimError(Problem("global_batch_tokens", job.global_batch_tokens,
                                 f"at least dp x micro_batches x seq_len = "
                                 f"{p.dp * job.micro_batches * job.seq_len} tokens"))
    stage = f"{m.id}/{math.ceil(m.layers / p.pp)}L"
    cost = store.resolve(job.gpu, stage, "train", p.tp, job.power_cap_w)
    out = cost.evaluate(np.array([seqs]), np.array([float(job.seq_len)]))
    micro = float(out.latency_s[0])
    busy_w = float(out.power_w[0]) / p.tp
    compute = job.micro_batches * micro
    bubble = (p.pp - 1) * micro
    shard = shapes.total_params(m) / (p.tp * p.pp)
    g = dvfs_of(cat.gpu(job.gpu))
    dp = allreduce_s(job.dp_allreduce, 2 * shard, p.dp, nic_bytes_s_per_gpu(job, cat),
                     link_latency_s)
    exposed = (1 - job.dp_overlap) * dp
    step = compute + bubble + exposed
    if job.achieved_tflops_per_gpu is not None:  # a published throughput replaces the model
        step = 6 * shapes.total_params(m) * job.global_batch_tokens / (
            job.gpus * job.achieved_tflops_per_gpu * 1e12)
        compute, bubble, exposed = step, 0.0, 0.0
    energy = job.gpus * (busy_w * compute + g.floor_w * (bubble + exposed))
    return StepModel(micro, compute, bubble, dp, exposed, step, busy_w, g.floor_w, energy,
                     job.global_batch_tokens, str(out.provenance[0]), gpus=job.gpus,
                     dp_ranks=p.dp, grad_bytes=2 * shard, alpha_s=link_latency_s,
                     dp_overlap=job.dp_overlap, fixed=job.achieved_tflops_per_gpu is not None,
                     power_cap_w=job.power_cap_w, algorithm=job.dp_allreduce)
