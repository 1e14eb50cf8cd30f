"""Tests for simulator.schedule: generators, parameter rules, rule checks and the unit-time grid.

No process group and no torch here; tests/test_schedule_torch.py compares with PyTorch.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from fractions import Fraction

import pytest

from simulator.errors import ScheduleError, UserError
from simulator.schedule import (
    SCHEDULES,
    Action,
    ActionKind,
    Schedule,
    ScheduleKind,
    build_schedule,
    check_schedule,
    chunk_rank,
    chunk_virtual_index,
    format_grid,
    interleaved_rounds,
    required_comms,
    unit_time_bubble_fraction,
    unit_time_order,
    unit_time_step_slots,
    validate_schedule_params,
)

F, B = ActionKind.FORWARD, ActionKind.BACKWARD


def _valid(kind: str, p: int, v: int, m: int) -> bool:
    try:
        validate_schedule_params(kind, p, v, m)
    except ScheduleError:
        return False
    return True


def _grid() -> list[tuple[str, int, int, int]]:
    cases = []
    for p, m in itertools.product((1, 2, 3, 4, 8), (1, 2, 3, 4, 5, 7, 8, 9, 12, 16)):
        cases += [("gpipe", p, 1, m), ("1f1b", p, 1, m)]
        for v in (2, 3, 4):
            if _valid("interleaved-1f1b", p, v, m):
                cases.append(("interleaved-1f1b", p, v, m))
    return cases


GRID = _grid()


def _parse(rows: dict[int, str]) -> dict[int, list[Action]]:
    return {rank: [Action.from_str(s) for s in row.split()] for rank, row in rows.items()}


def _gpipe_2x1(**rows: str) -> Schedule:
    """A hand-written GPipe schedule, P=2 and M=1, with rank rows replaceable by keyword."""
    default = {
        0: "0F0 0SEND_F0 0RECV_B0 0B0",
        1: "1RECV_F0 1F0 1B0 1SEND_B0",
    }
    default.update({int(k[1:]): v for k, v in rows.items()})
    return Schedule("gpipe", 2, 1, 1, _parse(default))


# ---- actions -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(ActionKind))
def test_action_string_round_trip(kind: ActionKind) -> None:
    action = Action(12, kind, 7)
    assert str(action) == f"12{kind.value}7"
    assert Action.from_str(str(action)) == action
    assert repr(action) == str(action)


def test_action_strings_are_pytorch_compact_form() -> None:
    assert str(Action(1, F, 0)) == "1F0"
    assert str(Action(2, ActionKind.SEND_F, 3)) == "2SEND_F3"
    assert str(Action(0, ActionKind.RECV_B, 1)) == "0RECV_B1"
    assert Action.from_str(" 3B10 ") == Action(3, B, 10)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", r"action '' is not <chunk><kind><microbatch>"),
        ("F0", r"action 'F0' is not <chunk><kind><microbatch>"),
        ("1F", r"action '1F' is not <chunk><kind><microbatch>"),
        ("1F0x", r"'1F0x' is not <chunk><kind><microbatch>; write it like '1F0'"),
        ("-1F0", r"is not <chunk><kind><microbatch>"),
        ("1W0", r"action '1W0' has unknown kind 'W'; kinds are F, B, SEND_F, RECV_F"),
        ("1f0", r"unknown kind 'f'"),
        (5, r"action 5 is not a string"),
    ],
)
def test_action_from_str_rejects_junk(text: object, match: str) -> None:
    with pytest.raises(ScheduleError, match=match):
        Action.from_str(text)  # type: ignore[arg-type]


def test_action_partner_and_compute_action() -> None:
    assert Action(2, ActionKind.SEND_F, 5).partner() == Action(3, ActionKind.RECV_F, 5)
    assert Action(3, ActionKind.RECV_F, 5).partner() == Action(2, ActionKind.SEND_F, 5)
    assert Action(2, ActionKind.SEND_B, 5).partner() == Action(1, ActionKind.RECV_B, 5)
    assert Action(1, ActionKind.RECV_B, 5).partner() == Action(2, ActionKind.SEND_B, 5)
    assert Action(2, ActionKind.SEND_B, 5).compute_action() == Action(2, B, 5)
    assert Action(3, ActionKind.RECV_F, 5).compute_action() == Action(3, F, 5)


def test_placement_is_interleaved() -> None:
    assert [chunk_rank(c, 4) for c in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert [chunk_virtual_index(c, 4) for c in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    schedule = build_schedule("interleaved-1f1b", 4, 3, 8)
    assert schedule.num_chunks == 12
    assert schedule.chunks_of_rank(1) == [1, 5, 9]
    assert {a.stage_index for a in schedule.actions[1]} == {1, 5, 9}


# ---- parameter rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("1F1B", 2, 1, 4), r"schedule '1F1B' is unknown; did you mean '1f1b'\? known schedules: "
                            r"gpipe, 1f1b, interleaved-1f1b"),
        (("interleaved", 2, 2, 4), r"did you mean 'interleaved-1f1b'\?"),
        (("zb-h1", 2, 1, 4), r"schedule 'zb-h1' is unknown; known schedules"),
        (("gpipe", 0, 1, 4), r"num_stages must be >= 1, got 0"),
        (("1f1b", 2, 1, 0), r"num_microbatches must be >= 1, got 0"),
        (("1f1b", 2, 0, 4), r"num_virtual_stages must be >= 1, got 0"),
        (("1f1b", 2.0, 1, 4), r"num_stages must be an integer, got 2.0"),
        (("1f1b", 2, 1, True), r"num_microbatches must be an integer, got True"),
        (("gpipe", 2, 2, 4), r"num_virtual_stages must be 1 for gpipe \(one chunk per rank\), "
                             r"got 2; set it to 1, or use interleaved-1f1b"),
        (("1f1b", 4, 3, 4), r"num_virtual_stages must be 1 for 1f1b"),
        (("interleaved-1f1b", 4, 1, 8), r"num_virtual_stages must be >= 2 for interleaved-1f1b, "
                                        r"got 1; with one chunk per rank it is plain 1F1B: use "
                                        r"schedule 1f1b"),
        (("interleaved-1f1b", 1, 2, 8), r"num_stages must be >= 2 for interleaved-1f1b, got 1"),
        (("interleaved-1f1b", 4, 2, 9), r"num_microbatches 9 does not split into equal rounds for "
                                        r"interleaved-1f1b with num_stages 4: rounds = max\(1, M "
                                        r"// P\) = 2 must divide M .*nearest values that work: 8 "
                                        r"or 10 \(any M < 2P = 8, or any multiple of P, works"),
        (("interleaved-1f1b", 4, 2, 13), r"rounds = max\(1, M // P\) = 3 .* 12 or 15"),
    ],
)
def test_validate_rejects_with_message(args: tuple, match: str) -> None:
    with pytest.raises(ScheduleError, match=match):
        validate_schedule_params(*args)
    with pytest.raises(ScheduleError, match=match):
        build_schedule(*args)


def test_schedule_error_is_a_user_error() -> None:
    with pytest.raises(UserError):
        validate_schedule_params("nope", 2, 1, 2)
    assert issubclass(ScheduleError, ValueError)


def test_interleaved_microbatch_rule_matches_rounds() -> None:
    # M < 2P always works (one round); otherwise rounds = M // P must divide M.
    p = 4
    accepted = [m for m in range(1, 30) if _valid("interleaved-1f1b", p, 2, m)]
    assert accepted == [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 16, 20, 24, 28]
    for m in accepted:
        rounds, per_round = interleaved_rounds(p, m)
        assert rounds * per_round == m


def test_1f1b_accepts_fewer_microbatches_than_stages() -> None:
    # PyTorch's Schedule1F1B refuses M < P; ours runs it (ranks with P - rank >= M fill and
    # drain), like Megatron's.
    schedule = build_schedule("1f1b", 4, 1, 2)
    check_schedule(schedule)
    for rank in range(3):  # P - rank >= M: the warm-up takes every micro-batch
        assert [str(a) for a in schedule.compute_actions(rank)] == [
            f"{rank}F0", f"{rank}F1", f"{rank}B0", f"{rank}B1"]
    assert [str(a) for a in schedule.compute_actions(3)] == ["3F0", "3B0", "3F1", "3B1"]


# ---- generated schedules -------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "p", "v", "m"), GRID)
def test_generated_schedules_pass_all_checks(kind: str, p: int, v: int, m: int) -> None:
    schedule = build_schedule(kind, p, v, m)
    assert (schedule.kind, schedule.num_stages, schedule.num_virtual_stages,
            schedule.num_microbatches) == (kind, p, v, m)
    check_schedule(schedule)


@pytest.mark.parametrize(("kind", "p", "v", "m"), GRID)
def test_action_counts(kind: str, p: int, v: int, m: int) -> None:
    schedule = build_schedule(kind, p, v, m)
    c = p * v
    counts = {k: 0 for k in ActionKind}
    for rank in range(p):
        per_rank = [a.kind for a in schedule.actions[rank]]
        assert per_rank.count(F) == v * m
        assert per_rank.count(B) == v * m
        for kind_ in ActionKind:
            counts[kind_] += per_rank.count(kind_)
    for comm in (ActionKind.SEND_F, ActionKind.RECV_F, ActionKind.SEND_B, ActionKind.RECV_B):
        assert counts[comm] == (c - 1) * m  # one message per chunk boundary and micro-batch


@pytest.mark.parametrize(("kind", "p", "v", "m"), GRID)
def test_comms_sit_right_next_to_their_compute(kind: str, p: int, v: int, m: int) -> None:
    """The contract others code against: RECV just before its F/B, SEND just after."""
    schedule = build_schedule(kind, p, v, m)
    for actions in schedule.actions.values():
        for i, action in enumerate(actions):
            if not action.is_compute:
                continue
            recvs, sends = required_comms(action, schedule.num_chunks)
            assert actions[i - len(recvs):i] == recvs
            assert actions[i + 1:i + 1 + len(sends)] == sends


@pytest.mark.parametrize(("p", "m"), [(1, 3), (2, 1), (4, 2), (4, 4), (4, 9), (8, 16)])
def test_1f1b_warmup_and_in_flight(p: int, m: int) -> None:
    """Megatron counts P - rank - 1 warm-up forwards; the steady state then starts with one more
    F, so min(P - rank, M) forwards precede the first backward, and that is also the most
    micro-batches a rank holds activations for."""
    schedule = build_schedule("1f1b", p, 1, m)
    for rank in range(p):
        kinds = [a.kind for a in schedule.compute_actions(rank)]
        assert kinds.index(B) == min(p - rank, m)
        assert schedule.peak_in_flight(rank) == min(p - rank, m)
        steady = kinds[min(p - rank - 1, m):]
        num_pairs = m - min(p - rank - 1, m)
        assert steady[:2 * num_pairs] == [F, B] * num_pairs
        assert set(steady[2 * num_pairs:]) <= {B}


@pytest.mark.parametrize(("p", "m"), [(1, 2), (3, 5), (4, 8)])
def test_gpipe_is_all_forwards_then_all_backwards(p: int, m: int) -> None:
    schedule = build_schedule("gpipe", p, 1, m)
    for rank in range(p):
        expected = [Action(rank, F, i) for i in range(m)] + [Action(rank, B, i) for i in range(m)]
        assert schedule.compute_actions(rank) == expected
        assert schedule.peak_in_flight(rank) == m


@pytest.mark.parametrize(("p", "v", "m"), [(2, 2, 4), (4, 2, 8), (4, 3, 6), (4, 2, 3), (8, 2, 16)])
def test_interleaved_warmup_and_in_flight(p: int, v: int, m: int) -> None:
    """Warm-up (V - 1) R + 2 (P - 1 - rank) forwards, R = micro-batches per round, capped at MV;
    one more F precedes the first B unless every forward is warm-up."""
    schedule = build_schedule("interleaved-1f1b", p, v, m)
    _, per_round = interleaved_rounds(p, m)
    for rank in range(p):
        warmup = min((v - 1) * per_round + 2 * (p - 1 - rank), m * v)
        expected = min(warmup + 1, m * v)
        kinds = [a.kind for a in schedule.compute_actions(rank)]
        assert kinds.index(B) == expected
        assert schedule.peak_in_flight(rank) == expected


def test_interleaved_forwards_go_round_by_round_through_chunks() -> None:
    schedule = build_schedule("interleaved-1f1b", 2, 2, 4)
    forwards = [str(a) for a in schedule.compute_actions(0) if a.kind is F]
    assert forwards == ["0F0", "0F1", "2F0", "2F1", "0F2", "0F3", "2F2", "2F3"]
    backwards = [str(a) for a in schedule.compute_actions(0) if a.kind is B]
    assert backwards == ["2B0", "2B1", "0B0", "0B1", "2B2", "2B3", "0B2", "0B3"]


# ---- unit-time closed forms ----------------------------------------------------------------


def _closed_form_slots(kind: str, p: int, v: int, m: int) -> int:
    if kind in ("gpipe", "1f1b"):
        return 2 * (m + p - 1)
    # Interleaved: a slot is one chunk's F (or B). With M >= P the bubble is 2(P - 1) slots
    # (Narayanan et al.: (P - 1)/(VM) of the ideal 2MV). With M < P no rank can fill the gap
    # before its next chunk's input returns, and each micro-batch runs the whole PV-deep pipe.
    return 2 * (m * v + p - 1) if m >= p else 2 * (m + p * v - 1)


@pytest.mark.parametrize(("kind", "p", "v", "m"), GRID)
def test_step_length_matches_closed_form(kind: str, p: int, v: int, m: int) -> None:
    schedule = build_schedule(kind, p, v, m)
    assert unit_time_step_slots(schedule) == _closed_form_slots(kind, p, v, m)


@pytest.mark.parametrize(("kind", "p", "v", "m"),
                         [case for case in GRID if case[3] >= case[1]])
def test_bubble_matches_narayanan(kind: str, p: int, v: int, m: int) -> None:
    """Bubble over ideal time = (P - 1) / (V M) for every schedule here when M >= P."""
    schedule = build_schedule(kind, p, v, m)
    step = unit_time_step_slots(schedule)
    ideal = 2 * m * v
    assert Fraction(step - ideal, ideal) == Fraction(p - 1, v * m)
    fraction = unit_time_bubble_fraction(schedule)
    assert fraction == pytest.approx((step - ideal) / step)


@pytest.mark.parametrize(
    ("kind", "p", "v", "m"),
    [(kind, p, v, m) for kind, p, v, m in GRID
     if kind != "interleaved-1f1b" or interleaved_rounds(p, m)[1] <= p],
)
def test_microbatch_zero_never_waits(kind: str, p: int, v: int, m: int) -> None:
    """Micro-batch 0 goes first: its F on chunk c starts at slot c. (Interleaved only when a
    round has at most P micro-batches; with P < R < 2P rank 0 is still busy with the round when
    micro-batch 0 comes back.) In 1F1B its B on chunk c starts at slot 2C - 1 - c."""
    schedule = build_schedule(kind, p, v, m)
    starts = {action: start for ops in unit_time_order(schedule).values() for start, action in ops}
    c_total = schedule.num_chunks
    for c in range(c_total):
        assert starts[Action(c, F, 0)] == c
        if kind == "1f1b":
            assert starts[Action(c, B, 0)] == 2 * c_total - 1 - c


def test_unit_time_order_is_in_rank_order_without_overlap() -> None:
    schedule = build_schedule("interleaved-1f1b", 4, 2, 8)
    for rank, ops in unit_time_order(schedule).items():
        assert [a for _, a in ops] == schedule.compute_actions(rank)
        starts = [s for s, _ in ops]
        assert all(b > a for a, b in zip(starts, starts[1:]))


# ---- check_schedule on broken schedules ----------------------------------------------------


def test_hand_written_schedule_passes() -> None:
    check_schedule(_gpipe_2x1())


@pytest.mark.parametrize(
    ("schedule", "match"),
    [
        (Schedule("gpipe", 0, 1, 1, {}), r"num_stages is 0; it must be an integer >= 1"),
        (Schedule("gpipe", 2, 1, 1, _parse({0: "0F0 0B0"})),
         r"actions has ranks \[0\], expected one list per rank \[0, 1\]"),
        (Schedule("gpipe", 1, 1, 1, {0: ["0F0"]}),  # type: ignore[list-item]
         r"rank 0, action 0 is '0F0', not an Action"),
        (_gpipe_2x1(r1="1RECV_F0 1F0 1B0 1SEND_B0 3F0"),
         r"rank 1, action 4 \(3F0\) names chunk 3, but chunks run 0..1"),
        (_gpipe_2x1(r1="1RECV_F0 1F0 1B0 1SEND_B0 1F1"),
         r"rank 1, action 4 \(1F1\) names micro-batch 1, but micro-batches run 0..0"),
        (_gpipe_2x1(r0="0F0 0SEND_F0 0RECV_B0 0B0 1F0"),
         r"rank 0, action 4 \(1F0\) belongs on rank 1: chunk 1 runs on rank 1 % 2 = 1"),
        (_gpipe_2x1(r0="0F0 0SEND_F0 0F0 0RECV_B0 0B0"),
         r"0F0 appears twice on rank 0 \(actions 0 and 2\)"),
        (_gpipe_2x1(r1="1RECV_F0 1F0 1SEND_B0"),
         r"rank 1 has no 1B0 \(chunk 1, micro-batch 0\); every chunk needs one F and one B"),
        (_gpipe_2x1(r1="1B0 1RECV_F0 1F0 1SEND_B0"),
         r"rank 1 runs 1B0 \(action 0\) before 1F0 \(action 2\); a backward needs its forward"),
        (_gpipe_2x1(r0="0F0 0RECV_B0 0B0"),
         r"rank 0 has no 0SEND_F0 for 0F0; it pairs with 1RECV_F0 on rank 1"),
        (_gpipe_2x1(r1="1F0 1RECV_F0 1B0 1SEND_B0"),
         r"rank 1 receives 1RECV_F0 \(action 1\) after 1F0 \(action 0\) that needs it; a "
         r"receive must come before its compute"),
        (_gpipe_2x1(r0="0SEND_F0 0F0 0RECV_B0 0B0"),
         r"rank 0 sends 0SEND_F0 \(action 0\) before 0F0 \(action 1\) that produces it; a send "
         r"must come after its compute"),
        (_gpipe_2x1(r1="1RECV_F0 1F0 1SEND_F0 1B0 1SEND_B0"),
         r"rank 1, action 2 \(1SEND_F0\) has no partner: chunk 1 is the last chunk, so no chunk "
         r"receives its forward output"),
        (_gpipe_2x1(r0="0RECV_F0 0F0 0SEND_F0 0RECV_B0 0B0"),
         r"rank 0, action 0 \(0RECV_F0\) has no partner: chunk 0 is the first chunk, so nothing "
         r"sends it a forward input"),
        (_gpipe_2x1(r0="0F0 0SEND_F0 0RECV_B0 0B0 0SEND_B0"),
         r"action 4 \(0SEND_B0\) has no partner: chunk 0 is the first chunk, so no chunk "
         r"receives its input gradient"),
        (_gpipe_2x1(r1="1RECV_F0 1F0 1RECV_B0 1B0 1SEND_B0"),
         r"action 2 \(1RECV_B0\) has no partner: chunk 1 is the last chunk \(the loss\)"),
        (_gpipe_2x1(r0="0RECV_B0 0F0 0SEND_F0 0B0"),
         r"schedule gpipe \(P=2, V=1, M=1\) deadlocks: with asynchronous sends and blocking "
         r"receives no rank can proceed; rank 0 blocked at 0RECV_B0 \(action 0 of 4\), waiting "
         r"for 1SEND_B0 from rank 1; rank 1 blocked at 1RECV_F0 \(action 0 of 4\), waiting for "
         r"0SEND_F0 from rank 0"),
    ],
)
def test_check_schedule_pins_each_message(schedule: Schedule, match: str) -> None:
    with pytest.raises(ScheduleError, match=match):
        check_schedule(schedule)


def test_check_schedule_catches_receives_out_of_send_order() -> None:
    schedule = build_schedule("gpipe", 2, 1, 2)
    rows = {0: " ".join(map(str, schedule.actions[0])),
            1: "1RECV_F1 1RECV_F0 1F0 1F1 1B0 1SEND_B0 1B1 1SEND_B1"}
    with pytest.raises(ScheduleError, match=(
        r"rank 1 receives from rank 0 out of order: message 0 that rank 0 sends is 0SEND_F0, "
        r"but the receive number 0 on rank 1 is 1RECV_F1; point-to-point messages between two "
        r"ranks are matched in order \(NCCL ignores tags\), so rank 1 must receive 1RECV_F0 "
        r"first")):
        check_schedule(Schedule("gpipe", 2, 1, 2, _parse(rows)))


def test_check_schedule_catches_a_cross_rank_wait_cycle() -> None:
    """Statically fine (every rule above holds, messages in order) but stuck: rank 0 waits for
    the gradient of micro-batch 0 before sending micro-batch 1, while rank 1 wants micro-batch 1
    before it runs any backward."""
    rows = {0: "0F0 0SEND_F0 0RECV_B0 0B0 0F1 0SEND_F1 0RECV_B1 0B1",
            1: "1RECV_F0 1F0 1RECV_F1 1F1 1B0 1SEND_B0 1B1 1SEND_B1"}
    with pytest.raises(ScheduleError, match=(
        r"rank 0 blocked at 0RECV_B0 \(action 2 of 8\), waiting for 1SEND_B0 from rank 1; "
        r"rank 1 blocked at 1RECV_F1 \(action 2 of 8\), waiting for 0SEND_F1 from rank 0$")):
        check_schedule(Schedule("gpipe", 2, 1, 2, _parse(rows)))


def test_unit_time_order_lists_finished_ranks_on_deadlock() -> None:
    schedule = Schedule("gpipe", 2, 1, 1, _parse({0: "", 1: "1RECV_F0 1F0"}))
    with pytest.raises(ScheduleError, match=(
        r"rank 0 finished; rank 1 blocked at 1RECV_F0 \(action 0 of 2\), waiting for 0SEND_F0 "
        r"from rank 0")):
        unit_time_order(schedule)


# ---- registry, grid, layering --------------------------------------------------------------


def test_registry_accepts_a_new_schedule(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fill-drain variant that runs backwards last-in first-out, added through SCHEDULES."""

    def lifo_order(rank: int, p: int, v: int, m: int) -> list[Action]:
        forwards = [Action(rank, F, i) for i in range(m)]
        return forwards + [Action(rank, B, i) for i in reversed(range(m))]

    kind = ScheduleKind(
        "gpipe-lifo", "GPipe with LIFO backwards.", lifo_order, lambda p, v, m: None
    )
    monkeypatch.setitem(SCHEDULES, "gpipe-lifo", kind)
    schedule = build_schedule("gpipe-lifo", 3, 1, 4)
    check_schedule(schedule)
    assert str(schedule.compute_actions(2)[4]) == "2B3"
    assert unit_time_step_slots(schedule) == 2 * (4 + 3 - 1)


def test_format_grid_shows_bubble_and_legend() -> None:
    text = format_grid(build_schedule("1f1b", 4, 1, 8))
    lines = text.splitlines()
    assert lines[0] == "1f1b (P=4, V=1, M=8): 22 slots, idle 27.3% of each rank"
    assert lines[1].startswith("slot   | 0")
    assert lines[2] == "rank 0 | F0 F1 F2 F3 .  .  .  B0 F4 B1 F5 B2 F6 B3 F7 B4 .  B5 .  B6 .  B7"
    assert lines[5] == "rank 3 | .  .  .  F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7 .  .  ."
    assert lines[6].startswith("legend: Fm = forward of micro-batch m")


def test_format_grid_stays_readable_for_p8_m16() -> None:
    schedule = build_schedule("interleaved-1f1b", 8, 2, 16)
    text = format_grid(schedule, max_width_chars=120)
    assert max(len(line) for line in text.splitlines()) <= 120
    rank_rows = [line for line in text.splitlines() if line.startswith("rank 7 |")]
    cells = [cell for row in rank_rows for cell in row.split("|", 1)[1].split()]
    assert len(cells) == unit_time_step_slots(schedule)
    busy = [cell for cell in cells if cell != "."]
    assert len(busy) == 2 * 16 * 2
    assert cells[7] == "F0a" and "F0b" in cells and "B15a" in cells
    assert "suffix a, b" in text


def test_simulator_schedule_does_not_import_torch() -> None:
    code = ("import sys, simulator.schedule as s; "
            "s.format_grid(s.build_schedule('1f1b', 2, 1, 2)); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
