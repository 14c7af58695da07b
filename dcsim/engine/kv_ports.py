"""Build stage of disaggregated serving: the network ports a KV transfer runs over, and
the bytes one token's KV cache holds.

Each replica of a prefill pool sends over its GPUs' ports, each replica of a decode
pool receives over its own: the NVLink ports when both replicas are on one server (an
NVLink domain; the datasheet's NVLink figure counts both directions, one direction is
half), else the NICs of its GPUs (the server's NICs shared out per GPU) and, between
leaves, both leaves' uplinks. These ports are links of the fabric
(dcsim.hardware.network.Fabric) beside the leaf uplinks, shared max-min by the
transfers and training jobs on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcsim.catalog import Catalog, ServerSpec, shapes
from dcsim.errors import DcsimError, Problem
from dcsim.hardware.placement import Server
from dcsim.profiles.work import layout_of
from dcsim.workloads.spec import InferenceService


@dataclass(frozen=True)
class KvPorts:
    """Fabric links of the disaggregated pools' replicas, and where each replica is."""

    links: tuple[tuple[str, float], ...]  # (name, bytes/s), numbered after the uplinks
    nvlink: dict[int, int]  # replica -> its NVLink port's link
    nic: dict[int, int]  # replica -> its NIC port's link
    server: dict[int, int]  # replica -> its server
    leaf: tuple[int, ...]  # per server, its leaf (= its leaf uplink's link)
    bytes_per_token: dict[int, float]  # per disaggregated service (index), KV bytes

    def path(self, src: int, dst: int) -> list[int]:
        """Links a transfer from replica `src` to replica `dst` crosses."""
        a, b = self.server[src], self.server[dst]
        if a == b:
            return [self.nvlink[src], self.nvlink[dst]]
        la, lb = self.leaf[a], self.leaf[b]
        return [self.nic[src], self.nic[dst]] + ([] if la == lb else [la, lb])


def nic_byte_s_per_gpu(spec: ServerSpec) -> float:
    """A server type's scale-out bandwidth per GPU, one direction: NICs x line rate /
    GPUs, bytes/s."""
    return spec.nics * spec.nic_gbps * 1e9 / 8 / spec.gpus_per_server


def kv_ports(services: list[InferenceService], pools: list[tuple[int, str]],
             where: list[Server], where_index: list[int], leaf: list[int], uplinks: int,
             cat: Catalog) -> KvPorts | None:
    """The ports of every replica of a disaggregated pool (`pools`: per replica, its
    service and pool, "" for colocated); None without such a service."""
    if not any(svc.disaggregated for svc in services):
        return None
    links: list[tuple[str, float]] = []
    nvl: dict[int, int] = {}
    nic: dict[int, int] = {}
    server: dict[int, int] = {}
    for r, (i, pool) in enumerate(pools):
        if not pool:
            continue
        d = dict(services[i].pools)[pool]
        x, way = where[r], "out" if pool == "prefill" else "in"
        server[r] = where_index[r]
        nvl[r] = uplinks + len(links)
        links.append((f"{x.name}/replica-{r}/nvlink-{way}",
                      d.gpus_per_replica * x.gpu.scaleup_bandwidth_gbyte_s * 1e9 / 2))
        nic[r] = uplinks + len(links)
        links.append((f"{x.name}/replica-{r}/nic-{way}",
                      d.gpus_per_replica * nic_byte_s_per_gpu(x.spec)))
    per_token = {}
    for i, svc in enumerate(services):
        if svc.disaggregated:
            _nics_where_needed(i, svc, pools, where, where_index)
            p = dict(svc.pools)["prefill"]
            lay = layout_of(cat.gpu(p.gpu), p.weights_dtype, p.kv_cache_dtype, p.ep)
            per_token[i] = shapes.kv_bytes_per_token(cat.model(svc.model), lay.kv_bytes)
    return KvPorts(tuple(links), nvl, nic, server, tuple(leaf), per_token)


def _nics_where_needed(i: int, svc: InferenceService, pools: list[tuple[int, str]],
                       where: list[Server], where_index: list[int]) -> None:
    """Pools on more than one server move KV over NICs: every server needs some."""
    mine = [r for r, (k, pool) in enumerate(pools) if k == i and pool]
    if len({where_index[r] for r in mine}) < 2:
        return
    for r in mine:
        if where[r].spec.nics <= 0:
            raise DcsimError(Problem(
                f"workloads[{svc.name}].deployment.{pools[r][1]}", where[r].name,
                f"servers with scale-out NICs (server type {where[r].spec.id} has none): "
                "the prefill and decode replicas are on different servers, so the KV "
                "cache moves over the NICs"))
