"""The router's compiled search graph and its bidirectional equal-cost search.

`SearchGraph(G)` turns a topology into integer adjacency lists (latencies in integer
picoseconds, so equal-cost paths compare exactly) and applies two reductions that keep every
shortest path while making a search on a 16k-GPU leaf/spine fabric touch a few dozen nodes:

- Twins. Non-GPU nodes with identical successor and predecessor sets (same neighbours, same
  latencies), such as the spines of a leaf/spine tier, are interchangeable on any path. The
  search uses one representative per twin class; the router expands the class again when it
  picks an ECMP next hop, so every twin stays a candidate.
- Dead ends. Forward, an edge x -> y is a dead end when every non-GPU successor of y is x
  itself (a NIC seen from its leaf, an NVSwitch seen from a GPU): y leads on only to GPUs, so
  it matters only when it feeds the target. Backward likewise with predecessors. GPUs never
  forward traffic unless the graph sets `gpu_transit` (then no edge is a dead end).

`equal_cost_dag(s, t)` is a bidirectional Dijkstra over representatives that stops once the
two frontiers' smallest keys sum to at least the best meeting cost mu. With positive integer
weights every shortest path P then has a node v labelled exactly from both sides: the first
node of P whose forward distance is >= top_f has a settled predecessor (exact forward label)
and, its backward distance being <= top_b, is itself settled backward or has a settled
successor (exact backward label). Nodes before v are settled forward, nodes after it settled
backward, so following the forward predecessor lists and the backward successor lists from the
meeting nodes {v : df[v] + db[v] == mu} yields every shortest path and nothing else. Dead-end
edges removed from the search lie on no path to the target, and twin classes preserve all
distances, so the argument holds on the reduced graph.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable

import networkx as nx

from topologies.errors import TopologyValidationError
from topologies.schema import GPU, GRAPH_NAME, KIND, LATENCY, LATENCY_RESOLUTION_S

__all__ = ["SearchGraph"]

_INF = float("inf")
Adjacency = list[list[tuple[int, int]]]


class SearchGraph:
    """Integer adjacency of a topology with twin classes and dead ends split off."""

    def __init__(self, G: nx.DiGraph, *, gpu_transit: bool, merge_twins: bool = True) -> None:
        self.nodes: list[Hashable] = list(G.nodes)
        n = len(self.nodes)
        self.index = {node: i for i, node in enumerate(self.nodes)}
        self.names = [str(node) for node in self.nodes]
        is_gpu = [data.get(KIND) == GPU for data in G.nodes.values()]
        self.blocked = [g and not gpu_transit for g in is_gpu]
        self.rank = [0] * n  # position in name order: ECMP sorts candidates by name
        for r, i in enumerate(sorted(range(n), key=self.names.__getitem__)):
            self.rank[i] = r
        self.succ: Adjacency = [[] for _ in range(n)]
        self.pred: Adjacency = [[] for _ in range(n)]
        self.edge_data: list[dict[int, dict]] = [{} for _ in range(n)]  # i -> j -> attributes
        weight: dict[float, int] = {}  # latency (s) -> ps; few distinct values per graph
        for u, nbrs in G.adjacency():
            i = self.index[u]
            for v, data in nbrs.items():
                j = self.index[v]
                latency = data.get(LATENCY)
                w = weight.get(latency) if type(latency) is float else None
                if w is None:
                    w = _latency_ps(G, u, v, data)
                    if type(latency) is float:
                        weight[latency] = w
                self.succ[i].append((j, w))
                self.pred[j].append((i, w))
                self.edge_data[i][j] = data
        if merge_twins:
            self.rep, self.members = self._twins(is_gpu)
        else:
            self.rep, self.members = list(range(n)), {}
        self._reduce(gpu_transit)

    def _twins(self, is_gpu: list[bool]) -> tuple[list[int], dict[int, list[int]]]:
        # Bucket by a cheap key first; only buckets of two or more can hold twins.
        buckets: dict[tuple, list[int]] = {}
        for i, gpu in enumerate(is_gpu):
            succ, pred = self.succ[i], self.pred[i]
            if not gpu and succ and pred:
                buckets.setdefault((len(succ), min(succ), len(pred), min(pred)), []).append(i)
        classes: dict[tuple[frozenset, frozenset], list[int]] = {}
        for bucket in buckets.values():
            if len(bucket) > 1:
                for i in bucket:
                    classes.setdefault((frozenset(self.succ[i]), frozenset(self.pred[i])),
                                       []).append(i)
        rep = list(range(len(is_gpu)))
        members = {}
        for group in classes.values():
            if len(group) > 1:
                for i in group:
                    rep[i] = group[0]
                members[group[0]] = group
        return rep, members

    def _reduce(self, gpu_transit: bool) -> None:
        n, rep, blocked = len(self.nodes), self.rep, self.blocked
        reps = [i for i in range(n) if rep[i] == i]

        def sole_open(adjacency: Adjacency, r: int) -> int | None:
            """The one non-GPU neighbour class of r; -1 with none; None with several."""
            sole = -1
            for j, _ in adjacency[r]:
                if not blocked[j]:
                    if sole == -1:
                        sole = rep[j]
                    elif rep[j] != sole:
                        return None
            return sole

        open_succ = {i: sole_open(self.succ, i) for i in reps}
        open_pred = {i: sole_open(self.pred, i) for i in reps}
        self.main_succ: Adjacency = [[] for _ in range(n)]
        self.main_pred: Adjacency = [[] for _ in range(n)]
        self.dead_f: dict[tuple[int, int], int] = {}  # edge (x, y): y useful only as t's feeder
        self.dead_b: dict[tuple[int, int], int] = {}  # edge (y, x): y useful only as s's exit
        for i in reps:
            for adjacency, main, dead, opened, forward in (
                    (self.succ, self.main_succ, self.dead_f, open_succ, True),
                    (self.pred, self.main_pred, self.dead_b, open_pred, False)):
                seen: set[int] = set()
                for j, w in adjacency[i]:
                    r = rep[j]
                    if blocked[j] or r in seen:
                        continue
                    seen.add(r)
                    sole = opened[r]  # dead end: r's only non-GPU neighbour is i, or it has none
                    if gpu_transit or not (sole == -1 or sole == i):
                        main[i].append((r, w))
                    else:
                        dead[(i, r) if forward else (r, i)] = w

    def equal_cost_dag(self, s: int, t: int) -> dict[int, set[int]] | None:
        """Representative -> next-hop representatives on shortest s -> t paths; None if none.

        `s` and `t` are node ids; the DAG starts at rep[s] and ends at rep[t]. Two distinct
        twins (rep[s] == rep[t]) need a graph built with merge_twins=False.
        """
        rep = self.rep
        assert s == t or rep[s] != rep[t], "twin endpoints need merge_twins=False"
        s, t = rep[s], rep[t]
        df, db = {s: 0}, {t: 0}
        pf: dict[int, list[int]] = {s: []}
        sb: dict[int, list[int]] = {t: []}
        done_f: set[int] = set()
        done_b: set[int] = set()
        hf, hb = [(0, s)], [(0, t)]
        mu = _INF
        # GPU endpoints are entered and left only through these edges (maybe dead ends).
        into_t = self._dedupe(self.pred[t]) if self.blocked[t] else []
        out_of_s = self._dedupe(self.succ[s]) if self.blocked[s] else []
        while True:
            while hf and hf[0][1] in done_f:
                heapq.heappop(hf)
            while hb and hb[0][1] in done_b:
                heapq.heappop(hb)
            if not hf or not hb or hf[0][0] + hb[0][0] >= mu:
                break
            if hf[0][0] <= hb[0][0]:
                heap, dist, lists, done, other, end = hf, df, pf, done_f, db, t
                d, x = heapq.heappop(heap)
                extra = [(t, w) if y == x else (y, self.dead_f.get((x, y))) for y, w in into_t]
                edges = itertools.chain(self.main_succ[x], extra)
            else:
                heap, dist, lists, done, other, end = hb, db, sb, done_b, df, s
                d, x = heapq.heappop(heap)
                extra = [(s, w) if y == x else (y, self.dead_b.get((y, x))) for y, w in out_of_s]
                edges = itertools.chain(self.main_pred[x], extra)
            done.add(x)
            if x == end:
                continue
            for y, w in edges:
                if w is None:
                    continue
                nd = d + w
                old = dist.get(y)
                if old is None or nd < old:
                    dist[y] = nd
                    lists[y] = [x]
                    heapq.heappush(heap, (nd, y))
                    across = other.get(y)
                    if across is not None and nd + across < mu:
                        mu = nd + across
                elif nd == old:
                    lists[y].append(x)
        if mu == _INF:
            return None
        small, large = (df, db) if len(df) <= len(db) else (db, df)
        meet = [v for v, d in small.items() if v in large and d + large[v] == mu]
        dag: dict[int, set[int]] = {}
        for lists, forward in ((pf, True), (sb, False)):
            stack, seen = list(meet), set(meet)
            while stack:
                y = stack.pop()
                for x in lists.get(y, ()):
                    a, b = (x, y) if forward else (y, x)
                    dag.setdefault(a, set()).add(b)
                    if x not in seen:
                        seen.add(x)
                        stack.append(x)
        return dag

    def _dedupe(self, edges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        out, seen = [], set()
        for j, w in edges:
            r = self.rep[j]
            if r not in seen:
                seen.add(r)
                out.append((r, w))
        return out


def _latency_ps(G: nx.DiGraph, u: Hashable, v: Hashable, data: dict) -> int:
    latency = data.get(LATENCY)
    if not isinstance(latency, (int, float)) or isinstance(latency, bool) or not latency > 0:
        raise TopologyValidationError(
            f"topology {G.graph.get(GRAPH_NAME, '<unnamed>')!r}: link {u!r} -> {v!r} has "
            f"{LATENCY} = {latency!r}; routing needs a number > 0 (seconds). Fix: set it, and "
            f"run validate_topology(G) for the other rules.")
    # At least 1 ps: a zero-cost edge would break the stopping rule of the search.
    return max(1, round(latency / LATENCY_RESOLUTION_S))
