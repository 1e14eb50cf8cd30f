"""Placement of (dp, pp, tp) ranks onto GPUs, and which links each pipeline boundary crosses.

A *pipeline rank* is one (dp_index, pp_index) pair; its TP group is `tp` GPUs. Policies:

- `packed`: TP groups are `tp` consecutive GPUs (global GPU order) inside one server; pipeline
  ranks take groups in the order dp-major, pp-minor, so consecutive stages of a replica sit on
  the same server or the next one. A server whose GPU count is not a multiple of `tp` leaves
  its remainder unused.
- `spread-racks`: TP groups as in `packed`, but pipeline rank k = dp_index * pp + pp_index
  goes to rack `k mod R` (racks in `rack_index` order, taking each rack's groups in order), so
  consecutive stages always sit in different racks when R > 1 and every rack gets its share.
  On `rail_optimized` graphs a "rack" is a scalable unit.
- explicit: a mapping `"d,p,t" -> GPU name` (or `(d, p, t)` tuple keys) covering every rank.

Pipeline boundaries are pp -> pp+1 for pp = 0..P-2, plus the interleaved wrap-around
P-1 -> 0 when `num_virtual_stages` > 1 (chunk c runs on rank c mod P, so chunk P-1 hands to
chunk P on rank 0). `boundary_report(router)` routes the dp*tp GPU pairs of every boundary
and says which link kinds and switch kinds they cross.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field

import networkx as nx

from topologies.errors import PlacementError
from topologies.routing import Route, Router
from topologies.schema import (
    GPU, GRAPH_NAME, KIND, LINK_KINDS, NODE_INDEX, NODE_TIERS, RACK_INDEX, gpus,
)

__all__ = ["place", "Placement", "BoundaryReport", "POLICIES", "SCOPES"]

POLICIES = ("packed", "spread-racks")
"""Named policies; a mapping is the explicit form."""

SCOPES = ("same-gpu", "intra-node", "intra-rack", "inter-node", "cross-rack")
"""How far apart a boundary's two GPUs are, narrowest first ("inter-node" when the graph
has no rack_index)."""


@dataclass(frozen=True)
class BoundaryReport:
    """What one pipeline boundary crosses, over all its dp * tp GPU pairs."""

    src_stage: int
    dst_stage: int
    is_wrap: bool
    """True for the interleaved wrap-around P-1 -> 0."""
    num_pairs: int
    link_kinds: tuple[str, ...]
    """Link kinds used by any pair, in schema.LINK_KINDS order."""
    transit_kinds: tuple[str, ...]
    """Kinds of the nodes passed through (nvswitch, nic, leaf, spine...), lowest tier first."""
    scope: str
    """Widest of SCOPES over the pairs."""
    min_bottleneck_bytes_per_s: float
    max_latency_s: float
    max_hops: int
    routes: tuple[Route, ...] = field(repr=False)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready summary (routes left out)."""
        return {"src_stage": self.src_stage, "dst_stage": self.dst_stage,
                "is_wrap": self.is_wrap, "num_pairs": self.num_pairs,
                "link_kinds": list(self.link_kinds), "transit_kinds": list(self.transit_kinds),
                "scope": self.scope, "min_bottleneck_bytes_per_s": self.min_bottleneck_bytes_per_s,
                "max_latency_s": self.max_latency_s, "max_hops": self.max_hops}


@dataclass(frozen=True)
class Placement:
    """Which GPU runs each (dp_index, pp_index, tp_index) rank."""

    dp: int
    pp: int
    tp: int
    num_virtual_stages: int
    policy: str
    gpu_order: tuple[Hashable, ...]
    """GPU of rank (d, p, t) at index (d * pp + p) * tp + t."""

    def gpu_of(self, dp_index: int, pp_index: int, tp_index: int) -> Hashable:
        """The GPU that runs rank (dp_index, pp_index, tp_index)."""
        for name, value, size in (("dp_index", dp_index, self.dp), ("pp_index", pp_index, self.pp),
                                  ("tp_index", tp_index, self.tp)):
            if not 0 <= value < size:
                raise PlacementError(f"gpu_of: {name} = {value} is outside 0..{size - 1}. "
                                     f"Fix: use an index below {size}.")
        return self.gpu_order[(dp_index * self.pp + pp_index) * self.tp + tp_index]

    def stage_gpus(self, pp_index: int) -> tuple[Hashable, ...]:
        """All GPUs of pipeline stage `pp_index`, dp-major then tp."""
        return tuple(self.gpu_of(d, pp_index, t) for d in range(self.dp) for t in range(self.tp))

    def pipeline(self, dp_index: int = 0, tp_index: int = 0) -> tuple[Hashable, ...]:
        """The GPUs of stages 0..P-1 of one replica's `tp_index` slice."""
        return tuple(self.gpu_of(dp_index, p, tp_index) for p in range(self.pp))

    def boundaries(self) -> list[tuple[int, int]]:
        """(src_stage, dst_stage) of every boundary, the wrap-around last when V > 1."""
        pairs = [(p, p + 1) for p in range(self.pp - 1)]
        if self.num_virtual_stages > 1 and self.pp > 1:
            pairs.append((self.pp - 1, 0))
        return pairs

    def boundary_pairs(self, src_stage: int, dst_stage: int) -> list[tuple[Hashable, Hashable]]:
        """The (src GPU, dst GPU) pairs of one boundary, one per (dp_index, tp_index)."""
        return [(self.gpu_of(d, src_stage, t), self.gpu_of(d, dst_stage, t))
                for d in range(self.dp) for t in range(self.tp)]

    def pipeline_links(self, router: Router, dp_index: int = 0,
                       tp_index: int = 0) -> list[tuple[Hashable, Hashable]]:
        """Links crossed by one replica's slice along all boundaries (for highlighting)."""
        links: list[tuple[Hashable, Hashable]] = []
        for a, b in self.boundaries():
            links.extend(router.route(self.gpu_of(dp_index, a, tp_index),
                                      self.gpu_of(dp_index, b, tp_index)).links)
        return links

    def boundary_report(self, router: Router) -> list[BoundaryReport]:
        """One report per boundary (see `boundaries`)."""
        G = router.graph
        reports = []
        for a, b in self.boundaries():
            routes = tuple(router.routes(self.boundary_pairs(a, b)))
            kinds = {k for r in routes for k in r.link_kinds}
            transit = {G.nodes[n][KIND] for r in routes for n in r.nodes[1:-1]}
            scope = max((_scope(G, r.src, r.dst) for r in routes), key=SCOPES.index)
            reports.append(BoundaryReport(
                src_stage=a, dst_stage=b, is_wrap=b < a, num_pairs=len(routes),
                link_kinds=tuple(k for k in LINK_KINDS if k in kinds) + tuple(
                    sorted(kinds - set(LINK_KINDS))),
                transit_kinds=tuple(sorted(transit, key=lambda k: (NODE_TIERS.get(k, 9), k))),
                scope=scope,
                min_bottleneck_bytes_per_s=min(r.bottleneck_bytes_per_s for r in routes),
                max_latency_s=max(r.latency_s for r in routes),
                max_hops=max(r.hops for r in routes), routes=routes))
        return reports

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form: sizes, policy and the GPU of every rank as "d,p,t"."""
        ranks = {f"{d},{p},{t}": str(self.gpu_of(d, p, t)) for d in range(self.dp)
                 for p in range(self.pp) for t in range(self.tp)}
        return {"dp": self.dp, "pp": self.pp, "tp": self.tp,
                "num_virtual_stages": self.num_virtual_stages, "policy": self.policy,
                "ranks": ranks}


def _scope(G: nx.DiGraph, a: Hashable, b: Hashable) -> str:
    if a == b:
        return "same-gpu"
    na, nb = G.nodes[a].get(NODE_INDEX), G.nodes[b].get(NODE_INDEX)
    if na is not None and na == nb:
        return "intra-node"
    ra, rb = G.nodes[a].get(RACK_INDEX), G.nodes[b].get(RACK_INDEX)
    if ra is None or rb is None:
        return "inter-node"
    return "intra-rack" if ra == rb else "cross-rack"


def place(G: nx.DiGraph, *, dp: int, pp: int, tp: int,
          policy: str | Mapping[object, Hashable] = "packed",
          num_virtual_stages: int = 1) -> Placement:
    """Place dp * pp * tp ranks onto the GPUs of `G` (policies in the module docstring)."""
    for name, value in (("dp", dp), ("pp", pp), ("tp", tp),
                        ("num_virtual_stages", num_virtual_stages)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PlacementError(f"placement: {name} = {value!r}; it must be an integer >= 1. "
                                 f"Fix: set {name} to 1 or more.")
    order = gpus(G)
    topo = G.graph.get(GRAPH_NAME, "<unnamed>")
    total = dp * pp * tp
    if total > len(order):
        raise PlacementError(
            f"placement: dp*pp*tp = {dp}*{pp}*{tp} = {total} ranks exceed the {len(order)} GPUs "
            f"of topology {topo!r}. Fix: lower dp, pp or tp, or use a larger topology.")
    if isinstance(policy, Mapping):
        chosen = _explicit(G, policy, dp, pp, tp)
        name = "explicit"
    elif policy in POLICIES:
        groups = _tp_groups(G, order, tp, policy, topo)
        chosen = _by_policy(groups, policy, dp, pp, tp, topo)
        name = policy
    else:
        raise PlacementError(f"placement: unknown policy {policy!r}; use one of "
                             f"{', '.join(POLICIES)} or a mapping 'd,p,t' -> GPU. Fix: pick one.")
    return Placement(dp=dp, pp=pp, tp=tp, num_virtual_stages=num_virtual_stages, policy=name,
                     gpu_order=tuple(chosen))


def _tp_groups(G: nx.DiGraph, order: list[Hashable], tp: int, policy: str,
               topo: str) -> list[tuple[int | None, list[Hashable]]]:
    """(rack_index, TP group) in GPU order; a group is tp consecutive GPUs of one server."""
    by_node: dict[object, list[Hashable]] = {}
    for gpu in order:
        node = G.nodes[gpu].get(NODE_INDEX)
        if node is None and tp > 1:
            raise PlacementError(
                f"placement {policy}: GPU {gpu!r} of topology {topo!r} has no node_index, so a TP "
                f"group of {tp} cannot be kept inside one server. Fix: add node_index to the "
                f"GPUs, use tp = 1, or give an explicit map.")
        by_node.setdefault(gpu if node is None else node, []).append(gpu)
    groups: list[tuple[int | None, list[Hashable]]] = []
    for members in by_node.values():
        rack = G.nodes[members[0]].get(RACK_INDEX)
        if policy == "spread-racks" and rack is None:
            raise PlacementError(
                f"placement spread-racks: GPU {members[0]!r} of topology {topo!r} has no "
                f"rack_index. Fix: use packed, add rack_index, or give an explicit map.")
        for start in range(0, len(members) - tp + 1, tp):
            groups.append((rack, members[start:start + tp]))
    return groups


def _by_policy(groups: list[tuple[int | None, list[Hashable]]], policy: str, dp: int, pp: int,
               tp: int, topo: str) -> list[Hashable]:
    needed = dp * pp
    if policy == "packed":
        if len(groups) < needed:
            raise PlacementError(
                f"placement packed: needs dp*pp = {needed} TP groups of {tp} GPUs inside one "
                f"server, topology {topo!r} offers {len(groups)}. Fix: lower dp, pp or tp.")
        return [gpu for _, group in groups[:needed] for gpu in group]
    racks: dict[int | None, list[list[Hashable]]] = {}
    for rack, group in groups:
        racks.setdefault(rack, []).append(group)
    keys = sorted(racks)  # type: ignore[type-var]
    taken = {rack: 0 for rack in keys}
    chosen: list[Hashable] = []
    for k in range(needed):
        rack = keys[k % len(keys)]
        if taken[rack] == len(racks[rack]):
            raise PlacementError(
                f"placement spread-racks: rack {rack} of topology {topo!r} has only "
                f"{len(racks[rack])} TP groups of {tp} GPUs, fewer than its share of the "
                f"{needed} pipeline ranks. Fix: lower dp or pp, or use packed.")
        chosen.extend(racks[rack][taken[rack]])
        taken[rack] += 1
    return chosen


def _rank_key(key: object, where: str) -> tuple[int, int, int]:
    if isinstance(key, str):
        parts = key.replace(" ", "").split(",")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            return int(parts[0]), int(parts[1]), int(parts[2])
    elif isinstance(key, tuple) and len(key) == 3 and all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in key):
        return key  # type: ignore[return-value]
    raise PlacementError(f"{where}: key {key!r} is not a rank; write 'dp_index,pp_index,tp_index'"
                         f" such as '0,1,0'. Fix: correct the key.")


def _explicit(G: nx.DiGraph, mapping: Mapping[object, Hashable], dp: int, pp: int,
              tp: int) -> list[Hashable]:
    where = "placement (explicit map)"
    chosen: dict[tuple[int, int, int], Hashable] = {}
    owner: dict[Hashable, tuple[int, int, int]] = {}
    for key, gpu in mapping.items():
        rank = _rank_key(key, where)
        if not (rank[0] < dp and rank[1] < pp and rank[2] < tp):
            raise PlacementError(f"{where}: rank {key!r} is outside dp={dp}, pp={pp}, tp={tp}. "
                                 f"Fix: remove it or raise dp/pp/tp.")
        if rank in chosen:
            raise PlacementError(f"{where}: rank {rank} is given twice. Fix: keep one entry.")
        if gpu not in G or G.nodes[gpu].get(KIND) != GPU:
            raise PlacementError(f"{where}: rank {key!r} -> {gpu!r}, which is not a GPU of "
                                 f"topology {G.graph.get(GRAPH_NAME, '<unnamed>')!r}. Fix: use a "
                                 f"GPU name such as {gpus(G)[0]!r}.")
        if gpu in owner:
            raise PlacementError(f"{where}: GPU {gpu!r} is given to ranks {owner[gpu]} and {rank}. "
                                 f"Fix: one rank per GPU.")
        chosen[rank] = gpu
        owner[gpu] = rank
    ranks = [(d, p, t) for d in range(dp) for p in range(pp) for t in range(tp)]
    missing = [r for r in ranks if r not in chosen]
    if missing:
        d, p, t = missing[0]
        raise PlacementError(f"{where}: {len(missing)} of {len(ranks)} ranks have no GPU, first "
                             f"'{d},{p},{t}'. Fix: map every rank.")
    return [chosen[r] for r in ranks]
