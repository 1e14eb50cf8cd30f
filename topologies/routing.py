"""Routes between GPUs: shortest by latency, ties broken by a deterministic ECMP hash.

A route from GPU `s` to GPU `t` is a path of minimum total `latency_s` that does not pass
through any other GPU (GPUs are endpoints, not switches) unless the graph sets
`gpu_transit: true`. Where several paths tie, the route is chosen hop by hop as a switch
would: at each node the equal-cost next hops are sorted by name and one is picked by the CRC32
of "src|dst|node". The same pair therefore always takes the same path, different pairs
spread over the equal-cost paths, and the choice survives saving and reloading the graph.

Finding the equal-cost paths is the job of `search.SearchGraph` (a bidirectional Dijkstra
over integer picosecond latencies, with interchangeable "twin" switches merged and dead-end
stubs skipped), fast enough for tens of thousands of pairs on a 16k-GPU cluster. Routes are
cached per pair.

    router = Router(G)
    r = router.route("n0/gpu0", "n1/gpu0")
    r.links, r.bottleneck_bytes_per_s, r.latency_s, r.hops
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

import networkx as nx

from topologies.errors import RoutingError
from topologies.schema import BANDWIDTH, GRAPH_GPU_TRANSIT, GRAPH_NAME, LATENCY, LINK_KIND
from topologies.search import SearchGraph

__all__ = ["Route", "Router"]


@dataclass(frozen=True, slots=True)
class Route:
    """One directed path between two nodes and what it offers a single transfer."""

    src: Hashable
    dst: Hashable
    links: tuple[tuple[Hashable, Hashable], ...]
    """Directed edges (u, v) in order from src to dst; empty when src == dst."""
    bottleneck_bytes_per_s: float
    """Smallest bandwidth along the path; inf for the empty route."""
    latency_s: float
    """Sum of the links' latencies."""
    link_kinds: tuple[str, ...]
    """`link_kind` of each link, in path order."""

    @property
    def hops(self) -> int:
        """Number of links."""
        return len(self.links)

    @property
    def nodes(self) -> tuple[Hashable, ...]:
        """src, every intermediate node, dst."""
        return (self.src,) + tuple(v for _, v in self.links)


class Router:
    """Shortest-latency routes with deterministic ECMP on one topology graph.

    The graph must not change while the router is in use (the router compiles it once).
    `gpu_transit` overrides the graph's `gpu_transit` attribute.
    """

    def __init__(self, G: nx.DiGraph, *, gpu_transit: bool | None = None) -> None:
        self.graph = G
        self.gpu_transit = bool(G.graph.get(GRAPH_GPU_TRANSIT, False)
                                if gpu_transit is None else gpu_transit)
        self._search = SearchGraph(G, gpu_transit=self.gpu_transit)
        self._unmerged: SearchGraph | None = None  # for routes between two twin switches
        self._cache: dict[tuple[Hashable, Hashable], Route] = {}

    def route(self, src: Hashable, dst: Hashable) -> Route:
        """The route from `src` to `dst` (cached); `RoutingError` when none exists."""
        key = (src, dst)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        s, t = self._node_id(src), self._node_id(dst)
        if s == t:
            path = [s]
        else:
            search = self._search_for(s, t)
            path = self._walk(search, s, t, self._dag(search, s, t))
        route = self._make_route(path)
        self._cache[key] = route
        return route

    def routes(self, pairs: Iterable[tuple[Hashable, Hashable]]) -> list[Route]:
        """`route` for each (src, dst) pair, in order."""
        return [self.route(src, dst) for src, dst in pairs]

    def equal_cost_dag(self, src: Hashable, dst: Hashable) -> dict[Hashable, tuple[Hashable, ...]]:
        """Every node on some shortest src -> dst path mapped to its next hops on such paths.

        This is the set `route` chooses from; tests compare it with networkx's enumeration.
        """
        s, t = self._node_id(src), self._node_id(dst)
        if s == t:
            return {}
        search = self._search_for(s, t)
        dag = self._dag(search, s, t)
        nodes = search.nodes
        out = {}
        for r, options in dag.items():
            hops = tuple(sorted((nodes[c] for c in _candidates(search, options, s, t)), key=str))
            for actual in _expand(search, r, s, t):
                out[nodes[actual]] = hops
        return out

    @property
    def num_cached(self) -> int:
        """How many routes are cached."""
        return len(self._cache)

    def _node_id(self, node: Hashable) -> int:
        i = self._search.index.get(node)
        if i is None:
            name = self.graph.graph.get(GRAPH_NAME, "<unnamed>")
            sample = ", ".join(repr(n) for n in self._search.nodes[:3])
            raise RoutingError(
                f"route: {node!r} is not a node of topology {name!r} (nodes look like {sample}). "
                f"Fix: use a node name from the topology, e.g. from topologies.gpus(G).")
        return i

    def _search_for(self, s: int, t: int) -> SearchGraph:
        if self._search.rep[s] != self._search.rep[t]:
            return self._search
        if self._unmerged is None:  # s and t are twins (say two spines): keep them apart
            self._unmerged = SearchGraph(self.graph, gpu_transit=self.gpu_transit,
                                         merge_twins=False)
        return self._unmerged

    def _dag(self, search: SearchGraph, s: int, t: int) -> dict[int, set[int]]:
        dag = search.equal_cost_dag(s, t)
        if dag is None:
            name = self.graph.graph.get(GRAPH_NAME, "<unnamed>")
            via = "" if self.gpu_transit else " without passing through another GPU"
            raise RoutingError(
                f"route: no path from {search.nodes[s]!r} to {search.nodes[t]!r} in topology "
                f"{name!r}{via}. Fix: add the missing links; validate_topology(G) names them.")
        return dag

    @staticmethod
    def _walk(search: SearchGraph, s: int, t: int, dag: dict[int, set[int]]) -> list[int]:
        names, rank, rep = search.names, search.rank, search.rep
        salt = f"{names[s]}|{names[t]}|"
        path, x = [s], s
        while x != t:
            options = _candidates(search, dag[rep[x]], s, t)
            if len(options) == 1:
                x = options[0]
            else:
                options.sort(key=rank.__getitem__)
                x = options[zlib.crc32((salt + names[x]).encode()) % len(options)]
            path.append(x)
            assert len(path) <= len(names), "equal-cost DAG has a cycle"
        return path

    def _make_route(self, path: list[int]) -> Route:
        nodes = [self._search.nodes[i] for i in path]
        edge_data = self._search.edge_data
        links, kinds = [], []
        bottleneck, latency = float("inf"), 0.0
        for k in range(len(path) - 1):
            data = edge_data[path[k]][path[k + 1]]
            links.append((nodes[k], nodes[k + 1]))
            kinds.append(data[LINK_KIND])
            bottleneck = min(bottleneck, data[BANDWIDTH])
            latency += data[LATENCY]
        return Route(src=nodes[0], dst=nodes[-1], links=tuple(links),
                     bottleneck_bytes_per_s=float(bottleneck), latency_s=float(latency),
                     link_kinds=tuple(kinds))


def _expand(search: SearchGraph, r: int, s: int, t: int) -> list[int]:
    """The actual nodes representative `r` stands for on an s -> t search."""
    if r == search.rep[s]:
        return [s]
    if r == search.rep[t]:
        return [t]
    return search.members.get(r, [r])


def _candidates(search: SearchGraph, options: set[int], s: int, t: int) -> list[int]:
    out: list[int] = []
    for r in options:
        out.extend(_expand(search, r, s, t))
    return out
