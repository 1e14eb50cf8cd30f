"""The one place where topology attribute names, node kinds and link kinds are defined.

A topology is a `networkx.DiGraph`. Every physical link appears as two directed edges, one per
direction, so a link's bandwidth is per direction. The simulator imports these constants rather
than spelling the strings itself.

Node attributes

    ============== ======== ==========================================================
    name           type     meaning
    ============== ======== ==========================================================
    kind           str      one of NODE_KINDS (below); required on every node
    node_index     int      compute node (server) the device sits in; GPUs, NICs,
                            NVSwitches, PCIe switches and CPU hosts inside a server
    rack_index     int      group of servers behind the same leaf switch(es): a rack for
                            `multi_rack`, a scalable unit (SU) for `rail_optimized`;
                            also set on those leaf switches
    local_index    int      position inside the server (GPU i, NIC i); on a rail leaf,
                            the rail it serves
    gpu_index      int      global GPU order 0..N-1; `gpus(G)` returns GPUs in this order
    ============== ======== ==========================================================

Node kinds (`kind`)

    gpu          an accelerator, or a CPU process in `host_loopback`; the endpoints of routes.
                 Routes do not pass *through* a gpu unless the graph says `gpu_transit: true`.
    nic          a network adapter (one per GPU on HGX-class servers)
    nvswitch     the NVSwitch fabric of one server, modelled as one non-blocking switch
    pcie_switch  a PCIe switch
    host         a CPU socket / root complex, or the kernel side of a loopback device
    leaf         a first-tier network switch (top of rack, or one rail of a scalable unit)
    spine        a second-tier network switch

Edge attributes (one directed edge = one direction of a link)

    ====================== ===== ===============================================
    bandwidth_bytes_per_s  float bytes per second in this direction, > 0
    latency_s              float one-way propagation + switching latency, > 0
    link_kind              str   one of LINK_KINDS
    ====================== ===== ===============================================

Link kinds (`link_kind`): nvlink, pcie, network, inter_socket, loopback.

Graph attributes (`G.graph`)

    name                   str   topology name (preset name, file stem, or builder name)
    builder                str   builder that made the graph, absent for custom graphs
    params                 dict  the builder's parameters
    gpu_transit            bool  routes may pass through gpu nodes (direct-connect meshes)
    bisection_bytes_per_s  float closed-form bisection from the builder (see summary.py)
    bisection_note         str   how that closed form was obtained

Routing compares latencies in integer picoseconds (`LATENCY_RESOLUTION_S`) so that equal-cost
paths compare exactly equal; `Route.latency_s` is still the float sum of the edge latencies.
"""

from __future__ import annotations

from collections.abc import Hashable

import networkx as nx

__all__ = [
    "KIND", "NODE_INDEX", "RACK_INDEX", "LOCAL_INDEX", "GPU_INDEX",
    "BANDWIDTH", "LATENCY", "LINK_KIND",
    "GPU", "NIC", "NVSWITCH", "PCIE_SWITCH", "HOST", "LEAF", "SPINE", "NODE_KINDS",
    "NVLINK", "PCIE", "NETWORK", "INTER_SOCKET", "LOOPBACK", "LINK_KINDS",
    "GRAPH_NAME", "GRAPH_BUILDER", "GRAPH_PARAMS", "GRAPH_GPU_TRANSIT",
    "GRAPH_BISECTION", "GRAPH_BISECTION_NOTE", "NODE_TIERS", "LATENCY_RESOLUTION_S",
    "gpus", "is_gpu",
]

# node attributes
KIND = "kind"
NODE_INDEX = "node_index"
RACK_INDEX = "rack_index"
LOCAL_INDEX = "local_index"
GPU_INDEX = "gpu_index"

# edge attributes
BANDWIDTH = "bandwidth_bytes_per_s"
LATENCY = "latency_s"
LINK_KIND = "link_kind"

# node kinds
GPU = "gpu"
NIC = "nic"
NVSWITCH = "nvswitch"
PCIE_SWITCH = "pcie_switch"
HOST = "host"
LEAF = "leaf"
SPINE = "spine"
NODE_KINDS: tuple[str, ...] = (GPU, NIC, NVSWITCH, PCIE_SWITCH, HOST, LEAF, SPINE)

NODE_TIERS: dict[str, int] = {
    GPU: 0, NVSWITCH: 1, PCIE_SWITCH: 1, NIC: 2, HOST: 2, LEAF: 3, SPINE: 4,
}
"""Drawing and reporting order, from the GPUs up to the spine."""

# link kinds
NVLINK = "nvlink"
PCIE = "pcie"
NETWORK = "network"
INTER_SOCKET = "inter_socket"
LOOPBACK = "loopback"
LINK_KINDS: tuple[str, ...] = (NVLINK, PCIE, NETWORK, INTER_SOCKET, LOOPBACK)

# graph attributes
GRAPH_NAME = "name"
GRAPH_BUILDER = "builder"
GRAPH_PARAMS = "params"
GRAPH_GPU_TRANSIT = "gpu_transit"
GRAPH_BISECTION = "bisection_bytes_per_s"
GRAPH_BISECTION_NOTE = "bisection_note"

LATENCY_RESOLUTION_S = 1e-12
"""Routing rounds latencies to this resolution (1 ps) to compare path costs exactly."""


def is_gpu(G: nx.DiGraph, node: Hashable) -> bool:
    """True when `node` is a route endpoint (kind "gpu")."""
    return G.nodes[node].get(KIND) == GPU


def gpus(G: nx.DiGraph) -> list[Hashable]:
    """GPU nodes in their stable global order.

    The order is `gpu_index` when every GPU carries one (builders and loaders always set it),
    otherwise the graph's node insertion order.
    """
    found = [n for n, kind in G.nodes(data=KIND) if kind == GPU]
    indices = [G.nodes[n].get(GPU_INDEX) for n in found]
    if found and all(isinstance(i, int) for i in indices):
        return [n for _, n in sorted(zip(indices, found), key=lambda pair: pair[0])]
    return found
