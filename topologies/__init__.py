"""Cluster topologies as graphs, routes between GPUs, and placement of pipeline ranks.

Planning AttnRes block sizes is about one concrete cluster: which pipeline boundaries cross
NVLink and which cross a rack uplink. This package describes clusters as `networkx.DiGraph`s
(typed nodes, directed links with bandwidth and latency; every attribute name is defined in
`topologies.schema`), builds the common shapes (an HGX server, a rail-optimized SuperPOD-like
cluster, racks under a spine, a PCIe-only box, K processes on one loopback), loads presets and
custom YAML / node-link JSON / GraphML files, routes GPU pairs (shortest latency, deterministic
ECMP), and places (dp, pp, tp) ranks onto GPUs.

It imports networkx and pyyaml only; the simulator builds on it.

    G = load_topology("two-rack-h100")
    router = Router(G)
    placement = place(G, dp=2, pp=4, tp=8, policy="spread-racks", num_virtual_stages=2)
    for report in placement.boundary_report(router):
        print(report.src_stage, report.dst_stage, report.link_kinds, report.scope)
"""

from __future__ import annotations

from topologies.builders import (
    BUILDERS, hgx_node, host_loopback, multi_rack, pcie_box, rail_optimized,
)
from topologies.errors import (
    PlacementError, RoutingError, TopologyError, TopologySpecError, TopologyValidationError,
)
from topologies.io import list_presets, load_topology, save_topology
from topologies.placement import POLICIES, BoundaryReport, Placement, place
from topologies.routing import Route, Router
from topologies.schema import gpus
from topologies.summary import (
    TopologySummary, bisection_bytes_per_s, cut_flow_bytes_per_s, leaf_oversubscription,
    summarize,
)
from topologies.validate import validate_topology

__all__ = [
    "BUILDERS", "hgx_node", "rail_optimized", "multi_rack", "pcie_box", "host_loopback",
    "TopologyError", "TopologySpecError", "TopologyValidationError", "RoutingError",
    "PlacementError",
    "load_topology", "save_topology", "list_presets",
    "place", "Placement", "BoundaryReport", "POLICIES",
    "Route", "Router",
    "gpus", "validate_topology",
    "summarize", "TopologySummary", "bisection_bytes_per_s", "cut_flow_bytes_per_s",
    "leaf_oversubscription",
]
