"""Rule checks for a schedule, needing no process group: `check_schedule`.

A schedule that passes can be executed by the real runner and timed by the simulator:
every (chunk, micro-batch) has exactly one F and one B on the chunk's rank, F before B;
every compute action has its receive before it and its send after it; every send is matched
by exactly one receive on the peer rank; between each pair of ranks the receives come in the
order of the sends (NCCL matches point-to-point messages per peer by order, not by tag); and a
dry run with asynchronous sends and blocking receives finishes (no deadlock).
"""

from __future__ import annotations

from collections import defaultdict

from simulator.errors import ScheduleError
from simulator.schedule_ir import Action, ActionKind, Schedule
from simulator.schedule_unit_time import unit_time_order

__all__ = ["check_schedule", "required_comms"]

_F = ActionKind.FORWARD
_B = ActionKind.BACKWARD


def check_schedule(schedule: Schedule) -> None:
    """Raise ScheduleError naming the first broken rule; return None for a runnable schedule."""
    _check_shape(schedule)
    positions = _check_placement(schedule)
    _check_compute(schedule, positions)
    _check_comms(schedule, positions)
    _check_pair_order(schedule)
    unit_time_order(schedule)  # raises on deadlock, listing every rank's blocked action


def required_comms(action: Action, num_chunks: int) -> tuple[list[Action], list[Action]]:
    """The (receives before, sends after) a compute action needs in a pipeline of C chunks.

    F(c, m) receives RECV_F(c, m) unless c is the first chunk and sends SEND_F(c, m) unless c is
    the last; B(c, m) receives RECV_B(c, m) unless c is the last chunk and sends SEND_B(c, m)
    unless c is the first.
    """
    assert action.kind.is_compute, f"{action} is not a compute action"
    c, m = action.stage_index, action.microbatch_index
    first, last = c == 0, c == num_chunks - 1
    if action.kind is _F:
        recvs = [] if first else [Action(c, ActionKind.RECV_F, m)]
        sends = [] if last else [Action(c, ActionKind.SEND_F, m)]
    else:
        recvs = [] if last else [Action(c, ActionKind.RECV_B, m)]
        sends = [] if first else [Action(c, ActionKind.SEND_B, m)]
    return recvs, sends


def _fail(schedule: Schedule, problem: str) -> ScheduleError:
    return ScheduleError(f"schedule {schedule.label()}: {problem}")


def _check_shape(schedule: Schedule) -> None:
    """Counts are positive, ranks are exactly 0..P-1, actions are Actions within range."""
    for name in ("num_stages", "num_virtual_stages", "num_microbatches"):
        value = getattr(schedule, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _fail(schedule, f"{name} is {value!r}; it must be an integer >= 1")
    expected = list(range(schedule.num_stages))
    if sorted(schedule.actions) != expected:
        raise _fail(
            schedule,
            f"actions has ranks {sorted(schedule.actions)}, expected one list per rank {expected}",
        )
    for rank, actions in schedule.actions.items():
        for i, action in enumerate(actions):
            if not isinstance(action, Action) or not isinstance(action.kind, ActionKind):
                raise _fail(
                    schedule,
                    f"rank {rank}, action {i} is {action!r}, not an Action; build it with "
                    f"Action(stage_index, ActionKind.X, microbatch_index) or Action.from_str",
                )
            if not 0 <= action.stage_index < schedule.num_chunks:
                raise _fail(
                    schedule,
                    f"rank {rank}, action {i} ({action}) names chunk {action.stage_index}, but "
                    f"chunks run 0..{schedule.num_chunks - 1} (P x V = {schedule.num_chunks})",
                )
            if not 0 <= action.microbatch_index < schedule.num_microbatches:
                raise _fail(
                    schedule,
                    f"rank {rank}, action {i} ({action}) names micro-batch "
                    f"{action.microbatch_index}, but micro-batches run "
                    f"0..{schedule.num_microbatches - 1}",
                )


def _check_placement(schedule: Schedule) -> dict[Action, int]:
    """Every action sits on its chunk's rank, at most once; returns action -> position."""
    positions: dict[Action, int] = {}
    for rank in sorted(schedule.actions):
        for i, action in enumerate(schedule.actions[rank]):
            owner = schedule.chunk_rank(action.stage_index)
            if owner != rank:
                raise _fail(
                    schedule,
                    f"rank {rank}, action {i} ({action}) belongs on rank {owner}: chunk "
                    f"{action.stage_index} runs on rank {action.stage_index} % "
                    f"{schedule.num_stages} = {owner}",
                )
            if action in positions:
                raise _fail(
                    schedule,
                    f"{action} appears twice on rank {rank} (actions {positions[action]} and "
                    f"{i}); each action must appear exactly once",
                )
            positions[action] = i
    return positions


def _check_compute(schedule: Schedule, positions: dict[Action, int]) -> None:
    """Exactly one F and one B per (chunk, micro-batch), the F first."""
    for c in range(schedule.num_chunks):
        rank = schedule.chunk_rank(c)
        for m in range(schedule.num_microbatches):
            forward, backward = Action(c, _F, m), Action(c, _B, m)
            for action in (forward, backward):
                if action not in positions:
                    raise _fail(
                        schedule,
                        f"rank {rank} has no {action} (chunk {c}, micro-batch {m}); every chunk "
                        f"needs one F and one B per micro-batch",
                    )
            if positions[backward] < positions[forward]:
                raise _fail(
                    schedule,
                    f"rank {rank} runs {backward} (action {positions[backward]}) before "
                    f"{forward} (action {positions[forward]}); a backward needs its forward first",
                )


def _check_comms(schedule: Schedule, positions: dict[Action, int]) -> None:
    """Each compute action has its receives before it and its sends after it; no extra comms.

    With every F and B present (checked before), this also means every send has exactly one
    matching receive on the peer rank and every receive one send.
    """
    required: set[Action] = set()
    for action, position in positions.items():
        if not action.is_compute:
            continue
        rank = schedule.chunk_rank(action.stage_index)
        recvs, sends = required_comms(action, schedule.num_chunks)
        for comm in recvs + sends:
            required.add(comm)
            peer = schedule.chunk_rank(comm.partner().stage_index)
            if comm not in positions:
                raise _fail(
                    schedule,
                    f"rank {rank} has no {comm} for {action}; it pairs with "
                    f"{comm.partner()} on rank {peer}",
                )
            if comm in recvs and positions[comm] > position:
                raise _fail(
                    schedule,
                    f"rank {rank} receives {comm} (action {positions[comm]}) after {action} "
                    f"(action {position}) that needs it; a receive must come before its compute",
                )
            if comm in sends and positions[comm] < position:
                raise _fail(
                    schedule,
                    f"rank {rank} sends {comm} (action {positions[comm]}) before {action} "
                    f"(action {position}) that produces it; a send must come after its compute",
                )
    for action, position in positions.items():
        if not action.is_compute and action not in required:
            rank = schedule.chunk_rank(action.stage_index)
            raise _fail(
                schedule,
                f"rank {rank}, action {position} ({action}) has no partner: "
                f"{_why_no_partner(action, schedule.num_chunks)}",
            )


def _why_no_partner(action: Action, num_chunks: int) -> str:
    c = action.stage_index
    if action.kind is ActionKind.SEND_F and c == num_chunks - 1:
        return f"chunk {c} is the last chunk, so no chunk receives its forward output"
    if action.kind is ActionKind.RECV_F and c == 0:
        return "chunk 0 is the first chunk, so nothing sends it a forward input"
    if action.kind is ActionKind.SEND_B and c == 0:
        return "chunk 0 is the first chunk, so no chunk receives its input gradient"
    if action.kind is ActionKind.RECV_B and c == num_chunks - 1:
        return f"chunk {c} is the last chunk (the loss), so nothing sends it a gradient"
    raise AssertionError(f"{action} has a valid partner; it should have been required")


def _check_pair_order(schedule: Schedule) -> None:
    """Between each (src, dst) pair, dst receives in the order src sends."""
    sent: dict[tuple[int, int], list[Action]] = defaultdict(list)  # expected receives, in order
    received: dict[tuple[int, int], list[Action]] = defaultdict(list)
    for rank in sorted(schedule.actions):
        for action in schedule.actions[rank]:
            if action.is_compute:
                continue
            peer = schedule.chunk_rank(action.partner().stage_index)
            if action.kind.is_send:
                sent[(rank, peer)].append(action.partner())
            else:
                received[(peer, rank)].append(action)
    for (src, dst), sends in sorted(sent.items()):
        recvs = received[(src, dst)]
        for k, (expected, got) in enumerate(zip(sends, recvs)):
            if expected != got:
                raise _fail(
                    schedule,
                    f"rank {dst} receives from rank {src} out of order: message {k} that rank "
                    f"{src} sends is {expected.partner()}, but the receive number {k} on rank "
                    f"{dst} is {got}; point-to-point messages between two ranks are matched in "
                    f"order (NCCL ignores tags), so rank {dst} must receive {expected} first",
                )
        assert len(sends) == len(recvs), f"{src}->{dst}: sends and receives should pair up"
