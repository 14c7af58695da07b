"""Alpha-beta cost of collectives: all-reduce (ring, and binomial tree: reduce then
broadcast) and all-to-all (expert-parallel dispatch and combine).

Works on floats and on numpy arrays alike.
"""

from __future__ import annotations

import math


def ring_allreduce_s(nbytes: float, ranks: int, bandwidth_byte_s: float, alpha_s: float) -> float:
    """Ring all-reduce time, s.

    T = 2 (p - 1) alpha + 2 (p - 1) / p * n / beta, with p ranks, n bytes per rank
    and beta the per-rank link bandwidth in bytes/s (reduce-scatter then all-gather).
    One rank needs no communication.
    """
    if ranks <= 1:
        return 0.0 * nbytes
    p = ranks
    return 2 * (p - 1) * alpha_s + 2 * (p - 1) / p * nbytes / bandwidth_byte_s


def tree_allreduce_s(nbytes: float, ranks: int, bandwidth_byte_s: float, alpha_s: float
                     ) -> float:
    """Binomial-tree all-reduce time, s: a reduce to the root, then a broadcast.

    T = 2 ceil(log2 p) (alpha + n / beta). Fewer latency terms than the ring (log p
    instead of p), but every step moves the whole message: better for small messages
    or many ranks, worse for large gradients.
    """
    if ranks <= 1:
        return 0.0 * nbytes
    steps = 2 * math.ceil(math.log2(ranks))
    return steps * (alpha_s + nbytes / bandwidth_byte_s)


def alltoall_s(nbytes: float, ranks: int, bandwidth_byte_s: float, alpha_s: float) -> float:
    """All-to-all time, s, of p ranks each holding n bytes destined evenly to all ranks.

    T = (p - 1) alpha + (p - 1) / p * n / beta: a rank keeps 1/p of its data and sends
    the rest over its own link (beta bytes/s, one direction), one message per peer
    (pairwise exchange, the links of a switched NVLink domain all busy at once).
    """
    if ranks <= 1:
        return 0.0 * nbytes
    p = ranks
    return (p - 1) * alpha_s + (p - 1) / p * nbytes / bandwidth_byte_s


def allreduce_s(algorithm: str, nbytes: float, ranks: int, bandwidth_byte_s: float,
                alpha_s: float) -> float:
    """All-reduce time by algorithm name: "ring" or "tree"."""
    f = {"ring": ring_allreduce_s, "tree": tree_allreduce_s}[algorithm]
    return f(nbytes, ranks, bandwidth_byte_s, alpha_s)
