"""Topology rules, checked once when a custom graph is loaded.

`validate_topology(G)` raises `TopologyValidationError` at the first broken rule, naming the
node or link (`a -> b`), the bad value, the rule and the fix:

1. `G` is a `networkx.DiGraph` (not a multigraph) with at least one GPU and no self-loops.
2. Every node has a `kind` from `schema.NODE_KINDS`; index attributes are integers >= 0.
3. GPUs carry `gpu_index` all or none; when present it numbers them 0..N-1 exactly once.
4. Every edge has `bandwidth_bytes_per_s` and `latency_s` (finite numbers > 0) and a
   `link_kind` from `schema.LINK_KINDS`.
5. Every GPU reaches every other GPU along directed edges. Paths may not pass *through* a GPU
   unless `G.graph["gpu_transit"]` is true, the same rule the router follows.

Rule 5 for all N^2 pairs at once: each GPU g is split into a source `out(g)` and a sink
`in(g)`; the strongly connected components of that graph form a DAG, and a bit set of the sinks
each component reaches is accumulated in reverse topological order. The builders produce valid
graphs by construction, so only loaders call this (a 16k-GPU check takes about a second).
"""

from __future__ import annotations

import math
from collections.abc import Hashable

import networkx as nx

from topologies.errors import TopologyValidationError
from topologies.schema import (
    BANDWIDTH, GPU, GPU_INDEX, GRAPH_GPU_TRANSIT, GRAPH_NAME, KIND, LATENCY, LINK_KIND,
    LINK_KINDS, LOCAL_INDEX, NODE_INDEX, NODE_KINDS, RACK_INDEX, gpus,
)

__all__ = ["validate_topology"]

_INDEX_ATTRS = (NODE_INDEX, RACK_INDEX, LOCAL_INDEX, GPU_INDEX)


def validate_topology(G: nx.DiGraph) -> None:
    """Raise `TopologyValidationError` at the first broken topology rule (module docstring)."""
    name = G.graph.get(GRAPH_NAME, "<unnamed>") if isinstance(G, nx.Graph) else "<not a graph>"
    where = f"topology {name!r}"
    if not isinstance(G, nx.DiGraph) or G.is_multigraph():
        raise TopologyValidationError(
            f"{where}: expected a networkx.DiGraph, got {type(G).__name__}. Fix: build a DiGraph "
            f"with both directions of every link as separate edges.")
    _check_nodes(G, where)
    _check_gpu_index(G, where)
    _check_edges(G, where)
    _check_reachability(G, where, bool(G.graph.get(GRAPH_GPU_TRANSIT, False)))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_nodes(G: nx.DiGraph, where: str) -> None:
    for node, data in G.nodes(data=True):
        kind = data.get(KIND)
        if kind is None:
            raise TopologyValidationError(
                f"{where}: node {node!r} has no 'kind' attribute; every node needs one of "
                f"{', '.join(NODE_KINDS)}. Fix: add kind to that node.")
        if kind not in NODE_KINDS:
            raise TopologyValidationError(
                f"{where}: node {node!r} has kind {kind!r}, which is not one of "
                f"{', '.join(NODE_KINDS)}. Fix: use one of those kinds.")
        for attr in _INDEX_ATTRS:
            value = data.get(attr)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise TopologyValidationError(
                    f"{where}: node {node!r} has {attr} = {value!r}; it must be an integer >= 0. "
                    f"Fix: correct or remove {attr} (in GraphML declare attr.type=\"int\").")
    if not any(kind == GPU for _, kind in G.nodes(data=KIND)):
        raise TopologyValidationError(
            f"{where}: has no node of kind 'gpu'; routes and placements need GPUs. "
            f"Fix: mark the accelerators (or processes) with kind: gpu.")


def _check_gpu_index(G: nx.DiGraph, where: str) -> None:
    found = [n for n, kind in G.nodes(data=KIND) if kind == GPU]
    indexed = [n for n in found if GPU_INDEX in G.nodes[n]]
    if not indexed:
        return
    if len(indexed) != len(found):
        missing = next(n for n in found if GPU_INDEX not in G.nodes[n])
        raise TopologyValidationError(
            f"{where}: GPU {missing!r} has no gpu_index while other GPUs have one; give every "
            f"GPU a gpu_index or none (then file order is used). Fix: add or remove gpu_index.")
    seen: dict[int, Hashable] = {}
    for node in found:
        index = G.nodes[node][GPU_INDEX]
        if index >= len(found) or index in seen:
            clash = f" (also on {seen[index]!r})" if index in seen else ""
            raise TopologyValidationError(
                f"{where}: GPU {node!r} has gpu_index {index}{clash}; gpu_index must number the "
                f"{len(found)} GPUs 0..{len(found) - 1}, each once. Fix: renumber them.")
        seen[index] = node


def _check_edges(G: nx.DiGraph, where: str) -> None:
    for u, v, data in G.edges(data=True):
        link = f"{where}: link {u!r} -> {v!r}"
        if u == v:
            raise TopologyValidationError(f"{link} is a self-loop. Fix: remove it.")
        for attr, unit in ((BANDWIDTH, "bytes per second"), (LATENCY, "seconds")):
            value = data.get(attr)
            if value is None:
                raise TopologyValidationError(
                    f"{link} has no {attr}; every link needs {BANDWIDTH} and {LATENCY}. "
                    f"Fix: add {attr} ({unit}).")
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise TopologyValidationError(
                    f"{link} has {attr} = {value!r}; it must be a finite number > 0 in {unit}. "
                    f"Fix: correct it (in GraphML declare attr.type=\"double\").")
        kind = data.get(LINK_KIND)
        if kind not in LINK_KINDS:
            raise TopologyValidationError(
                f"{link} has link_kind {kind!r}; it must be one of {', '.join(LINK_KINDS)}. "
                f"Fix: set link_kind to one of those.")


class _End:
    """One side of a split GPU in the reachability graph."""

    __slots__ = ("side", "gpu")

    def __init__(self, side: str, gpu: Hashable) -> None:
        self.side, self.gpu = side, gpu

    def __hash__(self) -> int:
        return hash((self.side, self.gpu))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _End) and (other.side, other.gpu) == (self.side, self.gpu)


def _check_reachability(G: nx.DiGraph, where: str, gpu_transit: bool) -> None:
    order = gpus(G)
    if len(order) < 2:
        return
    bit = {g: 1 << i for i, g in enumerate(order)}
    H = nx.DiGraph()
    for g in order:
        H.add_node(_End("out", g))
        H.add_node(_End("in", g))
        if gpu_transit:
            H.add_edge(_End("in", g), _End("out", g))
    for u, v in G.edges():
        a = _End("out", u) if u in bit else u
        b = _End("in", v) if v in bit else v
        H.add_edge(a, b)
    C = nx.condensation(H)
    reach: dict[int, int] = {}
    for comp in reversed(list(nx.topological_sort(C))):
        bits = 0
        for member in C.nodes[comp]["members"]:
            if isinstance(member, _End) and member.side == "in":
                bits |= bit[member.gpu]
        for succ in C.successors(comp):
            bits |= reach[succ]
        reach[comp] = bits
    full = (1 << len(order)) - 1
    mapping = C.graph["mapping"]
    for g in order:
        missing = full & ~reach[mapping[_End("out", g)]] & ~bit[g]
        if missing:
            other = order[(missing & -missing).bit_length() - 1]
            via = "" if gpu_transit else " without passing through another GPU"
            raise TopologyValidationError(
                f"{where}: GPU {g!r} cannot reach GPU {other!r} along directed links{via}. "
                f"Fix: add the missing link(s) in both directions"
                + ("" if gpu_transit else ", or set gpu_transit: true if GPUs forward traffic "
                   "(direct-connect meshes)") + ".")
