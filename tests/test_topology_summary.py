"""Bisection bandwidth (closed forms vs brute force), oversubscription and summary counts."""

from __future__ import annotations

import itertools

import networkx as nx
import pytest

from topologies import (
    bisection_bytes_per_s, cut_flow_bytes_per_s, gpus, hgx_node, host_loopback,
    leaf_oversubscription, load_topology, multi_rack, pcie_box, rail_optimized, summarize,
)
from topologies.schema import GRAPH_BISECTION


def brute_force_bisection(G: nx.DiGraph) -> float:
    """Minimum cut flow over every balanced bipartition (small graphs only)."""
    order = gpus(G)
    return min(cut_flow_bytes_per_s(G, side) for side in
               itertools.combinations(order, len(order) // 2))


@pytest.mark.parametrize(("G", "by_hand"), [
    (hgx_node(), 4 * 450e9),  # four GPUs each send at the NVLink bandwidth
    (host_loopback(num_processes=4, loopback_bytes_per_s=2e6), 2e6),  # the one shared edge
    # one SU, 1:1: half the servers (2 GPUs) each at min(NIC 50, PCIe 63) GB/s
    (rail_optimized(num_nodes=2, gpus_per_node=2, nodes_per_su=2, num_spines=1), 2 * 50e9),
    # two SUs, 2:1: each SU's 2 leaves carry 1 server * 50 / 2 up -> 2 * 25 GB/s
    (rail_optimized(num_nodes=2, gpus_per_node=2, nodes_per_su=1, num_spines=2,
                    oversubscription=2.0), 2 * 25e9),
    # four SUs, 3:1 -> half the GPUs (4) at 50/3 GB/s
    (rail_optimized(num_nodes=4, gpus_per_node=2, nodes_per_su=1, num_spines=1,
                    oversubscription=3.0), 4 * 50e9 / 3),
    # racks: each rack has 2 servers * one 50 GB/s NIC = 100, uplink 40 -> 40 GB/s
    (multi_rack(num_racks=2, nodes_per_rack=2, gpus_per_node=2, nics_per_node=1,
                rack_uplink_bytes_per_s=40e9), 40e9),
    # three non-blocking racks of 2 one-GPU servers: half the 6 servers at one 50 GB/s NIC
    (multi_rack(num_racks=3, nodes_per_rack=2, gpus_per_node=1, nics_per_node=1), 3 * 50e9),
    # one rack of 4 servers with one NIC each: 2 servers * 50 GB/s
    (multi_rack(num_racks=1, nodes_per_rack=4, gpus_per_node=2, nics_per_node=1), 2 * 50e9),
])
def test_closed_forms_match_hand_values_and_brute_force(G, by_hand):
    value, note = bisection_bytes_per_s(G)
    assert G.graph[GRAPH_BISECTION] == pytest.approx(by_hand)
    assert value == pytest.approx(by_hand) and note.startswith("closed form")
    assert brute_force_bisection(G) == pytest.approx(by_hand)


def test_builder_outside_closed_forms_falls_back_to_max_flow():
    # three servers in three SUs with 2:1 uplinks: no closed form. The half split (3 GPUs)
    # cuts server 1 in two: its NVLink (450) plus n0's two NICs and n1/gpu0's NIC limited by
    # the 2:1 uplinks (3 * 25) -> 525 GB/s, which is also the minimum over all cuts here.
    G = rail_optimized(num_nodes=3, gpus_per_node=2, nodes_per_su=1, num_spines=1,
                       oversubscription=2.0)
    assert GRAPH_BISECTION not in G.graph
    value, note = bisection_bytes_per_s(G)
    assert "max-flow" in note and "upper bound" in note
    assert value == pytest.approx(525e9)
    assert brute_force_bisection(G) == pytest.approx(525e9)


def test_pcie_box_bisection_is_the_socket_link():
    # half split = one socket: min(two 31.5 GB/s switch uplinks, the 62 GB/s socket link)
    G = pcie_box()
    value, note = bisection_bytes_per_s(G)
    assert value == pytest.approx(62e9) and "max-flow" in note
    assert brute_force_bisection(G) == pytest.approx(62e9)


def test_cut_flow_by_hand():
    # a -- b -- c joined by direct 10 GB/s GPU links: {b} -> {a, c} uses both of b's links,
    # {a} -> {b, c} only a's one link.
    G = nx.DiGraph(name="line")
    for n in "abc":
        G.add_node(n, kind="gpu")
    for u, v in (("a", "b"), ("b", "c")):
        for x, y in ((u, v), (v, u)):
            G.add_edge(x, y, bandwidth_bytes_per_s=10e9, latency_s=1e-6, link_kind="nvlink")
    assert cut_flow_bytes_per_s(G, ["b"]) == pytest.approx(20e9)
    assert cut_flow_bytes_per_s(G, ["a"]) == pytest.approx(10e9)
    assert cut_flow_bytes_per_s(G, ["a", "c"]) == pytest.approx(20e9)


def test_leaf_oversubscription():
    assert leaf_oversubscription(hgx_node()) is None
    G = multi_rack(num_racks=2, nodes_per_rack=2, gpus_per_node=2, nics_per_node=1,
                   rack_uplink_bytes_per_s=40e9)
    assert leaf_oversubscription(G) == pytest.approx((2.5, 2.5))  # 100 GB/s down, 40 up
    G = rail_optimized(num_nodes=4, gpus_per_node=2, nodes_per_su=2, num_spines=3,
                       oversubscription=2.0)
    assert leaf_oversubscription(G) == pytest.approx((2.0, 2.0))


def test_summary_of_two_rack_preset():
    s = summarize(load_topology("two-rack-h100"))
    assert (s.num_gpus, s.num_servers, s.num_racks) == (64, 8, 2)
    assert s.node_counts == {"gpu": 64, "nic": 64, "nvswitch": 8, "leaf": 2, "spine": 1}
    # 64 NIC<->leaf and 2 leaf<->spine links, both directions
    assert s.link_counts == {"nvlink": 128, "pcie": 128, "network": 132}
    # rack: 32 NICs * 50 GB/s = 1.6 TB/s down, 2:1 -> 800 GB/s up
    assert s.link_bandwidth_range["network"] == (50e9, 800e9)
    assert s.bisection_bytes_per_s == pytest.approx(800e9)
    assert s.oversubscription == pytest.approx((2.0, 2.0))
    d = s.to_dict()
    assert d["num_gpus"] == 64 and d["oversubscription"] == [2.0, 2.0]


def test_summary_counts_servers_without_node_index():
    G = nx.DiGraph(name="bare")
    for n in "ab":
        G.add_node(n, kind="gpu")
    G.add_node("s", kind="leaf")
    for n in "ab":
        for u, v in ((n, "s"), ("s", n)):
            G.add_edge(u, v, bandwidth_bytes_per_s=1e9, latency_s=1e-6, link_kind="network")
    s = summarize(G)
    assert (s.num_servers, s.num_racks) == (2, None)
    assert s.bisection_bytes_per_s == pytest.approx(1e9)
    assert s.oversubscription is None  # a leaf without uplinks
