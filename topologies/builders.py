"""Builders: pure functions from a few numbers to a topology graph.

Each builder returns a fresh `nx.DiGraph` (attribute names in `schema.py`), checks its
arguments at entry (a `TopologySpecError` naming the parameter), records its name and
parameters in `G.graph`, and, where the structure allows, its bisection bandwidth in closed
form (definition in `summary.py`; each closed form is checked against max-flow over every
balanced cut on small cases in tests/test_topology_summary.py).

Server defaults are the DGX H100 numbers of `presets/dgx-h100.yaml`, where each has its
public source; latencies are assumptions to be replaced by calibration (see that file).

    hgx_node()                          one 8-GPU NVSwitch server
    rail_optimized(num_nodes=128)       GPU i of every server on rail leaf i, leaves under spines
    multi_rack(num_racks=2, nodes_per_rack=4, oversubscription=2.0)
    pcie_box()                          GPUs under PCIe switches under CPU sockets
    host_loopback(num_processes=4)      K CPU processes sharing one loopback device
"""

from __future__ import annotations

import math
from collections.abc import Callable

import networkx as nx

from topologies.errors import TopologySpecError
from topologies.fabric import add_hgx_server, add_link, add_spines, connect_leaf_to_spines
from topologies.schema import (
    GPU, GPU_INDEX, GRAPH_BISECTION, GRAPH_BISECTION_NOTE, GRAPH_BUILDER, GRAPH_NAME,
    GRAPH_PARAMS, HOST, INTER_SOCKET, KIND, LEAF, LOCAL_INDEX, LOOPBACK, NETWORK, NODE_INDEX,
    PCIE, PCIE_SWITCH, RACK_INDEX,
)

__all__ = ["hgx_node", "rail_optimized", "multi_rack", "pcie_box", "host_loopback", "BUILDERS"]

# DGX H100 defaults; presets/dgx-h100.yaml carries the source of each.
NVLINK_BYTES_PER_S = 450e9
NVLINK_LATENCY_S = 936.25e-9
NIC_BYTES_PER_S = 50e9
PCIE_GEN5_BYTES_PER_S = 63.0e9
PCIE_LATENCY_S = 0.5e-6
NETWORK_LATENCY_S = 0.75e-6


def _check_int(builder: str, name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TopologySpecError(
            f"{builder}: {name} = {value!r} is not allowed; it must be an integer >= {minimum}. "
            f"Fix: set {name} to a whole number >= {minimum}.")


def _check_positive(builder: str, name: str, value: object) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise TopologySpecError(
            f"{builder}: {name} = {value!r} is not allowed; it must be a finite number > 0 "
            f"(SI units: bytes/s or seconds). Fix: give a positive number, e.g. 4.5e11.")


def _check_server(builder: str, **values: object) -> None:
    for name, value in values.items():
        _check_positive(builder, name, value)


def _finish(G: nx.DiGraph, builder: str, params: dict[str, object],
            bisection: float | None, note: str) -> nx.DiGraph:
    G.graph[GRAPH_NAME] = builder
    G.graph[GRAPH_BUILDER] = builder
    G.graph[GRAPH_PARAMS] = dict(params)
    if bisection is not None:
        G.graph[GRAPH_BISECTION] = float(bisection)
        G.graph[GRAPH_BISECTION_NOTE] = note
    return G


def hgx_node(*, num_gpus: int = 8, nvlink_bytes_per_s: float = NVLINK_BYTES_PER_S,
             nvlink_latency_s: float = NVLINK_LATENCY_S,
             pcie_bytes_per_s: float = PCIE_GEN5_BYTES_PER_S,
             pcie_latency_s: float = PCIE_LATENCY_S) -> nx.DiGraph:
    """One HGX/DGX-class server: `num_gpus` GPUs on one NVSwitch, one NIC per GPU.

    The NICs are present (GPU -> NIC over PCIe) but lead nowhere; clusters add the network.
    Bisection: floor(num_gpus / 2) * nvlink_bytes_per_s.
    """
    params = dict(locals())
    _check_int("hgx_node", "num_gpus", num_gpus, 1)
    _check_server("hgx_node", nvlink_bytes_per_s=nvlink_bytes_per_s,
                  nvlink_latency_s=nvlink_latency_s, pcie_bytes_per_s=pcie_bytes_per_s,
                  pcie_latency_s=pcie_latency_s)
    G = nx.DiGraph()
    add_hgx_server(G, node_index=0, rack_index=None, first_gpu_index=0, gpus_per_node=num_gpus,
                   nics_per_node=num_gpus, nvlink_bytes_per_s=nvlink_bytes_per_s,
                   nvlink_latency_s=nvlink_latency_s, pcie_bytes_per_s=pcie_bytes_per_s,
                   pcie_latency_s=pcie_latency_s)
    bisection = (num_gpus // 2) * nvlink_bytes_per_s if num_gpus >= 2 else None
    return _finish(G, "hgx_node", params, bisection,
                   "closed form: floor(N/2) GPUs each sending at the NVLink bandwidth")


def rail_optimized(*, num_nodes: int, gpus_per_node: int = 8, nodes_per_su: int = 32,
                   num_spines: int = 16, oversubscription: float = 1.0,
                   nvlink_bytes_per_s: float = NVLINK_BYTES_PER_S,
                   nvlink_latency_s: float = NVLINK_LATENCY_S,
                   nic_bytes_per_s: float = NIC_BYTES_PER_S,
                   pcie_bytes_per_s: float = PCIE_GEN5_BYTES_PER_S,
                   pcie_latency_s: float = PCIE_LATENCY_S,
                   network_latency_s: float = NETWORK_LATENCY_S) -> nx.DiGraph:
    """A rail-optimized cluster with a two-tier leaf/spine fabric.

    Servers are grouped into scalable units (SUs) of `nodes_per_su` (the last may be partial);
    SU u has one leaf per rail, `su{u}/leaf{r}`, and NIC r of every server of the SU connects
    to it (GPU r -> rail r). Every leaf connects to every spine; its total uplink bandwidth is
    `nodes_per_su * nic_bytes_per_s / oversubscription`, split evenly over the spines.
    `rack_index` on servers and leaves is the SU index.
    """
    params = dict(locals())
    name = "rail_optimized"
    for key, low in (("num_nodes", 1), ("gpus_per_node", 1), ("nodes_per_su", 1),
                     ("num_spines", 1)):
        _check_int(name, key, params[key], low)
    _check_server(name, oversubscription=oversubscription, nvlink_bytes_per_s=nvlink_bytes_per_s,
                  nvlink_latency_s=nvlink_latency_s, nic_bytes_per_s=nic_bytes_per_s,
                  pcie_bytes_per_s=pcie_bytes_per_s, pcie_latency_s=pcie_latency_s,
                  network_latency_s=network_latency_s)
    G = nx.DiGraph()
    num_sus = -(-num_nodes // nodes_per_su)
    spines = add_spines(G, num_spines)
    uplink = nodes_per_su * nic_bytes_per_s / oversubscription
    for unit in range(num_sus):
        for rail in range(gpus_per_node):
            leaf = f"su{unit}/leaf{rail}"
            G.add_node(leaf, **{KIND: LEAF, RACK_INDEX: unit, LOCAL_INDEX: rail})
            connect_leaf_to_spines(G, leaf, spines, uplink_bytes_per_s=uplink,
                                   latency_s=network_latency_s, link_kind=NETWORK)
    for node in range(num_nodes):
        unit = node // nodes_per_su
        nics = add_hgx_server(G, node_index=node, rack_index=unit,
                              first_gpu_index=node * gpus_per_node, gpus_per_node=gpus_per_node,
                              nics_per_node=gpus_per_node, nvlink_bytes_per_s=nvlink_bytes_per_s,
                              nvlink_latency_s=nvlink_latency_s, pcie_bytes_per_s=pcie_bytes_per_s,
                              pcie_latency_s=pcie_latency_s)
        for rail, nic in enumerate(nics):
            add_link(G, nic, f"su{unit}/leaf{rail}", bandwidth_bytes_per_s=nic_bytes_per_s,
                     latency_s=network_latency_s, link_kind=NETWORK)
    bisection, note = _rail_bisection(num_nodes, gpus_per_node, nodes_per_su, num_sus,
                                      oversubscription, nvlink_bytes_per_s, nic_bytes_per_s,
                                      pcie_bytes_per_s)
    return _finish(G, name, params, bisection, note)


def _rail_bisection(num_nodes: int, gpus_per_node: int, nodes_per_su: int, num_sus: int,
                    oversubscription: float, nvlink: float, nic: float,
                    pcie: float) -> tuple[float | None, str]:
    # Splitting a server is never cheaper than cutting between servers while NVLink is at
    # least as fast as a GPU's network path; outside that regime we give no closed form.
    nic_path = min(nic, pcie)
    if nvlink < nic_path or num_nodes % 2:
        return None, ""
    half_gpus = num_nodes * gpus_per_node // 2
    if oversubscription <= 1 or num_sus == 1:
        return half_gpus * nic_path, ("closed form: half the servers, each GPU sending at "
                                      "min(NIC, PCIe); the leaf/spine tier is non-blocking")
    if num_sus % 2 == 0 and num_nodes == num_sus * nodes_per_su:
        return half_gpus * min(nic_path, nic / oversubscription), (
            "closed form: half the scalable units, each leaf limited to its uplink "
            "(NIC bandwidth / oversubscription per GPU)")
    return None, ""


def multi_rack(*, num_racks: int, nodes_per_rack: int, gpus_per_node: int = 8,
               nics_per_node: int = 8, num_spines: int = 1,
               rack_uplink_bytes_per_s: float | None = None,
               oversubscription: float | None = None,
               nvlink_bytes_per_s: float = NVLINK_BYTES_PER_S,
               nvlink_latency_s: float = NVLINK_LATENCY_S,
               nic_bytes_per_s: float = NIC_BYTES_PER_S,
               pcie_bytes_per_s: float = PCIE_GEN5_BYTES_PER_S,
               pcie_latency_s: float = PCIE_LATENCY_S,
               network_latency_s: float = NETWORK_LATENCY_S) -> nx.DiGraph:
    """Racks of NVSwitch servers, one top-of-rack leaf each, leaves joined by spine(s).

    Give the rack uplink either as `rack_uplink_bytes_per_s` (per direction, summed over the
    rack's spine links) or as `oversubscription` (rack NIC bandwidth / uplink bandwidth); with
    neither, oversubscription is 1 (non-blocking). Servers are numbered rack by rack.
    """
    params = dict(locals())
    name = "multi_rack"
    for key, low in (("num_racks", 1), ("nodes_per_rack", 1), ("gpus_per_node", 1),
                     ("nics_per_node", 1), ("num_spines", 1)):
        _check_int(name, key, params[key], low)
    if nics_per_node > gpus_per_node:
        raise TopologySpecError(
            f"multi_rack: nics_per_node = {nics_per_node} exceeds gpus_per_node = "
            f"{gpus_per_node}; every NIC must serve at least one GPU. Fix: lower nics_per_node.")
    if rack_uplink_bytes_per_s is not None and oversubscription is not None:
        raise TopologySpecError(
            "multi_rack: both rack_uplink_bytes_per_s and oversubscription are set; they say the "
            "same thing twice. Fix: keep one of them.")
    _check_server(name, nvlink_bytes_per_s=nvlink_bytes_per_s, nvlink_latency_s=nvlink_latency_s,
                  nic_bytes_per_s=nic_bytes_per_s, pcie_bytes_per_s=pcie_bytes_per_s,
                  pcie_latency_s=pcie_latency_s, network_latency_s=network_latency_s)
    rack_nic_bytes_per_s = nodes_per_rack * nics_per_node * nic_bytes_per_s
    if rack_uplink_bytes_per_s is None:
        _check_positive(name, "oversubscription", 1.0 if oversubscription is None
                        else oversubscription)
        rack_uplink_bytes_per_s = rack_nic_bytes_per_s / (oversubscription or 1.0)
    _check_positive(name, "rack_uplink_bytes_per_s", rack_uplink_bytes_per_s)
    G = nx.DiGraph()
    spines = add_spines(G, num_spines)
    for rack in range(num_racks):
        leaf = f"rack{rack}/leaf"
        G.add_node(leaf, **{KIND: LEAF, RACK_INDEX: rack})
        connect_leaf_to_spines(G, leaf, spines, uplink_bytes_per_s=rack_uplink_bytes_per_s,
                               latency_s=network_latency_s, link_kind=NETWORK)
        for slot in range(nodes_per_rack):
            node = rack * nodes_per_rack + slot
            nics = add_hgx_server(G, node_index=node, rack_index=rack,
                                  first_gpu_index=node * gpus_per_node,
                                  gpus_per_node=gpus_per_node, nics_per_node=nics_per_node,
                                  nvlink_bytes_per_s=nvlink_bytes_per_s,
                                  nvlink_latency_s=nvlink_latency_s,
                                  pcie_bytes_per_s=pcie_bytes_per_s, pcie_latency_s=pcie_latency_s)
            for nic in nics:
                add_link(G, nic, leaf, bandwidth_bytes_per_s=nic_bytes_per_s,
                         latency_s=network_latency_s, link_kind=NETWORK)
    # per-server network egress: each NIC carries min(its port, the PCIe links feeding it)
    node_egress = sum(min(nic_bytes_per_s, pcie_bytes_per_s * len(
        [g for g in range(gpus_per_node) if g * nics_per_node // gpus_per_node == k]))
        for k in range(nics_per_node))
    bisection, note = _rack_bisection(num_racks, nodes_per_rack, node_egress,
                                      rack_uplink_bytes_per_s, nvlink_bytes_per_s,
                                      node_egress / gpus_per_node)
    return _finish(G, name, params, bisection, note)


def _rack_bisection(num_racks: int, nodes_per_rack: int, node_egress: float, uplink: float,
                    nvlink: float, per_gpu_egress: float) -> tuple[float | None, str]:
    if nvlink < per_gpu_egress:
        return None, ""
    rack_egress = nodes_per_rack * node_egress
    if num_racks == 1:
        if nodes_per_rack % 2:
            return None, ""
        return nodes_per_rack // 2 * node_egress, "closed form: half the servers of the one rack"
    if num_racks % 2 == 0:
        return num_racks // 2 * min(rack_egress, uplink), (
            "closed form: half the racks, each limited by min(its servers' NIC bandwidth, "
            "its uplink)")
    if uplink >= rack_egress and (num_racks * nodes_per_rack) % 2 == 0:
        return num_racks * nodes_per_rack // 2 * node_egress, (
            "closed form: half the servers; the uplinks are non-blocking")
    return None, ""


def pcie_box(*, num_gpus: int = 8, gpus_per_switch: int = 2, num_sockets: int = 2,
             pcie_bytes_per_s: float = 31.5e9, pcie_latency_s: float = PCIE_LATENCY_S,
             switch_uplink_bytes_per_s: float = 31.5e9,
             inter_socket_bytes_per_s: float = 62.0e9,
             inter_socket_latency_s: float = 0.2e-6) -> nx.DiGraph:
    """A PCIe-only server: GPUs under PCIe switches, switches under CPU sockets.

    GPU g sits on switch `g // gpus_per_switch`; switch k hangs off socket
    `k * num_sockets // num_switches` (consecutive switches share a socket); sockets are
    fully connected by inter-socket links. Nodes: `n0/gpu{g}`, `n0/pcie{k}`, `n0/cpu{s}`.
    Defaults: 8 PCIe Gen4 x16 GPUs, 2 per switch, 2 sockets (presets/pcie-8gpu.yaml).
    """
    params = dict(locals())
    name = "pcie_box"
    for key, low in (("num_gpus", 1), ("gpus_per_switch", 1), ("num_sockets", 1)):
        _check_int(name, key, params[key], low)
    _check_server(name, pcie_bytes_per_s=pcie_bytes_per_s, pcie_latency_s=pcie_latency_s,
                  switch_uplink_bytes_per_s=switch_uplink_bytes_per_s,
                  inter_socket_bytes_per_s=inter_socket_bytes_per_s,
                  inter_socket_latency_s=inter_socket_latency_s)
    num_switches = -(-num_gpus // gpus_per_switch)
    if num_sockets > num_switches:
        raise TopologySpecError(
            f"pcie_box: num_sockets = {num_sockets} exceeds the {num_switches} PCIe switches; "
            f"a socket without a switch has no GPU. Fix: set num_sockets <= {num_switches}.")
    G = nx.DiGraph()
    sockets = [f"n0/cpu{s}" for s in range(num_sockets)]
    for s, socket in enumerate(sockets):
        G.add_node(socket, **{KIND: HOST, NODE_INDEX: 0, LOCAL_INDEX: s})
    for a in range(num_sockets):
        for b in range(a + 1, num_sockets):
            add_link(G, sockets[a], sockets[b], bandwidth_bytes_per_s=inter_socket_bytes_per_s,
                     latency_s=inter_socket_latency_s, link_kind=INTER_SOCKET)
    for k in range(num_switches):
        switch = f"n0/pcie{k}"
        G.add_node(switch, **{KIND: PCIE_SWITCH, NODE_INDEX: 0, LOCAL_INDEX: k})
        add_link(G, switch, sockets[k * num_sockets // num_switches],
                 bandwidth_bytes_per_s=switch_uplink_bytes_per_s, latency_s=pcie_latency_s,
                 link_kind=PCIE)
    for g in range(num_gpus):
        gpu = f"n0/gpu{g}"
        G.add_node(gpu, **{KIND: GPU, NODE_INDEX: 0, LOCAL_INDEX: g, GPU_INDEX: g})
        add_link(G, gpu, f"n0/pcie{g // gpus_per_switch}", bandwidth_bytes_per_s=pcie_bytes_per_s,
                 latency_s=pcie_latency_s, link_kind=PCIE)
    return _finish(G, name, params, None, "")


def host_loopback(*, num_processes: int = 4, loopback_bytes_per_s: float = 25e6,
                  loopback_latency_s: float = 50e-6,
                  attach_latency_s: float = 1e-9) -> nx.DiGraph:
    """K CPU processes on one host that share one loopback device (e.g. a tc-shaped namespace).

    Processes `proc{i}` are "gpu"-kind endpoints. Every byte goes proc -> `host/tx` ->
    `host/rx` -> proc; the middle edge is the one shared loopback with the configured
    bandwidth and latency, so concurrent transfers between *different* pairs share it, as
    they share a token-bucket-shaped `lo`. The attach edges carry the same bandwidth (a
    process cannot send faster than the device) and a small `attach_latency_s`. This graph
    is deliberately one-way through the device: there is no edge host/rx -> host/tx.
    Bisection: loopback_bytes_per_s.
    """
    params = dict(locals())
    name = "host_loopback"
    _check_int(name, "num_processes", num_processes, 1)
    _check_server(name, loopback_bytes_per_s=loopback_bytes_per_s,
                  loopback_latency_s=loopback_latency_s, attach_latency_s=attach_latency_s)
    G = nx.DiGraph()
    tx, rx = "host/tx", "host/rx"
    G.add_node(tx, **{KIND: HOST, NODE_INDEX: 0})
    G.add_node(rx, **{KIND: HOST, NODE_INDEX: 0})
    edge = {"bandwidth_bytes_per_s": loopback_bytes_per_s, "link_kind": LOOPBACK}
    G.add_edge(tx, rx, latency_s=loopback_latency_s, **edge)
    for i in range(num_processes):
        proc = f"proc{i}"
        G.add_node(proc, **{KIND: GPU, NODE_INDEX: 0, LOCAL_INDEX: i, GPU_INDEX: i})
        G.add_edge(proc, tx, latency_s=attach_latency_s, **edge)
        G.add_edge(rx, proc, latency_s=attach_latency_s, **edge)
    bisection = loopback_bytes_per_s if num_processes >= 2 else None
    return _finish(G, name, params, bisection, "closed form: every transfer crosses the one "
                   "shared loopback edge")


BUILDERS: dict[str, Callable[..., nx.DiGraph]] = {
    "hgx_node": hgx_node,
    "rail_optimized": rail_optimized,
    "multi_rack": multi_rack,
    "pcie_box": pcie_box,
    "host_loopback": host_loopback,
}
"""Builders reachable from YAML as `builder: <name>`."""
