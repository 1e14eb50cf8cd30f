"""Builders: node and link counts, attributes and bandwidths worked out by hand."""

from __future__ import annotations

import collections

import pytest

from topologies import (
    TopologySpecError, gpus, hgx_node, host_loopback, multi_rack, pcie_box, rail_optimized,
    validate_topology,
)
from topologies.schema import BANDWIDTH, LATENCY, LINK_KIND


def kinds(G):
    return dict(collections.Counter(kind for _, kind in G.nodes(data="kind")))


def link_kinds(G):
    return dict(collections.Counter(kind for _, _, kind in G.edges(data=LINK_KIND)))


def test_hgx_node_counts_and_bandwidths():
    G = hgx_node()
    assert kinds(G) == {"gpu": 8, "nic": 8, "nvswitch": 1}
    # 8 GPU<->NVSwitch and 8 GPU<->NIC links, two directed edges each
    assert link_kinds(G) == {"nvlink": 16, "pcie": 16}
    assert G.edges["n0/gpu3", "n0/nvswitch"][BANDWIDTH] == 450e9
    assert G.edges["n0/nvswitch", "n0/gpu3"][BANDWIDTH] == 450e9
    assert G.edges["n0/gpu3", "n0/nic3"][LATENCY] == 0.5e-6
    assert gpus(G) == [f"n0/gpu{i}" for i in range(8)]
    assert G.graph["builder"] == "hgx_node" and G.graph["params"]["num_gpus"] == 8
    validate_topology(G)


def test_every_physical_link_has_both_directions_with_equal_attributes():
    G = rail_optimized(num_nodes=4, gpus_per_node=2, nodes_per_su=2, num_spines=3)
    for u, v, data in G.edges(data=True):
        assert G.edges[v, u] == data


def test_rail_optimized_small_case():
    G = rail_optimized(num_nodes=4, gpus_per_node=2, nodes_per_su=2, num_spines=3,
                       oversubscription=2.0)
    # 2 SUs x 2 rails = 4 leaves
    assert kinds(G) == {"gpu": 8, "nic": 8, "nvswitch": 4, "leaf": 4, "spine": 3}
    # gpu-nvswitch 8, gpu-nic 8, nic-leaf 8, leaf-spine 4*3 physical links, doubled
    assert link_kinds(G) == {"nvlink": 16, "pcie": 16, "network": 16 + 24}
    # GPU r of every server is on rail r of its SU
    assert G.has_edge("n3/nic1", "su1/leaf1") and G.has_edge("n0/nic0", "su0/leaf0")
    assert not G.has_edge("n0/nic0", "su0/leaf1")
    # leaf uplink: 2 servers * 50 GB/s / oversubscription 2, split over 3 spines
    assert G.edges["su0/leaf0", "spine2"][BANDWIDTH] == pytest.approx(2 * 50e9 / 2 / 3)
    assert G.nodes["n2/gpu1"]["rack_index"] == 1 and G.nodes["su1/leaf0"]["local_index"] == 0
    assert [G.nodes[g]["gpu_index"] for g in gpus(G)] == list(range(8))
    validate_topology(G)


def test_rail_optimized_partial_last_unit():
    G = rail_optimized(num_nodes=3, gpus_per_node=1, nodes_per_su=2, num_spines=1)
    assert kinds(G)["leaf"] == 2
    assert G.has_edge("n2/nic0", "su1/leaf0")


def test_multi_rack_small_case_with_shared_nics():
    G = multi_rack(num_racks=2, nodes_per_rack=2, gpus_per_node=2, nics_per_node=1,
                   num_spines=1, rack_uplink_bytes_per_s=40e9)
    assert kinds(G) == {"gpu": 8, "nic": 4, "nvswitch": 4, "leaf": 2, "spine": 1}
    assert link_kinds(G) == {"nvlink": 16, "pcie": 16, "network": 8 + 4}
    assert G.has_edge("n1/gpu0", "n1/nic0") and G.has_edge("n1/gpu1", "n1/nic0")
    assert G.has_edge("n3/nic0", "rack1/leaf")
    assert G.edges["rack0/leaf", "spine0"][BANDWIDTH] == 40e9
    validate_topology(G)


def test_multi_rack_oversubscription_sets_uplink():
    G = multi_rack(num_racks=2, nodes_per_rack=4, num_spines=2, oversubscription=4.0)
    rack_nics = 4 * 8 * 50e9
    assert G.edges["rack1/leaf", "spine1"][BANDWIDTH] == pytest.approx(rack_nics / 4.0 / 2)


def test_pcie_box_layout():
    G = pcie_box()
    assert kinds(G) == {"gpu": 8, "pcie_switch": 4, "host": 2}
    assert link_kinds(G) == {"pcie": 16 + 8, "inter_socket": 2}
    assert G.has_edge("n0/gpu5", "n0/pcie2") and G.has_edge("n0/pcie2", "n0/cpu1")
    assert G.has_edge("n0/pcie1", "n0/cpu0")
    validate_topology(G)


def test_host_loopback_has_one_shared_edge():
    G = host_loopback(num_processes=3, loopback_bytes_per_s=1e6, loopback_latency_s=1e-3)
    assert kinds(G) == {"gpu": 3, "host": 2}
    assert G.number_of_edges() == 1 + 2 * 3
    assert G.edges["host/tx", "host/rx"][LATENCY] == 1e-3
    assert not G.has_edge("host/rx", "host/tx")
    assert all(G.edges[e][BANDWIDTH] == 1e6 for e in G.edges)
    validate_topology(G)


@pytest.mark.parametrize(("builder", "kwargs", "message"), [
    (hgx_node, {"num_gpus": 0}, r"hgx_node: num_gpus = 0 .* integer >= 1"),
    (hgx_node, {"nvlink_bytes_per_s": -1.0}, r"nvlink_bytes_per_s = -1.0 .* > 0"),
    (rail_optimized, {"num_nodes": 2, "num_spines": 0}, r"num_spines = 0"),
    (rail_optimized, {"num_nodes": 2.5}, r"num_nodes = 2.5 .* integer"),
    (multi_rack, {"num_racks": 2, "nodes_per_rack": 2, "rack_uplink_bytes_per_s": 1e9,
                  "oversubscription": 2.0}, r"both rack_uplink_bytes_per_s and oversubscription"),
    (multi_rack, {"num_racks": 1, "nodes_per_rack": 1, "nics_per_node": 9},
     r"nics_per_node = 9 exceeds gpus_per_node = 8"),
    (multi_rack, {"num_racks": 1, "nodes_per_rack": 1, "oversubscription": 0.0},
     r"oversubscription = 0.0"),
    (pcie_box, {"num_gpus": 2, "gpus_per_switch": 2, "num_sockets": 2},
     r"num_sockets = 2 exceeds the 1 PCIe switches"),
    (host_loopback, {"loopback_latency_s": float("inf")}, r"loopback_latency_s = inf"),
])
def test_bad_builder_arguments_are_named(builder, kwargs, message):
    with pytest.raises(TopologySpecError, match=message):
        builder(**kwargs)
