"""The boundary manifest reproduces the paper's counts (attnres-paper.md section 4)."""

from __future__ import annotations

import pytest

from simulator.layout import Layout
from simulator.manifest import (
    build_manifest,
    build_manifest_for_layout,
    paper_eq7_planes,
    paper_eq8_planes,
)
from simulator.scenario import load_scenario

U = 1000  # bytes per plane in the layout-level tests


def _layout(L: int, P: int, V: int, S: int | None, counts: list[int] | None = None) -> Layout:
    C = P * V
    counts = counts or [L // C] * C
    return Layout(num_sublayers=L, num_stages=P, num_virtual_stages=V,
                  chunk_sublayer_counts=tuple(counts), block_size=S)


def _fig3() -> Layout:
    # P = 4, V = 2, 8 sublayers one per chunk, S = 2: each block spans two chunks (N_p = 0.5).
    return _layout(L=8, P=4, V=2, S=2)


def test_fig3_naive_block_counts():
    manifest = build_manifest_for_layout(_fig3(), U, "block", "naive")
    assert manifest.block_counts("naive") == [1, 2, 2, 3, 3, 4, 4]
    assert sum(manifest.block_counts("naive")) == 19


def test_fig3_cached_block_counts():
    manifest = build_manifest_for_layout(_fig3(), U, "block", "cached")
    assert manifest.block_counts("cached") == [1, 2, 2, 2, 2, 2, 2]
    assert sum(manifest.block_counts("cached")) == 13


def test_fig3_cached_removes_six_in_second_virtual_stage():
    manifest = build_manifest_for_layout(_fig3(), U, "block", "cached")
    # Transitions into the second virtual stage's chunks: hops 3..6 (chunk 3 -> 4 onwards).
    naive = sum(manifest.block_counts("naive")[3:])
    cached = sum(manifest.block_counts("cached")[3:])
    assert naive - cached == 6
    assert (naive, cached) == (14, 8)


def test_fig3_cached_own_block_counts():
    manifest = build_manifest_for_layout(_fig3(), U, "block", "cached-own")
    assert manifest.block_counts("cached-own") == [1, 2, 2, 2, 1, 2, 1]


def test_fig3_second_virtual_stage_inputs_match_paper():
    # The paper lists the ranks' inputs in the second virtual stage as +[b1,b2], +[b1,b2]+partial b3,
    # +[b2,b3], +[b2,b3]+partial b4 (the cached delta beyond b0, which every rank already holds).
    manifest = build_manifest_for_layout(_fig3(), U, "block", "cached")
    names = [manifest.transition("forward", c).names("cached") for c in (3, 4, 5, 6)]
    assert names == [("b1", "b2"), ("b1", "b2", "partial"), ("b2", "b3"),
                     ("b2", "b3", "partial")]


def test_partial_sent_only_mid_block():
    manifest = build_manifest_for_layout(_fig3(), U, "block", "naive")
    partial = ["partial" in hop.names("naive") for hop in manifest.forward()]
    assert partial == [True, False, True, False, True, False, True]


def test_backward_mirrors_forward():
    manifest = build_manifest_for_layout(_fig3(), U, "block", "cached")
    for hop in manifest.forward():
        back = manifest.transition("backward", hop.dst_chunk)
        assert (back.src_rank, back.dst_rank) == (hop.dst_rank, hop.src_rank)
        for mode in manifest.modes:
            assert back.names(mode) == tuple(reversed(hop.names(mode)))
            assert back.num_bytes(mode) == hop.num_bytes(mode)


def test_interleaved_wraparound_ranks():
    manifest = build_manifest_for_layout(_fig3(), U, "block", "naive")
    hop = manifest.transition("forward", 3)
    assert (hop.src_rank, hop.dst_rank) == (3, 0)


def test_standard_residual_sends_one_hidden_plane():
    manifest = build_manifest_for_layout(_layout(L=8, P=4, V=2, S=None), U, "standard", "standard")
    assert manifest.modes == ("standard",)
    assert all(hop.names("standard") == ("hidden",) for hop in manifest.transitions)
    assert manifest.total_bytes("standard") == 2 * 7 * U


def test_full_attnres_is_block_size_one():
    # Full AttnRes: every sublayer output is a source and no partial is ever sent.
    layout = _layout(L=16, P=4, V=1, S=1)
    manifest = build_manifest_for_layout(layout, U, "full", "naive")
    counts = manifest.block_counts("naive")
    assert counts == [1 + layout.last_sublayer(c) for c in range(3)]  # outputs so far + embedding
    assert not any("partial" in hop.names("naive") for hop in manifest.transitions)


def test_uneven_last_block():
    # L = 10, S = 4: blocks [1-4], [5-8], [9-10]; the last block is shorter.
    layout = _layout(L=10, P=5, V=1, S=4, counts=[2] * 5)
    assert layout.num_blocks == 3
    assert [layout.completed_blocks(c) for c in range(5)] == [
        (0,), (0, 1), (0, 1), (0, 1, 2), (0, 1, 2, 3)]
    assert [layout.mid_block(c) for c in range(4)] == [True, False, True, False]


@pytest.mark.parametrize("P,V,N", [(8, 2, 9), (4, 2, 8), (4, 4, 16), (2, 3, 6)])
def test_eq7_is_sum_of_j_np(P, V, N):
    C = P * V
    assert paper_eq7_planes(P, V, N) == pytest.approx(sum(j * N / C for j in range(1, C)))


def test_eq7_eq8_worked_example_48b():
    # attnres-paper.md 4.4: P = 8, V = 2, N = 9 -> 67.5 U naive, 51.75 U cached.
    assert paper_eq7_planes(8, 2, 9) == pytest.approx(67.5)
    assert paper_eq8_planes(8, 2, 9) == pytest.approx(51.75)


def test_exact_counts_equal_paper_formulas_when_blocks_align():
    # One block per chunk (N_p = 1): counting blocks beyond b0, the exact naive total is Eq. 7 and
    # the exact cached total is Eq. 8 (b0 is the extra the paper leaves out).
    P, V = 4, 2
    layout = _layout(L=16, P=P, V=V, S=2)
    manifest = build_manifest_for_layout(layout, U, "block", "cached")

    def beyond_b0(mode):
        return [sum(1 for n in hop.names(mode) if n.startswith("b") and n != "b0")
                for hop in manifest.forward()]

    assert sum(beyond_b0("naive")) == paper_eq7_planes(P, V, layout.num_blocks)
    assert sum(beyond_b0("cached")) == paper_eq8_planes(P, V, layout.num_blocks)
    assert beyond_b0("cached") == [1, 2, 3, 4, 4, 4, 4]  # P x N_p = 4 per hop once warmed up


def test_peak_per_transition_drops_by_about_v():
    # Many blocks, deep interleaving: the cached peak hop is about naive peak / V.
    for V in (2, 4):
        P = 4
        layout = _layout(L=64, P=P, V=V, S=2)
        manifest = build_manifest_for_layout(layout, U, "block", "cached")
        ratio = manifest.peak_bytes("naive") / manifest.peak_bytes("cached")
        assert V * 0.8 <= ratio <= V * 1.2, (V, ratio)


def test_48b_scenario_manifest():
    scenario = load_scenario("scenarios/paper_48b_block.yaml")
    manifest = build_manifest(scenario)
    U48 = 1 * 4096 * 2304 * 2
    assert manifest.plane_bytes == U48
    # Naive must carry every completed block; the last hop carries b0..b8 plus a partial or b9.
    last = manifest.transition("forward", 14)
    assert last.names("naive")[:9] == tuple(f"b{n}" for n in range(9))
    naive_blocks = sum(manifest.block_counts("naive"))
    cached_blocks = sum(manifest.block_counts("cached"))
    assert cached_blocks < naive_blocks
    # Both stay within a plane per hop (the partial) of the paper's approximations.
    assert abs(naive_blocks - 15 - paper_eq7_planes(8, 2, 9)) <= 15
    assert abs(cached_blocks - paper_eq8_planes(8, 2, 9)) <= 15
