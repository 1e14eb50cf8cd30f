"""Routing: hop counts, latencies and bottlenecks by hand; ECMP against networkx's enumeration."""

from __future__ import annotations

import itertools
import random

import networkx as nx
import pytest

from topologies import (
    Router, RoutingError, gpus, hgx_node, host_loopback, multi_rack, pcie_box, rail_optimized,
)
from topologies.schema import LATENCY

NV, PCIE, NET = 936.25e-9, 0.5e-6, 0.75e-6  # builder default latencies per link


@pytest.fixture(scope="module")
def rail():
    # 2 SUs x 2 servers x 2 GPUs, 3 spines, 2:1 uplinks
    return rail_optimized(num_nodes=4, gpus_per_node=2, nodes_per_su=2, num_spines=3,
                          oversubscription=2.0)


def test_intra_server_route_uses_nvswitch(rail):
    r = Router(rail).route("n0/gpu0", "n0/gpu1")
    assert r.links == (("n0/gpu0", "n0/nvswitch"), ("n0/nvswitch", "n0/gpu1"))
    assert (r.hops, r.link_kinds) == (2, ("nvlink", "nvlink"))
    assert r.latency_s == pytest.approx(2 * NV) and r.bottleneck_bytes_per_s == 450e9


def test_same_rail_same_unit_crosses_one_leaf(rail):
    r = Router(rail).route("n0/gpu1", "n1/gpu1")
    assert r.nodes == ("n0/gpu1", "n0/nic1", "su0/leaf1", "n1/nic1", "n1/gpu1")
    assert r.latency_s == pytest.approx(2 * PCIE + 2 * NET)
    assert r.bottleneck_bytes_per_s == 50e9


def test_other_unit_crosses_a_spine_at_the_uplink_bottleneck(rail):
    r = Router(rail).route("n0/gpu0", "n3/gpu0")
    assert r.hops == 6 and r.nodes[3].startswith("spine")
    assert r.latency_s == pytest.approx(2 * PCIE + 4 * NET)
    assert r.bottleneck_bytes_per_s == pytest.approx(2 * 50e9 / 2 / 3)


def test_cross_rail_goes_up_to_a_spine_not_through_another_gpu(rail):
    # NVLink to n0/gpu1 then rail 1 would be shorter, but GPUs do not forward traffic.
    r = Router(rail).route("n0/gpu0", "n1/gpu1")
    assert r.nodes[:3] == ("n0/gpu0", "n0/nic0", "su0/leaf0")
    assert r.nodes[-3:] == ("su0/leaf1", "n1/nic1", "n1/gpu1")
    assert r.hops == 6


def test_pcie_box_routes():
    router = Router(pcie_box())
    assert router.route("n0/gpu0", "n0/gpu1").hops == 2  # same switch
    r = router.route("n0/gpu0", "n0/gpu2")  # switch 0 -> cpu0 -> switch 1
    assert (r.hops, r.latency_s) == (4, pytest.approx(4 * PCIE))
    r = router.route("n0/gpu0", "n0/gpu7")  # ... -> cpu0 -> cpu1 -> switch 3
    assert r.nodes == ("n0/gpu0", "n0/pcie0", "n0/cpu0", "n0/cpu1", "n0/pcie3", "n0/gpu7")
    assert r.latency_s == pytest.approx(4 * PCIE + 0.2e-6)
    assert r.link_kinds == ("pcie", "pcie", "inter_socket", "pcie", "pcie")
    assert r.bottleneck_bytes_per_s == 31.5e9


def test_loopback_routes_share_the_one_device_edge():
    router = Router(host_loopback(num_processes=3, loopback_bytes_per_s=1e6,
                                  loopback_latency_s=1e-3, attach_latency_s=1e-6))
    for src, dst in itertools.permutations(["proc0", "proc1", "proc2"], 2):
        r = router.route(src, dst)
        assert r.links[1] == ("host/tx", "host/rx")
        assert (r.hops, r.bottleneck_bytes_per_s) == (3, 1e6)
        assert r.latency_s == pytest.approx(1e-3 + 2e-6)


def test_empty_route_to_self_and_caching(rail):
    router = Router(rail)
    r = router.route("n2/gpu0", "n2/gpu0")
    assert (r.links, r.hops, r.latency_s) == ((), 0, 0.0)
    assert r.bottleneck_bytes_per_s == float("inf")
    assert router.route("n0/gpu0", "n3/gpu1") is router.route("n0/gpu0", "n3/gpu1")
    assert router.num_cached == 2


def test_ecmp_is_deterministic_and_spreads_pairs():
    G = rail_optimized(num_nodes=8, gpus_per_node=2, nodes_per_su=2, num_spines=4)
    pairs = [(a, b) for a in gpus(G)[:4] for b in gpus(G)[8:]]
    first = [r.links for r in Router(G).routes(pairs)]
    again = [r.links for r in Router(G).routes(reversed(pairs))][::-1]
    assert first == again
    spines = {v for links in first for _, v in links if v.startswith("spine")}
    assert len(spines) > 1
    dag = Router(G).equal_cost_dag("n0/gpu0", "n4/gpu0")
    assert dag["su0/leaf0"] == ("spine0", "spine1", "spine2", "spine3")


def _all_shortest(G: nx.DiGraph, src, dst, transit: bool) -> set[tuple]:
    keep = [n for n in G if transit or G.nodes[n]["kind"] != "gpu" or n in (src, dst)]
    H = G.subgraph(keep)
    w = {e: max(1, round(d[LATENCY] / 1e-12)) for e, d in H.edges.items()}
    return set(map(tuple, nx.all_shortest_paths(H, src, dst, weight=lambda u, v, _: w[u, v])))


def _dag_paths(dag: dict, src, dst) -> set[tuple]:
    out: set[tuple] = set()

    def walk(node, path):
        if node == dst:
            out.add(tuple(path))
            return
        for nxt in dag[node]:
            walk(nxt, path + [nxt])

    walk(src, [src])
    return out


def _random_topology(seed: int, twins: bool = False) -> nx.DiGraph:
    rng = random.Random(seed)
    G = nx.DiGraph(name=f"random{seed}{'-twins' if twins else ''}",
                   gpu_transit=rng.random() < 0.3)
    num_gpus, num_switches = 5, 6
    for i in range(num_gpus):
        G.add_node(f"g{i}", kind="gpu")
    for i in range(num_switches):
        G.add_node(f"s{i}", kind="leaf")
    nodes = list(G)
    for u, v in itertools.combinations(nodes, 2):
        if rng.random() < 0.35:
            lat = rng.choice([1e-6, 2e-6, 3e-6])  # few values: many equal-cost ties
            for a, b in ((u, v), (v, u)):
                G.add_edge(a, b, bandwidth_bytes_per_s=rng.choice([1e9, 2e9]), latency_s=lat,
                           link_kind="network")
    if twins:  # copies of two switches with the same links: merged by the router's search
        for original in ("s0", "s1"):
            for k in range(2):
                twin = f"{original}-twin{k}"
                G.add_node(twin, kind="leaf")
                for _, v, data in list(G.out_edges(original, data=True)):
                    G.add_edge(twin, v, **data)
                for u, _, data in list(G.in_edges(original, data=True)):
                    G.add_edge(u, twin, **data)
    return G


@pytest.mark.parametrize("G", [
    hgx_node(num_gpus=4),
    rail_optimized(num_nodes=4, gpus_per_node=2, nodes_per_su=2, num_spines=3),
    multi_rack(num_racks=3, nodes_per_rack=2, gpus_per_node=2, nics_per_node=1, num_spines=2),
    pcie_box(),
    host_loopback(num_processes=3),
] + [_random_topology(seed) for seed in range(12)]
  + [_random_topology(seed, twins=True) for seed in range(12)], ids=lambda G: G.graph["name"])
def test_equal_cost_dag_is_exactly_the_set_of_shortest_paths(G):
    router = Router(G)
    transit = bool(G.graph.get("gpu_transit"))
    for src, dst in itertools.permutations(gpus(G), 2):
        try:
            expected = _all_shortest(G, src, dst, transit)
        except nx.NetworkXNoPath:
            with pytest.raises(RoutingError, match="no path from"):
                router.route(src, dst)
            continue
        assert _dag_paths(router.equal_cost_dag(src, dst), src, dst) == expected
        assert router.route(src, dst).nodes in expected


def test_routes_between_twin_switches(rail):
    # spines are interchangeable twins for GPU routes; between two of them a route still exists
    router = Router(rail)
    r = router.route("spine0", "spine2")
    assert r.hops == 2 and r.nodes[1].startswith("su") and r.latency_s == pytest.approx(2 * NET)
    assert set(router.equal_cost_dag("spine0", "spine2")["spine0"]) == {
        f"su{u}/leaf{k}" for u in range(2) for k in range(2)}
    assert router.route("spine1", "n3/gpu1").hops == 3


def test_routing_errors_name_the_problem():
    G = nx.DiGraph(name="split")
    for n in ("a", "b"):
        G.add_node(n, kind="gpu")
    router = Router(G)
    with pytest.raises(RoutingError, match=r"'zz' is not a node of topology 'split'"):
        router.route("a", "zz")
    with pytest.raises(RoutingError, match=r"no path from 'a' to 'b' in topology 'split' "
                                           r"without passing through another GPU"):
        router.route("a", "b")


def test_router_rejects_missing_latency():
    G = nx.DiGraph(name="bad")
    G.add_node("a", kind="gpu")
    G.add_node("b", kind="gpu")
    G.add_edge("a", "b", bandwidth_bytes_per_s=1e9, link_kind="nvlink")
    with pytest.raises(ValueError, match=r"link 'a' -> 'b' has latency_s = None"):
        Router(G)
