"""Checkpoint size, write and read time, and the Young/Daly interval."""

from __future__ import annotations

import math

from dcsim.catalog import ModelSpec, shapes


def checkpoint_bytes(m: ModelSpec, bytes_per_param: float) -> float:
    """Weights plus optimizer state: parameters x bytes per parameter."""
    return shapes.total_params(m) * bytes_per_param


def transfer_s(nbytes: float, servers: int, aggregate_gbyte_s: float,
               per_client_gbyte_s: float) -> float:
    """Time to move nbytes to or from an otherwise idle parallel file system, s.

    The servers write (or read) their shards in parallel, each limited to the
    per-client bandwidth, all together to the file system's aggregate bandwidth (of
    writes or of reads): nbytes / (min(aggregate, servers x per-client) x 1e9).
    """
    return nbytes / (min(aggregate_gbyte_s, servers * per_client_gbyte_s) * 1e9)


def young_daly_s(checkpoint_s: float, mtbf_s: float) -> float:
    """Checkpoint interval minimising expected lost work: sqrt(2 x checkpoint time x MTBF)."""
    return math.sqrt(2 * checkpoint_s * mtbf_s)
