"""Drawing: layered layout, aggregation levels, highlighted paths; matplotlib stays lazy."""

from __future__ import annotations

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from simulator.plot_topology import choose_level, draw_topology  # noqa: E402
from topologies import Router, hgx_node, load_topology, place  # noqa: E402


@pytest.fixture()
def ax():
    fig, axes = plt.subplots()
    yield axes
    plt.close(fig)


def _lines(artists):
    return [a for a in artists if isinstance(a, LineCollection)]


def test_device_view_of_one_server(ax):
    G = hgx_node()
    artists = draw_topology(ax, G)
    (lines,) = _lines(artists)
    assert len(lines.get_segments()) == 16  # 8 NVLink + 8 PCIe links, each drawn once
    offsets = {tuple(a.get_offsets()[0]) for a in artists if hasattr(a, "get_offsets")
               and len(a.get_offsets()) == 1}
    assert any(y == -1.0 for _, y in offsets)  # the NVSwitch sits below the GPUs
    assert "8 GPUs (device view)" in ax.get_title()
    assert not ax.figure.get_axes()[0].axison


def test_highlighted_pipeline_path(ax):
    G = load_topology("two-rack-h100")
    router = Router(G)
    placement = place(G, dp=2, pp=4, tp=8, policy="spread-racks")
    links = placement.pipeline_links(router)
    artists = draw_topology(ax, G, links, level="device")
    base, highlight = _lines(artists)
    # stages on n0, n4, n1, n5 (GPU 0 of each): 0->1 draws its 6 links; 1->2 goes back over
    # n4's NIC, the uplinks and the spine and adds only rack0/leaf-n1/nic0-n1/gpu0; 2->3
    # adds only rack1/leaf-n5/nic0-n5/gpu0. A link used in both directions is one segment.
    assert len(links) == 18 and len(highlight.get_segments()) == 6 + 2 + 2
    assert len(base.get_segments()) == 64 + 64 + 64 + 2


def test_aggregated_views_stay_small(ax):
    G = load_topology("h100-superpod")  # 1,024 GPUs
    assert choose_level(G) == "rack"
    assert choose_level(hgx_node()) == "device"
    artists = draw_topology(ax, G)
    (lines,) = _lines(artists)
    # 4 scalable units (servers and leaves collapsed) x 16 spines
    assert len(lines.get_segments()) == 4 * 16
    artists = draw_topology(ax, G, level="server")
    (lines,) = _lines(artists)
    # 128 servers x 1 rail leaf per NIC (8 leaves each) + 32 leaves x 16 spines
    assert len(lines.get_segments()) == 128 * 8 + 32 * 16


def test_node_path_and_route_highlights(ax):
    G = hgx_node(num_gpus=4)
    route = Router(G).route("n0/gpu0", "n0/gpu3")
    by_route = _lines(draw_topology(ax, G, [route]))[1].get_segments()
    by_nodes = _lines(draw_topology(ax, G, ["n0/gpu0", "n0/nvswitch", "n0/gpu3"]))[1]
    assert len(by_route) == len(by_nodes.get_segments()) == 2


def test_bad_level_is_named(ax):
    with pytest.raises(ValueError, match=r"level 'cluster' is not one of auto, device"):
        draw_topology(ax, hgx_node(), level="cluster")


def test_importing_the_drawing_module_does_not_import_matplotlib():
    code = ("import sys, simulator.plot_topology, simulator.cli.topology_cmd; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
