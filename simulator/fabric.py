"""Where the ranks of a step sit and how their GPUs are wired: the engine's view of a cluster.

A `Fabric` is three things the engine needs and nothing more: the directed links (capacity and
latency), the GPU of each (data-parallel index, pipeline rank, TP index), and a route between two
GPUs as a tuple of link keys. `fabric_from_topology` builds one from a `topologies` graph, its
router and a placement; `ideal_fabric` is a star of identical links (unlimited and zero-latency by
default) for closed-form checks. `symmetric_fabric` implements the symmetry reduction: it keeps
one representative pipeline and divides each link's capacity by the number of replicas whose
traffic would share it (see docs/simulator.md for when this is exact and what it misses).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from simulator.network import LinkKey

__all__ = ["Fabric", "ideal_fabric", "fabric_from_topology", "symmetric_fabric"]

GpuOf = Callable[[int, int, int], Hashable]
Route = Callable[[Hashable, Hashable], tuple[LinkKey, ...]]


@dataclass
class Fabric:
    """Links, the GPU of each rank, and routes between GPUs."""

    links: dict[LinkKey, tuple[float, float]]
    """(u, v) -> (capacity_bytes_per_s, latency_s)."""
    gpu_of: GpuOf
    """(dp_index, pp_index, tp_index) -> GPU node."""
    route: Route
    """(src GPU, dst GPU) -> link keys along the path (empty for the same GPU)."""
    link_kinds: dict[LinkKey, str] = field(default_factory=dict)
    """(u, v) -> link kind ("nvlink", "network", ...), for reports."""
    description: str = ""
    allreduce_route: Callable[[int, int, int], tuple[tuple[LinkKey, ...], float]] | None = None
    """Symmetry reduction only: (dp, pp, tp) -> (links, latency_s) one ring step stands for."""
    replica_multiplicity: dict[LinkKey, int] = field(default_factory=dict)
    """Symmetry reduction only: replicas whose traffic each link carries (capacity divisor)."""
    pair_overrides: dict[tuple[Hashable, Hashable], tuple[float, float]] = field(
        default_factory=dict)
    """(src GPU, dst GPU) -> measured (latency_s, bandwidth_bytes_per_s) for flows between them:
    the latency replaces the path's, the bandwidth caps the flow's rate."""

    def cached_route(self) -> Route:
        """`route` memoized per GPU pair."""
        cache: dict[tuple[Hashable, Hashable], tuple[LinkKey, ...]] = {}
        route = self.route

        def lookup(src: Hashable, dst: Hashable) -> tuple[LinkKey, ...]:
            key = (src, dst)
            path = cache.get(key)
            if path is None:
                path = cache[key] = tuple(route(src, dst)) if src != dst else ()
            return path

        return lookup


def ideal_fabric(num_replicas: int, num_stages: int, tensor_parallel: int = 1, *,
                 bandwidth_bytes_per_s: float = math.inf, latency_s: float = 0.0) -> Fabric:
    """Every GPU on one switch through its own up and down link (a non-blocking star)."""
    links: dict[LinkKey, tuple[float, float]] = {}
    for dp in range(num_replicas):
        for pp in range(num_stages):
            for tp in range(tensor_parallel):
                gpu = (dp, pp, tp)
                links[(gpu, "switch")] = (bandwidth_bytes_per_s, latency_s)
                links[("switch", gpu)] = (bandwidth_bytes_per_s, latency_s)

    def route(src: Hashable, dst: Hashable) -> tuple[LinkKey, ...]:
        return ((src, "switch"), ("switch", dst))

    return Fabric(links, lambda dp, pp, tp: (dp, pp, tp), route,
                  {key: "ideal" for key in links}, "ideal star")


def fabric_from_topology(graph: object, placement: object, router: object) -> Fabric:
    """A fabric over a `topologies` graph, with a placement and a router for it."""
    from topologies import schema  # noqa: PLC0415 (topologies imports networkx only)

    links = {(u, v): (float(data[schema.BANDWIDTH]), float(data[schema.LATENCY]))
             for u, v, data in graph.edges(data=True)}  # type: ignore[attr-defined]
    kinds = {(u, v): str(data.get(schema.LINK_KIND, ""))
             for u, v, data in graph.edges(data=True)}  # type: ignore[attr-defined]

    def route(src: Hashable, dst: Hashable) -> tuple[LinkKey, ...]:
        return tuple(router.route(src, dst).links)  # type: ignore[attr-defined]

    return Fabric(links, placement.gpu_of, route, kinds,  # type: ignore[attr-defined]
                  str(graph.graph.get("name", "")))  # type: ignore[attr-defined]


def symmetric_fabric(full: Fabric, num_replicas: int, num_stages: int, tensor_parallel: int,
                     pipeline_pairs: list[tuple[int, int]]) -> Fabric:
    """One representative replica (dp 0) on links whose capacity is shared with the others.

    Each link's capacity is divided by the number of replicas whose pipeline traffic (the
    (src rank, dst rank) pairs given) crosses it, or whose ring all-reduce traffic does,
    whichever is larger (the two mostly happen at different times). A ring step of
    position (pp, tp) is represented by the slowest hop dp -> dp+1 of that ring under those
    divided capacities: a slower hop queues the ring's chunks, so it sets the throughput. Its
    latency is the mean over the ring's hops: each member waits for its predecessor, so the
    2(d-1) steps chain through consecutive hops and add their latencies up.
    """
    route = full.cached_route()
    pipeline_users: dict[LinkKey, set[int]] = {}
    for dp in range(num_replicas):
        for src, dst in pipeline_pairs:
            for tp in range(tensor_parallel):
                for key in route(full.gpu_of(dp, src, tp), full.gpu_of(dp, dst, tp)):
                    pipeline_users.setdefault(key, set()).add(dp)
    ring_users: dict[LinkKey, set[int]] = {}
    ring: dict[tuple[int, int], list[tuple[LinkKey, ...]]] = {}
    for pp in range(num_stages):
        for tp in range(tensor_parallel):
            hops = [route(full.gpu_of(dp, pp, tp), full.gpu_of((dp + 1) % num_replicas, pp, tp))
                    for dp in range(num_replicas)] if num_replicas > 1 else []
            ring[(pp, tp)] = hops
            for dp, hop in enumerate(hops):
                for key in hop:
                    ring_users.setdefault(key, set()).add(dp)
    # pipeline traffic and the all-reduce mostly happen at different times: divide by the
    # larger of the two replica counts, not their sum
    multiplicity = {key: max(len(pipeline_users.get(key, ())), len(ring_users.get(key, ())), 1)
                    for key in set(pipeline_users) | set(ring_users)}
    links = {key: (cap / multiplicity.get(key, 1), lat) for key, (cap, lat) in full.links.items()}

    def slowness(hop: tuple[LinkKey, ...]) -> tuple[float, float]:
        """(seconds per byte at the divided bottleneck, latency): gradient chunks are large."""
        if not hop:
            return (0.0, 0.0)
        return (max(1.0 / links[key][0] for key in hop), sum(links[key][1] for key in hop))

    representative = {
        pos: (max(hops, key=slowness), sum(slowness(hop)[1] for hop in hops) / len(hops))
        if hops else ((), 0.0) for pos, hops in ring.items()}
    return Fabric(links, full.gpu_of, full.route, full.link_kinds,
                  f"{full.description} (symmetry-reduced: 1 of {num_replicas} replicas)",
                  lambda dp, pp, tp: representative[(pp, tp)], multiplicity,
                  full.pair_overrides)
