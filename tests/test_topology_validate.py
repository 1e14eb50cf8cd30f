"""Topology rules: each broken rule raises one message naming the node or link."""

from __future__ import annotations

import networkx as nx
import pytest

from topologies import TopologyValidationError, hgx_node, validate_topology


def star(num_gpus: int = 3) -> nx.DiGraph:
    G = nx.DiGraph(name="star")
    G.add_node("sw", kind="nvswitch")
    for i in range(num_gpus):
        G.add_node(f"g{i}", kind="gpu", gpu_index=i)
        for u, v in ((f"g{i}", "sw"), ("sw", f"g{i}")):
            G.add_edge(u, v, bandwidth_bytes_per_s=1e9, latency_s=1e-6, link_kind="nvlink")
    return G


def test_valid_graphs_pass():
    validate_topology(star())
    validate_topology(hgx_node())


def _broken(change):
    G = star()
    change(G)
    return G


@pytest.mark.parametrize(("change", "message"), [
    (lambda G: G.nodes["sw"].pop("kind"), r"topology 'star': node 'sw' has no 'kind' attribute"),
    (lambda G: G.nodes["sw"].update(kind="router"), r"node 'sw' has kind 'router', which is not"),
    (lambda G: G.nodes["g1"].update(node_index=-1), r"node 'g1' has node_index = -1"),
    (lambda G: G.nodes["g1"].update(rack_index="r1"), r"node 'g1' has rack_index = 'r1'"),
    (lambda G: G.nodes["g1"].pop("gpu_index"), r"GPU 'g1' has no gpu_index while other GPUs"),
    (lambda G: G.nodes["g2"].update(gpu_index=0),
     r"GPU 'g2' has gpu_index 0 \(also on 'g0'\); gpu_index must number the 3 GPUs 0..2"),
    (lambda G: G.edges["g0", "sw"].pop("bandwidth_bytes_per_s"),
     r"link 'g0' -> 'sw' has no bandwidth_bytes_per_s"),
    (lambda G: G.edges["sw", "g1"].update(latency_s=-1e-6),
     r"link 'sw' -> 'g1' has latency_s = -1e-06; it must be a finite number > 0 in seconds"),
    (lambda G: G.edges["sw", "g1"].update(latency_s="1e-6"), r"latency_s = '1e-6'"),
    (lambda G: G.edges["sw", "g1"].update(link_kind="infiniband"),
     r"link 'sw' -> 'g1' has link_kind 'infiniband'; it must be one of nvlink"),
    (lambda G: G.add_edge("sw", "sw", bandwidth_bytes_per_s=1, latency_s=1, link_kind="nvlink"),
     r"link 'sw' -> 'sw' is a self-loop"),
    (lambda G: G.remove_edge("sw", "g2"), r"GPU 'g0' cannot reach GPU 'g2' along directed links "
                                          r"without passing through another GPU"),
    (lambda G: [G.nodes[n].update(kind="nic") for n in ("g0", "g1", "g2")],
     r"has no node of kind 'gpu'"),
])
def test_broken_rules_are_named(change, message):
    with pytest.raises(TopologyValidationError, match=message):
        validate_topology(_broken(change))


def test_direct_gpu_chain_needs_gpu_transit():
    G = nx.DiGraph(name="chain")
    for n in "abc":
        G.add_node(n, kind="gpu")
    for u, v in (("a", "b"), ("b", "c")):
        for x, y in ((u, v), (v, u)):
            G.add_edge(x, y, bandwidth_bytes_per_s=1e9, latency_s=1e-6, link_kind="nvlink")
    with pytest.raises(TopologyValidationError, match=r"GPU 'a' cannot reach GPU 'c'.*set "
                                                      r"gpu_transit: true"):
        validate_topology(G)
    G.graph["gpu_transit"] = True
    validate_topology(G)


def test_one_way_reachability_is_checked_per_direction():
    G = star(2)
    G.remove_edge("g1", "sw")  # g1 can still receive but not send
    with pytest.raises(TopologyValidationError, match=r"GPU 'g1' cannot reach GPU 'g0'"):
        validate_topology(G)


def test_multigraph_is_rejected():
    with pytest.raises(TopologyValidationError, match=r"expected a networkx.DiGraph, got "
                                                      r"MultiDiGraph"):
        validate_topology(nx.MultiDiGraph())
