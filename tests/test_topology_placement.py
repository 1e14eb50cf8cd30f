"""Placement of (dp, pp, tp) ranks and the pipeline-boundary report, worked out by hand."""

from __future__ import annotations

import pytest

from topologies import PlacementError, Router, hgx_node, load_topology, place, rail_optimized


@pytest.fixture(scope="module")
def two_rack():
    # 2 racks x 4 servers x 8 GPUs; servers n0..n3 in rack 0, n4..n7 in rack 1
    G = load_topology("two-rack-h100")
    return G, Router(G)


def test_packed_keeps_tp_in_a_server_and_stages_adjacent(two_rack):
    G, _ = two_rack
    p = place(G, dp=2, pp=4, tp=8)
    # pipeline rank (d, p) takes server d * 4 + p
    for d in range(2):
        for s in range(4):
            assert {p.gpu_of(d, s, t) for t in range(8)} == {f"n{d * 4 + s}/gpu{t}"
                                                             for t in range(8)}
    assert p.pipeline(1, 5) == ("n4/gpu5", "n5/gpu5", "n6/gpu5", "n7/gpu5")
    assert p.stage_gpus(2)[:2] == ("n2/gpu0", "n2/gpu1") and len(p.stage_gpus(2)) == 16


def test_packed_with_two_tp_groups_per_server(two_rack):
    G, router = two_rack
    p = place(G, dp=2, pp=2, tp=4)
    assert p.gpu_of(0, 1, 3) == "n0/gpu7" and p.gpu_of(1, 0, 0) == "n1/gpu0"
    (report,) = p.boundary_report(router)
    assert (report.scope, report.link_kinds, report.transit_kinds) == (
        "intra-node", ("nvlink",), ("nvswitch",))
    assert report.max_hops == 2 and report.num_pairs == 8
    assert report.min_bottleneck_bytes_per_s == 450e9


def test_spread_racks_alternates_racks(two_rack):
    G, router = two_rack
    p = place(G, dp=2, pp=4, tp=8, policy="spread-racks", num_virtual_stages=2)
    # pipeline rank k = d*4 + s goes to rack k % 2, each rack's servers in order
    servers = [[p.gpu_of(d, s, 0).split("/")[0] for s in range(4)] for d in range(2)]
    assert servers == [["n0", "n4", "n1", "n5"], ["n2", "n6", "n3", "n7"]]
    reports = p.boundary_report(router)
    assert [(r.src_stage, r.dst_stage, r.is_wrap) for r in reports] == [
        (0, 1, False), (1, 2, False), (2, 3, False), (3, 0, True)]
    for r in reports:
        assert r.scope == "cross-rack" and r.max_hops == 6 and r.num_pairs == 16
        assert r.transit_kinds == ("nic", "leaf", "spine")
        assert r.link_kinds == ("pcie", "network")
        # rack uplink 32 * 50 GB/s / 2 is wider than a NIC: the NIC is the bottleneck
        assert r.min_bottleneck_bytes_per_s == 50e9
        assert r.max_latency_s == pytest.approx(2 * 0.5e-6 + 4 * 0.75e-6)


def test_packed_boundaries_and_wrap_stay_in_the_rack(two_rack):
    G, router = two_rack
    p = place(G, dp=2, pp=4, tp=8, num_virtual_stages=3)
    reports = p.boundary_report(router)
    assert len(reports) == 4 and reports[-1].is_wrap
    assert {r.scope for r in reports} == {"intra-rack"}
    assert reports[0].transit_kinds == ("nic", "leaf")
    assert place(G, dp=2, pp=4, tp=8).boundaries() == [(0, 1), (1, 2), (2, 3)]


def test_no_boundaries_for_one_stage():
    p = place(hgx_node(), dp=2, pp=1, tp=4, num_virtual_stages=2)
    assert p.boundaries() == [] and p.boundary_report(Router(hgx_node())) == []


def test_explicit_map():
    G = hgx_node(num_gpus=4)
    mapping = {"0,0,0": "n0/gpu3", "0, 1, 0": "n0/gpu0", (0, 2, 0): "n0/gpu1"}
    p = place(G, dp=1, pp=3, tp=1, policy=mapping, num_virtual_stages=2)
    assert p.policy == "explicit" and p.pipeline() == ("n0/gpu3", "n0/gpu0", "n0/gpu1")
    assert p.to_dict()["ranks"] == {"0,0,0": "n0/gpu3", "0,1,0": "n0/gpu0", "0,2,0": "n0/gpu1"}
    links = p.pipeline_links(Router(G))
    assert links[0] == ("n0/gpu3", "n0/nvswitch") and len(links) == 6  # 3 boundaries x 2


def test_spread_racks_on_rail_cluster_uses_scalable_units():
    G = rail_optimized(num_nodes=4, gpus_per_node=2, nodes_per_su=2, num_spines=2)
    p = place(G, dp=1, pp=4, tp=2, policy="spread-racks")
    assert [p.gpu_of(0, s, 0) for s in range(4)] == ["n0/gpu0", "n2/gpu0", "n1/gpu0", "n3/gpu0"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dp": 3, "pp": 3, "tp": 8}, r"dp\*pp\*tp = 3\*3\*8 = 72 ranks exceed the 64 GPUs"),
    ({"dp": 0, "pp": 1, "tp": 1}, r"dp = 0; it must be an integer >= 1"),
    ({"dp": 1, "pp": 1, "tp": 1, "policy": "random"}, r"unknown policy 'random'"),
    ({"dp": 1, "pp": 4, "tp": 16}, r"packed: needs dp\*pp = 4 TP groups of 16 GPUs inside one "
                                   r"server, topology 'two-rack-h100' offers 0"),
    ({"dp": 1, "pp": 2, "tp": 1, "policy": {"0,0,0": "n0/gpu0"}},
     r"1 of 2 ranks have no GPU, first '0,1,0'"),
    ({"dp": 1, "pp": 2, "tp": 1, "policy": {"0,0,0": "n0/gpu0", "0,1,0": "n0/gpu0"}},
     r"GPU 'n0/gpu0' is given to ranks"),
    ({"dp": 1, "pp": 1, "tp": 1, "policy": {"0,0,0": "spine0"}}, r"'spine0', which is not a GPU"),
    ({"dp": 1, "pp": 1, "tp": 1, "policy": {"0,0,1": "n0/gpu0"}}, r"rank '0,0,1' is outside"),
    ({"dp": 1, "pp": 1, "tp": 1, "policy": {"first": "n0/gpu0"}}, r"key 'first' is not a rank"),
])
def test_placement_errors(two_rack, kwargs, message):
    G, _ = two_rack
    with pytest.raises(PlacementError, match=message):
        place(G, **kwargs)


def test_spread_racks_runs_out_in_a_small_rack():
    # SU 0 holds 4 GPUs, SU 1 two: the 6 pipeline ranks alternate, so SU 1 needs three
    G = rail_optimized(num_nodes=3, gpus_per_node=2, nodes_per_su=2, num_spines=1)
    with pytest.raises(PlacementError, match=r"spread-racks: rack 1 .* has only 2 TP groups of "
                                             r"1 GPUs, fewer than its share of the 6"):
        place(G, dp=2, pp=3, tp=1, policy="spread-racks")


def test_gpu_of_range_and_missing_structure():
    p = place(hgx_node(), dp=1, pp=2, tp=4)
    with pytest.raises(PlacementError, match=r"pp_index = 2 is outside 0..1"):
        p.gpu_of(0, 2, 0)
    with pytest.raises(PlacementError, match=r"spread-racks: GPU 'n0/gpu0' .* has no rack_index"):
        place(hgx_node(), dp=1, pp=2, tp=1, policy="spread-racks")
