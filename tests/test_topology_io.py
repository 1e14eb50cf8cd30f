"""Loading topologies: presets, builder specs, explicit YAML, node-link JSON, GraphML."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import networkx as nx
import pytest

from topologies import (
    BUILDERS, Router, TopologySpecError, TopologyValidationError, bisection_bytes_per_s, gpus,
    hgx_node, list_presets, load_topology, save_topology,
)
from topologies.io import load_preset_spec
from topologies.spec import COMMON_KEYS

EXPLICIT = """
name: lab
link_defaults: {latency_s: 1.0e-6, link_kind: network}
nodes:
  - {id: a, kind: gpu, node_index: 0}
  - {id: b, kind: gpu, node_index: 1}
  - {id: sw, kind: leaf}
links:
  - {src: a, dst: sw, bandwidth_bytes_per_s: 1.0e+9}
  - {src: b, dst: sw, bandwidth_bytes_per_s: "2e9", latency_s: 3.0e-6}
"""


def test_presets_load_and_every_parameter_has_a_source():
    names = list_presets()
    for expected in ("h100-superpod", "h200-superpod", "dgx-a100", "two-rack-h100",
                     "host-loopback", "pcie-8gpu", "dgx-h100"):
        assert expected in names and names[expected]
    for name in names:
        spec = load_preset_spec(name)
        params = {k for k in spec if k not in COMMON_KEYS and k != "builder"}
        missing = params - set(spec["sources"])
        assert not missing, f"{name}: no source for {missing}"
        assert all(spec["sources"][k].strip() for k in params)
        if name != "h100-superpod-16k":  # 2,048 servers: built in the benchmark instead
            G = load_topology(name)
            assert G.graph["name"] == name and G.graph["sources"] == spec["sources"]


def test_builder_defaults_are_the_dgx_h100_preset():
    spec = load_preset_spec("dgx-h100")
    defaults = {k: p.default for k, p in inspect.signature(hgx_node).parameters.items()}
    assert {k: spec[k] for k in defaults} == defaults


def test_dict_spec_with_builder_and_preset_override():
    G = load_topology({"builder": "multi_rack", "num_racks": 2, "nodes_per_rack": 1,
                       "gpus_per_node": 2, "nics_per_node": 1, "name": "mini"})
    assert G.graph["name"] == "mini" and len(gpus(G)) == 4
    G = load_topology({"preset": "two-rack-h100", "num_racks": 4})
    assert G.graph["name"] == "two-rack-h100" and len(gpus(G)) == 128
    assert G.graph["sources"]["num_racks"] == "overridden in the spec"


def test_explicit_yaml(tmp_path):
    path = tmp_path / "lab.yaml"
    path.write_text(EXPLICIT)
    G = load_topology(path)
    assert G.graph["name"] == "lab" and gpus(G) == ["a", "b"]
    assert G.edges["sw", "b"]["bandwidth_bytes_per_s"] == 2e9  # string number, both directions
    assert G.edges["a", "sw"]["latency_s"] == 1e-6  # from link_defaults
    r = Router(G).route("a", "b")
    assert r.nodes == ("a", "sw", "b") and r.latency_s == pytest.approx(4e-6)
    assert load_topology("lab.yaml", base_dir=tmp_path).number_of_edges() == 4


@pytest.mark.parametrize("suffix", [".json", ".graphml"])
def test_save_and_reload_round_trip(tmp_path, suffix):
    G = load_topology("two-rack-h100")
    path = tmp_path / f"cluster{suffix}"
    save_topology(G, path)
    H = load_topology(path)
    assert set(H.edges) == set(G.edges) and gpus(H) == gpus(G)
    for u, v, data in G.edges(data=True):
        assert H.edges[u, v] == data
    pair = ("n0/gpu0", "n5/gpu3")
    assert Router(H).route(*pair).links == Router(G).route(*pair).links
    assert H.graph["name"] == "two-rack-h100"
    # the builder's closed form is not trusted for a file; max-flow finds the same value
    assert "bisection_bytes_per_s" not in H.graph
    value, note = bisection_bytes_per_s(H)
    assert value == pytest.approx(800e9) and "max-flow" in note


def test_legacy_links_json_and_undirected_graphml(tmp_path):
    U = nx.Graph()
    U.add_node("x", kind="gpu")
    U.add_node("y", kind="gpu")
    U.add_node("s", kind="nvswitch")
    for n in "xy":
        U.add_edge(n, "s", bandwidth_bytes_per_s=1e9, latency_s=1e-6, link_kind="nvlink")
    nx.write_graphml(U, tmp_path / "u.graphml")
    G = load_topology(tmp_path / "u.graphml")
    assert G.has_edge("s", "x") and G.has_edge("x", "s")
    assert [G.nodes[g]["gpu_index"] for g in gpus(G)] == [0, 1]  # numbered in file order
    (tmp_path / "u.json").write_text(json.dumps(nx.node_link_data(U, edges="links")))
    assert load_topology(tmp_path / "u.json").number_of_edges() == 4


@pytest.mark.parametrize(("spec", "message"), [
    ({"builder": "torus"}, r"topology.builder: unknown builder 'torus'; known builders: hgx_node"),
    ({"builder": "rail_optimized", "num_nodez": 4},
     r"topology.num_nodez: unknown parameter of builder 'rail_optimized'"),
    ({"builder": "rail_optimized"}, r"builder 'rail_optimized' needs num_nodes"),
    ({"builder": "rail_optimized", "num_nodes": "many"},
     r"topology.num_nodes: got 'many' \(str\); expected an integer"),
    ({"builder": "hgx_node", "nvlink_bytes_per_s": "fast"},
     r"topology.nvlink_bytes_per_s: got 'fast' \(str\); expected a number"),
    ({"builder": "rail_optimized", "num_nodes": 0},
     r"topology: rail_optimized: num_nodes = 0 is not allowed"),
    ({"preset": "dgx-h999"}, r"topology.preset: unknown preset 'dgx-h999'; presets: dgx-a100"),
    ({"preset": "dgx-h100", "builder": "pcie_box"}, r"topology.builder: cannot be combined with "
                                                   r"preset 'dgx-h100'"),
    ({"num_gpus": 8}, r"topology: has none of 'preset', 'builder' or 'nodes'/'links'"),
    ({"nodes": [{"id": "a", "kind": "gpu"}], "linkz": []},
     r"topology.linkz: unknown key for an explicit topology"),
    ({"nodes": [{"id": "a", "kind": "gpu", "rack": 1}]}, r"topology.nodes\[0\].rack: unknown key"),
    ({"nodes": [{"kind": "gpu"}]}, r"topology.nodes\[0\]: has no id"),
    ({"nodes": [{"id": 3, "kind": "gpu"}]}, r"topology.nodes\[0\].id: got 3 \(int\); expected "
                                            r"a string"),
    ({"nodes": [{"id": "a", "kind": "gpu"}, {"id": "a", "kind": "gpu"}]},
     r"topology.nodes\[1\].id: 'a' is defined twice"),
    ({"nodes": [{"id": "a", "kind": "gpu"}],
      "links": [{"src": "a", "dst": "b", "bandwidth_bytes_per_s": 1, "latency_s": 1,
                 "link_kind": "pcie"}]}, r"topology.links\[0\].dst: 'b' is not a declared node"),
    ({"nodes": [{"id": "a", "kind": "gpu"}, {"id": "b", "kind": "gpu"}],
      "links": [{"src": "a", "dst": "b", "latency_s": 1, "link_kind": "pcie"}]},
     r"topology.links\[0\]: has no bandwidth_bytes_per_s"),
    ({"nodes": [{"id": "a", "kind": "gpu"}, {"id": "b", "kind": "gpu"}],
      "link_defaults": {"bandwidth_bytes_per_s": 1, "latency_s": 1, "link_kind": "pcie"},
      "links": [{"src": "a", "dst": "b"}, {"src": "b", "dst": "a"}]},
     r"topology.links\[1\]: link 'b' -> 'a' is defined twice"),
    ("nonexistent-preset", r"topology 'nonexistent-preset': not a preset \(dgx-a100.*\) and no "
                           r"such file"),
    (42, r"expected a preset name, a file path or a mapping, got int"),
])
def test_spec_errors_name_the_key(spec, message):
    with pytest.raises(TopologySpecError, match=message):
        load_topology(spec)


def test_explicit_graph_is_validated():
    spec = {"nodes": [{"id": "a", "kind": "gpu"}, {"id": "b", "kind": "gpu"},
                      {"id": "s", "kind": "leaf"}],
            "link_defaults": {"bandwidth_bytes_per_s": 1e9, "latency_s": 1e-6,
                              "link_kind": "network"},
            "links": [{"src": "a", "dst": "s"}]}
    with pytest.raises(TopologyValidationError, match=r"GPU 'a' cannot reach GPU 'b'"):
        load_topology(spec)


def test_file_errors(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("nodes: [unclosed\n")
    with pytest.raises(TopologySpecError, match=r"bad.yaml: not valid YAML"):
        load_topology(bad_yaml)
    (tmp_path / "t.csv").write_text("a,b\n")
    with pytest.raises(TopologySpecError, match=r"unknown file type '.csv'"):
        load_topology(tmp_path / "t.csv")
    (tmp_path / "t.json").write_text('{"nodes": []}')
    with pytest.raises(TopologySpecError, match=r"node-link JSON needs 'nodes' and 'edges'"):
        load_topology(tmp_path / "t.json")
    (tmp_path / "m.json").write_text(json.dumps(nx.node_link_data(nx.MultiDiGraph([(1, 2)]))))
    with pytest.raises(TopologySpecError, match=r"is a multigraph"):
        load_topology(tmp_path / "m.json")
    (tmp_path / "x.graphml").write_text("<graphml><oops")
    with pytest.raises(TopologySpecError, match=r"not readable as GraphML"):
        load_topology(tmp_path / "x.graphml")
    with pytest.raises(TopologySpecError, match=r"cannot save as '.txt'"):
        save_topology(hgx_node(), tmp_path / "g.txt")


def test_every_builder_is_reachable_from_yaml():
    assert set(BUILDERS) == {"hgx_node", "rail_optimized", "multi_rack", "pcie_box",
                             "host_loopback"}
    for name in BUILDERS:
        spec = {"builder": name}
        if name == "rail_optimized":
            spec["num_nodes"] = 1
        if name == "multi_rack":
            spec.update(num_racks=1, nodes_per_rack=1)
        assert load_topology(spec).graph["builder"] == name


def test_shipped_custom_example():
    G = load_topology(Path(__file__).parents[1] / "topologies/examples/lab-pair-bridged.yaml")
    router = Router(G)
    bridged = router.route("s0/gpu0", "s0/gpu1")
    assert bridged.link_kinds == ("nvlink",) and bridged.bottleneck_bytes_per_s == 56.25e9
    assert router.route("s0/gpu1", "s0/gpu2").nodes == ("s0/gpu1", "s0/cpu", "s0/gpu2")
    remote = router.route("s0/gpu3", "s1/gpu0")
    assert remote.hops == 6 and remote.bottleneck_bytes_per_s == 25e9
    assert remote.latency_s == pytest.approx(6e-6)
