"""Alpha-beta cost of collectives (ring algorithms).

Works on floats and on numpy arrays alike.
"""

from __future__ import annotations


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
