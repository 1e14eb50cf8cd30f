"""Planner building blocks without simulation: candidates, Pareto front, recommendation rule."""

from __future__ import annotations

import pytest

from simulator.errors import UserError
from simulator.planner_candidates import (
    Candidate, balanced_sublayers, default_block_counts, generate_candidates, valid_block_counts,
)
from simulator.planner_eval import CandidateMetrics
from simulator.planner_report import PlanConstraints, build_rows, pareto_front, recommend
from simulator.quality import DEFAULT_QUALITY
from simulator.scenario import load_scenario


def _scenario(**pipeline):
    data = {"name": "toy", "model": {"num_layers": 4, "hidden_size": 64, "num_heads": 4,
                                     "ffn_hidden_size": 128, "vocab_size": 128, "seq_len": 64},
            "pipeline": {"schedule": "1f1b", "num_stages": 2, "num_microbatches": 2, **pipeline},
            "hardware": "h100", "topology": "ideal"}
    return load_scenario(data)


def test_valid_block_counts_follow_the_block_rule():
    # N is valid when S = ceil(L/N) gives back ceil(L/S) = N. L = 54: N = 10 gives S = 6 and
    # 9 blocks (invalid), N = 11 gives S = 5 and 11 blocks, N = 14 gives S = 4 and 14 blocks.
    valid = valid_block_counts(54)
    assert {9, 11, 14, 18, 27, 54} <= set(valid)
    assert not {10, 12, 13, 16, 32} & set(valid)
    assert valid_block_counts(8) == [1, 2, 3, 4, 8]


def test_default_block_counts_take_the_largest_valid_n_below_each_power_of_two():
    s = load_scenario("scenarios/paper_48b_block.yaml")
    # L = 54: powers 1, 2, 4, 8 are valid; 16 -> 14 and 32 -> 27; plus the scenario's 9 and L.
    assert default_block_counts(s) == [1, 2, 4, 8, 9, 14, 27, 54]


def test_balanced_sublayers_put_the_extra_in_the_middle():
    # 54 over 16 chunks: 3 each and 6 extra, in chunks (16 - 6) // 2 = 5 .. 10.
    assert balanced_sublayers(54, 16) == [3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 3, 3, 3, 3, 3]
    # 54 over 8: 6 each and 6 extra, in chunks 1 .. 6.
    assert balanced_sublayers(54, 8) == [6, 7, 7, 7, 7, 7, 7, 6]
    with pytest.raises(UserError, match="17 chunks exceed L = 16 sublayers"):
        balanced_sublayers(16, 17)


def test_candidates_reference_first_full_at_l_and_invalid_n_skipped():
    s = _scenario()
    cands, skipped = generate_candidates(s, blocks=[1, 3, 5, 8], modes=["naive", "cached"])
    assert cands[0].kind == "standard" and cands[0].index == 0
    labels = [c.label for c in cands]
    assert labels == ["standard, V=1, packed",
                      "block N=1 naive, V=1, packed", "block N=1 cached, V=1, packed",
                      "block N=3 naive, V=1, packed", "block N=3 cached, V=1, packed",
                      "full naive, V=1, packed", "full cached, V=1, packed"]
    full = cands[-1]
    assert full.num_blocks == 8 and full.scenario.residual.kind == "full"
    assert cands[3].scenario.block_size() == 3
    # N = 5 with L = 8: S = 2 gives 4 blocks; the validator's own message is kept.
    assert [x.label for x in skipped] == ["block N=5 naive, V=1, packed",
                                          "block N=5 cached, V=1, packed"]
    assert "cannot form exactly 5 blocks" in skipped[0].reason


def test_virtual_stages_switch_schedule_and_balance_chunks():
    s = _scenario()
    cands, skipped = generate_candidates(s, blocks=[2], modes=["cached"], virtual_stages=[1, 2, 3])
    by_v = {c.num_virtual_stages: c for c in cands if c.kind == "block"}
    assert by_v[1].scenario.pipeline.schedule == "1f1b"
    assert by_v[2].scenario.pipeline.schedule == "interleaved-1f1b"
    assert by_v[2].scenario.chunk_sublayer_counts() == [2, 2, 2, 2]
    # V = 3: 8 sublayers over 6 chunks, 1 each and 2 extra in chunks 2 and 3.
    assert by_v[3].scenario.chunk_sublayer_counts() == [1, 1, 2, 2, 1, 1]
    # Each layout gets its own standard baseline; the reference stays the scenario's.
    assert [c.num_virtual_stages for c in cands if c.kind == "standard"] == [1, 2, 3]
    assert skipped == []


def test_interleaving_rule_violations_are_skipped_with_the_rule():
    # Interleaved 1F1B with P = 2 needs M // P to divide M; M = 5 breaks it (2 does not divide 5).
    s = _scenario(num_microbatches=5)
    cands, skipped = generate_candidates(s, blocks=[2], modes=["naive"], virtual_stages=[1, 2])
    assert all(c.num_virtual_stages == 1 for c in cands)
    assert {x.label for x in skipped} == {"standard, V=2, packed", "block N=2 naive, V=2, packed"}
    assert all(x.reason.startswith("scenario: pipeline:") for x in skipped)


@pytest.mark.parametrize("kwargs, message", [
    ({"modes": ["cache"]}, "'cache' is not a boundary mode; use naive, cached, cached-own"),
    ({"blocks": [0, 2]}, r"every block count N must be >= 1"),
    ({"blocks": "most"}, "give a list of block counts or 'all'"),
    ({"virtual_stages": [0]}, "every V must be >= 1"),
])
def test_bad_sweep_arguments(kwargs, message):
    with pytest.raises(UserError, match=message):
        generate_candidates(_scenario(), **kwargs)


def test_pareto_front_by_hand():
    # (overhead %, gain): b dominates d (cheaper and better); c ties b's gain at higher cost;
    # e equals a and both stay; f is the only one with the top gain.
    points = [(0.0, 0.0), (1.0, 0.5), (2.0, 0.5), (3.0, 0.4), (0.0, 0.0), (9.0, 1.0)]
    assert pareto_front(points) == [True, True, False, False, True, True]


def _metrics(step_s, peak_bytes, boundary_bytes=0):
    return CandidateMetrics(
        step_time_s=step_s, pipeline_time_s=step_s, bubble_fraction=0.0,
        compute_only_step_time_s=step_s, max_comm_wait_s=0.0,
        peak_memory_bytes_per_stage=(peak_bytes,), hbm_capacity_bytes=100.0, busiest_link="",
        busiest_link_kind="", busiest_link_pipeline_bytes=0, busiest_link_bytes=0,
        busiest_link_utilization=0.0, max_link_utilization=0.0,
        boundary_bytes_per_step=boundary_bytes, num_gpus=2, symmetric=False, sim_wall_s=0.0,
        num_events=0)


def _rows(specs, constraints):
    s = _scenario()
    cands, _ = generate_candidates(s, blocks=[1, 2, 4, 8], modes=["naive", "cached"])
    by_label = {c.residual_label: c for c in cands}
    pairs = [(by_label[label], _metrics(*numbers)) for label, numbers in specs]
    return build_rows(pairs, 1.0, constraints, DEFAULT_QUALITY)


def test_recommendation_rule_and_tie_breaks():
    c = PlanConstraints(max_step_overhead_pct=10, max_memory_fraction=0.5)
    rows = _rows([("standard", (1.0, 10)), ("block N=2 naive", (1.05, 20, 400)),
                  ("block N=2 cached", (1.05, 20, 300)), ("block N=4 naive", (1.08, 60)),
                  ("block N=4 cached", (1.2, 20)), ("full cached", (1.5, 20))], c)
    # Overheads: 0, 5, 5, 8, 20, 50 %. N=4 naive uses 60% of memory (> 0.5), N=4 cached 20%
    # overhead (> 10%): the largest feasible gain is N=2 (45%), where cached wins on bytes.
    assert [round(r.overhead_pct, 6) for r in rows] == [0, 5, 5, 8, 20, 50]
    assert [r.fits_memory for r in rows] == [True, True, True, False, True, True]
    index, reason = recommend(rows, c)
    assert rows[index].candidate.residual_label == "block N=2 cached"
    assert "45% of Full AttnRes's expected gain for +5.0% step time" in reason
    assert "ahead of 1 candidate(s) with the same gain" in reason
    # The next larger gain is N=4's 62%; of its candidates the cheaper one (naive, +8%) is
    # named, with what rules it out.
    assert ("the next larger gain, block N=4 naive, V=1, packed (62%), is ruled out by "
            "peak memory 60 B > 50% of 100 B = 50 B") in reason
    # Front over memory-fitting rows: standard, both N=2 (equal points), N=4 cached, full.
    assert [r.on_pareto_front for r in rows] == [True, True, True, False, True, True]


def test_standard_is_kept_when_no_attnres_candidate_fits():
    c = PlanConstraints(max_step_overhead_pct=1, max_memory_fraction=0.9)
    rows = _rows([("standard", (1.0, 10)), ("block N=1 naive", (1.02, 10))], c)
    index, reason = recommend(rows, c)
    assert rows[index].candidate.kind == "standard"
    assert reason.startswith("keep the standard residual (standard, V=1, packed): no AttnRes "
                             "candidate fits within +1% step time and 90% of GPU memory")
    assert "+2.0% step time > 1%" in reason


def test_nothing_fits_names_the_smallest_candidate():
    c = PlanConstraints(max_step_overhead_pct=5, max_memory_fraction=0.05)
    rows = _rows([("standard", (1.0, 10)), ("block N=1 naive", (1.0, 12))], c)
    index, reason = recommend(rows, c)
    assert index is None
    assert reason == ("nothing fits the constraints: even standard, V=1, packed, the smallest "
                      "in memory, has peak memory 10 B > 5% of 100 B = 5 B")


@pytest.mark.parametrize("kwargs, message", [
    ({"max_step_overhead_pct": -1}, "max_step_overhead = -1: must be a percentage >= 0"),
    ({"max_memory_fraction": 1.5}, r"max_memory_fraction = 1.5: must be in \(0, 1\]"),
    ({"max_memory_fraction": 0}, r"max_memory_fraction = 0: must be in \(0, 1\]"),
])
def test_bad_constraints(kwargs, message):
    with pytest.raises(UserError, match=message):
        PlanConstraints(**kwargs)


def test_candidate_labels():
    s = _scenario()
    assert Candidate(0, "block", 4, "cached-own", 2, "spread-racks", s).label == (
        "block N=4 cached-own, V=2, spread-racks")
