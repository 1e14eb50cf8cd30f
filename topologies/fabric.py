"""Pieces the builders share: a bidirectional link, an HGX-class server, a leaf/spine tier.

These helpers add to a graph in place; the public builders in `builders.py` are the pure
functions users call. Node names follow one scheme so that a person can read a route:

    n{node}/gpu{i}, n{node}/nic{i}, n{node}/nvswitch     inside server `node`
    su{unit}/leaf{rail}                                  rail leaf of a scalable unit
    rack{r}/leaf                                         top-of-rack leaf
    spine{k}                                             spine switch k

An HGX-class server is modelled as: every GPU linked to one logical NVSwitch node (the
physical server has four NVSwitch chips on H100/H200, six on A100, that together are
non-blocking, so one node with a per-GPU link of the per-GPU NVLink bandwidth is exact for
bandwidth), and every GPU linked over PCIe to its NIC (the PCIe switch between them is folded
into that link).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import networkx as nx

from topologies.schema import (
    BANDWIDTH, GPU, GPU_INDEX, KIND, LATENCY, LINK_KIND, LOCAL_INDEX, NIC, NODE_INDEX,
    NVLINK, NVSWITCH, PCIE, RACK_INDEX, SPINE,
)

__all__ = ["add_link", "add_hgx_server", "add_spines", "connect_leaf_to_spines",
           "gpu_name", "nic_name"]


def add_link(G: nx.DiGraph, u: Hashable, v: Hashable, *, bandwidth_bytes_per_s: float,
             latency_s: float, link_kind: str) -> None:
    """Add both directions of one physical link with the same bandwidth and latency."""
    G.add_edge(u, v, **{BANDWIDTH: bandwidth_bytes_per_s, LATENCY: latency_s, LINK_KIND: link_kind})
    G.add_edge(v, u, **{BANDWIDTH: bandwidth_bytes_per_s, LATENCY: latency_s, LINK_KIND: link_kind})


def gpu_name(node_index: int, local_index: int) -> str:
    """Name of GPU `local_index` of server `node_index`."""
    return f"n{node_index}/gpu{local_index}"


def nic_name(node_index: int, local_index: int) -> str:
    """Name of NIC `local_index` of server `node_index`."""
    return f"n{node_index}/nic{local_index}"


def add_hgx_server(G: nx.DiGraph, *, node_index: int, rack_index: int | None, first_gpu_index: int,
                   gpus_per_node: int, nics_per_node: int, nvlink_bytes_per_s: float,
                   nvlink_latency_s: float, pcie_bytes_per_s: float,
                   pcie_latency_s: float) -> list[str]:
    """Add one NVSwitch server and return its NIC names in local order.

    GPU i uses NIC `i * nics_per_node // gpus_per_node`, so with one NIC per GPU each GPU has
    its own NIC and with fewer NICs neighbouring GPUs share one.
    """
    where = {NODE_INDEX: node_index}
    if rack_index is not None:
        where[RACK_INDEX] = rack_index
    switch = f"n{node_index}/nvswitch"
    G.add_node(switch, **{KIND: NVSWITCH}, **where)
    nics = [nic_name(node_index, i) for i in range(nics_per_node)]
    for i, nic in enumerate(nics):
        G.add_node(nic, **{KIND: NIC, LOCAL_INDEX: i}, **where)
    for i in range(gpus_per_node):
        gpu = gpu_name(node_index, i)
        G.add_node(gpu, **{KIND: GPU, LOCAL_INDEX: i, GPU_INDEX: first_gpu_index + i}, **where)
        add_link(G, gpu, switch, bandwidth_bytes_per_s=nvlink_bytes_per_s,
                 latency_s=nvlink_latency_s, link_kind=NVLINK)
        add_link(G, gpu, nics[i * nics_per_node // gpus_per_node],
                 bandwidth_bytes_per_s=pcie_bytes_per_s, latency_s=pcie_latency_s, link_kind=PCIE)
    return nics


def add_spines(G: nx.DiGraph, num_spines: int) -> list[str]:
    """Add `num_spines` spine switches and return their names."""
    spines = [f"spine{k}" for k in range(num_spines)]
    for spine in spines:
        G.add_node(spine, **{KIND: SPINE})
    return spines


def connect_leaf_to_spines(G: nx.DiGraph, leaf: str, spines: Sequence[str], *,
                           uplink_bytes_per_s: float, latency_s: float, link_kind: str) -> None:
    """Link `leaf` to every spine, splitting its total uplink bandwidth evenly over them."""
    per_spine = uplink_bytes_per_s / len(spines)
    for spine in spines:
        add_link(G, leaf, spine, bandwidth_bytes_per_s=per_spine, latency_s=latency_s,
                 link_kind=link_kind)
