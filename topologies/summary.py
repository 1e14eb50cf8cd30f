"""Counts, bisection bandwidth and oversubscription of a topology.

Bisection bandwidth, precisely. Split the GPUs into two halves A and B (|A| = floor(N/2)).
The *cut flow* A -> B is the maximum flow from all of A to all of B when every directed edge
carries at most its `bandwidth_bytes_per_s`. (Whether flow may pass through a GPU does not
matter here: every A GPU is itself an unlimited source and every B GPU a sink.) The bisection
bandwidth is the minimum cut flow over all balanced bipartitions, in bytes per second per
direction. Minimising over partitions is NP-hard in general (it contains minimum bisection),
so it is obtained as follows:

- builders know their minimising cut and store a closed form in
  `G.graph["bisection_bytes_per_s"]` (with `bisection_note`) when their parameters allow one;
  tests check each against the brute-force minimum over every balanced cut on small cases;
- otherwise (custom graphs, and builder parameters outside the closed forms) we report the cut
  flow across the cut between the first and second half of `gpus(G)`, taking the smaller of
  the two directions, computed by max-flow. That is an upper bound on the bisection, exact
  when GPU order groups GPUs by locality (servers, then racks), as builders and most files do.
  Graphs above `MAX_FLOW_EDGES` edges without a closed form are not computed.

Oversubscription of a leaf switch = (bandwidth of its links down to servers) / (bandwidth of
its links up to spines), per direction; reported as (min, max) over leaves, None without
leaves that have uplinks.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import networkx as nx

from topologies.schema import (
    BANDWIDTH, GRAPH_BISECTION, GRAPH_BISECTION_NOTE, GRAPH_BUILDER, GRAPH_GPU_TRANSIT,
    GRAPH_NAME, KIND, LEAF, LINK_KIND, LINK_KINDS, NODE_INDEX, NODE_KINDS, NODE_TIERS,
    RACK_INDEX, SPINE, gpus,
)

__all__ = ["TopologySummary", "summarize", "bisection_bytes_per_s", "cut_flow_bytes_per_s",
           "leaf_oversubscription", "MAX_FLOW_EDGES"]

MAX_FLOW_EDGES = 100_000
"""Largest graph for which a missing closed-form bisection is computed by max-flow."""


@dataclass(frozen=True)
class TopologySummary:
    """What `pipesim topology show` prints; `to_dict()` is its JSON form."""

    name: str
    builder: str | None
    description: str
    num_gpus: int
    num_servers: int
    """Distinct node_index values among GPUs (a GPU without one counts as its own server)."""
    num_racks: int | None
    """Distinct rack_index values among GPUs; None when GPUs carry none."""
    node_counts: dict[str, int]
    link_counts: dict[str, int]
    """Directed edges per link kind (a bidirectional link counts twice)."""
    link_bandwidth_range: dict[str, tuple[float, float]]
    """Per link kind, (min, max) bandwidth in bytes/s per direction."""
    bisection_bytes_per_s: float | None
    bisection_method: str
    oversubscription: tuple[float, float] | None
    gpu_transit: bool

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict (tuples become lists)."""
        return {
            "name": self.name, "builder": self.builder, "description": self.description,
            "num_gpus": self.num_gpus, "num_servers": self.num_servers,
            "num_racks": self.num_racks, "node_counts": dict(self.node_counts),
            "link_counts": dict(self.link_counts),
            "link_bandwidth_range": {k: list(v) for k, v in self.link_bandwidth_range.items()},
            "bisection_bytes_per_s": self.bisection_bytes_per_s,
            "bisection_method": self.bisection_method,
            "oversubscription": None if self.oversubscription is None
            else list(self.oversubscription),
            "gpu_transit": self.gpu_transit,
        }


def summarize(G: nx.DiGraph, *, compute_bisection: bool = True) -> TopologySummary:
    """Counts, bandwidth ranges, bisection and oversubscription of `G`."""
    order = gpus(G)
    node_counts = {kind: 0 for kind in NODE_KINDS}
    for _, kind in G.nodes(data=KIND):
        node_counts[kind] = node_counts.get(kind, 0) + 1
    link_counts: dict[str, int] = {}
    ranges: dict[str, tuple[float, float]] = {}
    for _, _, data in G.edges(data=True):
        kind, bw = data.get(LINK_KIND), float(data[BANDWIDTH])
        link_counts[kind] = link_counts.get(kind, 0) + 1
        low, high = ranges.get(kind, (bw, bw))
        ranges[kind] = (min(low, bw), max(high, bw))
    rank = {k: i for i, k in enumerate(LINK_KINDS)}
    link_counts = dict(sorted(link_counts.items(), key=lambda kv: rank.get(kv[0], 99)))
    servers = {G.nodes[g].get(NODE_INDEX, ("gpu", g)) for g in order}
    racks = {G.nodes[g].get(RACK_INDEX) for g in order}
    if compute_bisection:
        bisection, method = bisection_bytes_per_s(G)
    else:
        bisection, method = None, "not computed"
    return TopologySummary(
        name=str(G.graph.get(GRAPH_NAME, "<unnamed>")), builder=G.graph.get(GRAPH_BUILDER),
        description=str(G.graph.get("description", "")), num_gpus=len(order),
        num_servers=len(servers), num_racks=None if None in racks else len(racks),
        node_counts={k: v for k, v in node_counts.items() if v}, link_counts=link_counts,
        link_bandwidth_range={k: ranges[k] for k in link_counts}, bisection_bytes_per_s=bisection,
        bisection_method=method, oversubscription=leaf_oversubscription(G),
        gpu_transit=bool(G.graph.get(GRAPH_GPU_TRANSIT, False)))


def bisection_bytes_per_s(G: nx.DiGraph) -> tuple[float | None, str]:
    """(bisection bandwidth or None, how it was obtained); definition in the module docstring."""
    if G.graph.get(GRAPH_BISECTION) is not None:
        return float(G.graph[GRAPH_BISECTION]), str(G.graph.get(GRAPH_BISECTION_NOTE, ""))
    order = gpus(G)
    if len(order) < 2:
        return None, "undefined: fewer than two GPUs"
    if G.number_of_edges() > MAX_FLOW_EDGES:
        return None, (f"not computed: no closed form for these parameters and the graph has more "
                      f"than {MAX_FLOW_EDGES} edges for max-flow")
    half = order[: len(order) // 2]
    rest = order[len(order) // 2:]
    value = min(cut_flow_bytes_per_s(G, half), cut_flow_bytes_per_s(G, rest))
    return value, ("max-flow across the first/second half of the GPU order; "
                   "an upper bound on the minimum over all balanced cuts")


def cut_flow_bytes_per_s(G: nx.DiGraph, side_a: Iterable[Hashable]) -> float:
    """Maximum flow from the GPUs in `side_a` to all other GPUs (module docstring)."""
    a_side = set(side_a)
    b_side = set(gpus(G)) - a_side
    H = nx.DiGraph()
    for u, v, bw in G.edges(data=BANDWIDTH):
        H.add_edge(u, v, capacity=float(bw))
    source, sink = object(), object()
    for gpu in a_side:
        H.add_edge(source, gpu)  # no capacity attribute: unlimited
    for gpu in b_side:
        H.add_edge(gpu, sink)
    return float(nx.maximum_flow_value(H, source, sink))


def leaf_oversubscription(G: nx.DiGraph) -> tuple[float, float] | None:
    """(min, max) over leaves of downlink / uplink bandwidth; None without uplinked leaves."""
    leaf_tier = NODE_TIERS[LEAF]
    ratios = []
    for leaf, kind in G.nodes(data=KIND):
        if kind != LEAF:
            continue
        down = up = 0.0
        for _, v, bw in G.out_edges(leaf, data=BANDWIDTH):
            other = G.nodes[v].get(KIND)
            if other == SPINE:
                up += bw
            elif NODE_TIERS.get(other, leaf_tier) < leaf_tier:
                down += bw
        if up > 0:
            ratios.append(down / up)
    return (min(ratios), max(ratios)) if ratios else None
