"""Pipeline schedules as data: GPipe, 1F1B and interleaved 1F1B, one action list per rank.

`build_schedule(kind, P, V, M)` returns a `Schedule` whose `actions[rank]` the simulator engine
times and the real runner executes. A generator writes each rank's compute order (F and B);
`_with_comms` then puts a RECV just before and a SEND just after each compute action that
crosses a chunk boundary. For these three schedules that simple placement already has every
pair of ranks receive in the order it sends (what NCCL needs: it matches per-peer messages by
order) and never deadlocks; `check_schedule` verifies both and the tests sweep (kind, P, V, M).

The compute orders equal PyTorch 2.13's (`ScheduleGPipe`, `Schedule1F1B`,
`ScheduleInterleaved1F1B`); tests/test_schedule_torch.py checks that rank by rank.

    schedule = build_schedule("interleaved-1f1b", num_stages=4, num_virtual_stages=2,
                              num_microbatches=8)
    check_schedule(schedule)
    print(format_grid(schedule))
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from simulator.errors import ScheduleError
from simulator.schedule_check import check_schedule, required_comms
from simulator.schedule_ir import Action, ActionKind, Schedule, chunk_rank, chunk_virtual_index
from simulator.schedule_unit_time import (
    format_grid,
    unit_time_bubble_fraction,
    unit_time_order,
    unit_time_step_slots,
)

__all__ = [
    "Action",
    "ActionKind",
    "Schedule",
    "ScheduleKind",
    "SCHEDULES",
    "build_schedule",
    "validate_schedule_params",
    "check_schedule",
    "format_grid",
    "chunk_rank",
    "chunk_virtual_index",
    "required_comms",
    "unit_time_order",
    "unit_time_step_slots",
    "unit_time_bubble_fraction",
    "interleaved_rounds",
    "ComputeOrder",
    "ParamRule",
]

_F = ActionKind.FORWARD
_B = ActionKind.BACKWARD

# A compute-order generator: (rank, P, V, M) -> that rank's F and B actions in order.
ComputeOrder = Callable[[int, int, int, int], list[Action]]
# A parameter rule: (P, V, M) -> None when the schedule can run them, else the reason and fix.
ParamRule = Callable[[int, int, int], "str | None"]


@dataclass(frozen=True)
class ScheduleKind:
    """One entry of the SCHEDULES registry."""

    name: str
    """Registry key, as written in scenarios ("1f1b")."""
    description: str
    """One line for help texts."""
    compute_order: ComputeOrder
    """(rank, P, V, M) -> the rank's F and B actions in execution order."""
    param_rule: ParamRule
    """(P, V, M) -> None, or why these values cannot run and which would."""


def _gpipe_order(
    rank: int, num_stages: int, num_virtual: int, num_microbatches: int
) -> list[Action]:
    """All forwards, then all backwards, micro-batches in ascending order (fill-drain)."""
    forwards = [Action(rank, _F, m) for m in range(num_microbatches)]
    return forwards + [Action(rank, _B, m) for m in range(num_microbatches)]


def _one_f_one_b_order(
    rank: int, num_stages: int, num_virtual: int, num_microbatches: int
) -> list[Action]:
    """Warm-up of min(P - rank - 1, M) forwards, then alternate F and B, then drain the Bs."""
    num_warmup = min(num_stages - rank - 1, num_microbatches)
    order = [Action(rank, _F, m) for m in range(num_warmup)]
    for k in range(num_microbatches - num_warmup):  # steady state: 1F then 1B
        order += [Action(rank, _F, num_warmup + k), Action(rank, _B, k)]
    first_cooldown = num_microbatches - num_warmup
    return order + [Action(rank, _B, m) for m in range(first_cooldown, num_microbatches)]


def interleaved_rounds(num_stages: int, num_microbatches: int) -> tuple[int, int]:
    """(rounds, micro-batches per round) of interleaved 1F1B, as in PyTorch's flexible version:
    rounds = max(1, M // P) and each round has M / rounds micro-batches (which must divide)."""
    rounds = max(1, num_microbatches // num_stages)
    return rounds, num_microbatches // rounds


def _interleaved_order(
    rank: int, num_stages: int, num_virtual: int, num_microbatches: int
) -> list[Action]:
    """Depth-first interleaved 1F1B (Narayanan et al. 2021, PyTorch's flexible rounds).

    Forwards run in groups of R micro-batches (R = micro-batches per round) per chunk, cycling
    through the rank's chunks in ascending virtual index; backwards likewise, in descending
    virtual index. Warm-up: (V - 1) R + 2 (P - 1 - rank) forwards, capped at M V; then one F
    and one B alternate; then the remaining Bs.
    """
    _, per_round = interleaved_rounds(num_stages, num_microbatches)
    total = num_microbatches * num_virtual
    num_warmup = min((num_virtual - 1) * per_round + 2 * (num_stages - 1 - rank), total)

    def nth(k: int, kind: ActionKind) -> Action:
        group = k // per_round
        virtual = group % num_virtual
        if kind is _B:
            virtual = num_virtual - 1 - virtual
        microbatch = (group // num_virtual) * per_round + k % per_round
        return Action(virtual * num_stages + rank, kind, microbatch)

    order = [nth(k, _F) for k in range(num_warmup)]
    for k in range(total - num_warmup):
        order += [nth(num_warmup + k, _F), nth(k, _B)]
    return order + [nth(k, _B) for k in range(total - num_warmup, total)]


def _rule_single_chunk(name: str) -> ParamRule:
    def rule(num_stages: int, num_virtual: int, num_microbatches: int) -> str | None:
        if num_virtual != 1:
            return (
                f"num_virtual_stages must be 1 for {name} (one chunk per rank), got {num_virtual}; "
                f"set it to 1, or use interleaved-1f1b for several chunks per rank"
            )
        return None

    return rule


def _rule_interleaved(num_stages: int, num_virtual: int, num_microbatches: int) -> str | None:
    if num_virtual < 2:
        return (
            f"num_virtual_stages must be >= 2 for interleaved-1f1b, got {num_virtual}; with one "
            f"chunk per rank it is plain 1F1B: use schedule 1f1b"
        )
    if num_stages < 2:
        return (
            f"num_stages must be >= 2 for interleaved-1f1b, got {num_stages}; on one rank there is "
            f"nothing to interleave: use 1f1b or gpipe with num_virtual_stages 1"
        )
    rounds, _ = interleaved_rounds(num_stages, num_microbatches)
    if num_microbatches % rounds != 0:
        working = _working_microbatches(num_stages, num_microbatches)
        return (
            f"num_microbatches {num_microbatches} does not split into equal rounds for "
            f"interleaved-1f1b with num_stages {num_stages}: rounds = max(1, M // P) = {rounds} "
            f"must divide M (PyTorch's ScheduleInterleaved1F1B rule); nearest values that work: "
            f"{' or '.join(map(str, working))} (any M < 2P = {2 * num_stages}, or any multiple "
            f"of P, works; Megatron by default needs a multiple of P)"
        )
    return None


def _working_microbatches(num_stages: int, num_microbatches: int) -> list[int]:
    def works(m: int) -> bool:
        return m >= 1 and m % interleaved_rounds(num_stages, m)[0] == 0

    below = next(m for m in range(num_microbatches - 1, 0, -1) if works(m))
    # rounds(kP) = k divides kP, so a multiple of P is always within P above M
    above = next(
        m for m in range(num_microbatches + 1, num_microbatches + num_stages + 1) if works(m)
    )
    return [below, above]


SCHEDULES: dict[str, ScheduleKind] = {
    "gpipe": ScheduleKind(
        "gpipe", "Fill-drain: all forwards, then all backwards (Huang et al. 2019).",
        _gpipe_order, _rule_single_chunk("gpipe"),
    ),
    "1f1b": ScheduleKind(
        "1f1b", "One forward, one backward in steady state (PipeDream-Flush, Megatron).",
        _one_f_one_b_order, _rule_single_chunk("1f1b"),
    ),
    "interleaved-1f1b": ScheduleKind(
        "interleaved-1f1b",
        "1F1B over V chunks per rank, depth first (Narayanan et al. 2021); bubble / V.",
        _interleaved_order, _rule_interleaved,
    ),
}
"""Schedule name -> generator and parameter rule. Add a ScheduleKind to support a new schedule."""


def validate_schedule_params(
    kind: str, num_stages: int, num_virtual_stages: int, num_microbatches: int
) -> None:
    """Raise ScheduleError with the rule and a fix unless `kind` can run with (P, V, M).

    1F1B accepts any M >= 1, as Megatron's does: with M < P the ranks with P - rank >= M simply
    fill and drain. PyTorch's Schedule1F1B refuses M < P, so a runner built on it needs M >= P;
    ours walks the action lists and does not. Interleaved 1F1B follows PyTorch's
    ScheduleInterleaved1F1B: any M with max(1, M // P) dividing M, so M < P too (Megatron
    wants M >= P and, with its default group size, a multiple of P).
    """
    if kind not in SCHEDULES:
        close = difflib.get_close_matches(str(kind).lower(), list(SCHEDULES), n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ScheduleError(
            f"schedule {kind!r} is unknown; {hint}known schedules: {', '.join(SCHEDULES)}"
        )
    for name, value in (
        ("num_stages", num_stages),
        ("num_virtual_stages", num_virtual_stages),
        ("num_microbatches", num_microbatches),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScheduleError(f"{name} must be an integer, got {value!r}")
        if value < 1:
            raise ScheduleError(f"{name} must be >= 1, got {value}")
    problem = SCHEDULES[kind].param_rule(num_stages, num_virtual_stages, num_microbatches)
    if problem is not None:
        raise ScheduleError(problem)


def build_schedule(
    kind: str, num_stages: int, num_virtual_stages: int, num_microbatches: int
) -> Schedule:
    """The schedule `kind` for P ranks, V chunks per rank and M micro-batches.

    Raises:
        ScheduleError: the parameters break a rule (see `validate_schedule_params`).
    """
    validate_schedule_params(kind, num_stages, num_virtual_stages, num_microbatches)
    order = SCHEDULES[kind].compute_order
    compute = {
        rank: order(rank, num_stages, num_virtual_stages, num_microbatches)
        for rank in range(num_stages)
    }
    num_chunks = num_stages * num_virtual_stages
    actions = {rank: _with_comms(ops, num_chunks) for rank, ops in compute.items()}
    return Schedule(kind, num_stages, num_virtual_stages, num_microbatches, actions)


def _with_comms(compute: list[Action], num_chunks: int) -> list[Action]:
    """Each compute action with its receive just before it and its send just after it."""
    actions: list[Action] = []
    for action in compute:
        recvs, sends = required_comms(action, num_chunks)
        actions += recvs + [action] + sends
    return actions
