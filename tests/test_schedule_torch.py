"""Our schedules against PyTorch's own (torch.distributed.pipelining), without a process group.

- Interleaved 1F1B: ScheduleInterleaved1F1B builds `pipeline_order` for every rank in its
  constructor; lightweight stand-in stage objects (index, counts, group rank) are enough.
- 1F1B and GPipe: the order that matters is what `_step_microbatches` executes. We run it once
  per rank with a stand-in stage whose communication op lists are empty and whose
  forward_one_chunk / backward_one_chunk record the call. (Schedule1F1B's `pipeline_order`, the
  IR it builds for visualisation, is off by one on the last rank in torch 2.13 -- it starts at F1
  and ends at F{M} -- so it is not the reference.)
"""

from __future__ import annotations

import itertools

import pytest

from simulator.errors import ScheduleError
from simulator.schedule import Action, build_schedule, chunk_rank, validate_schedule_params

pipelining = pytest.importorskip("torch.distributed.pipelining.schedules")


class _StageStandIn:
    """The attributes a schedule reads from a pipeline stage, and a log of compute calls."""

    def __init__(self, stage_index: int, num_stages: int, group_size: int, group_rank: int) -> None:
        self.stage_index = stage_index
        self.num_stages = num_stages
        self.group_size = group_size
        self.group_rank = group_rank
        self.is_first = stage_index == 0
        self.is_last = stage_index == num_stages - 1
        self.has_backward = False
        self.output_chunks: list[object] = []
        self.calls: list[str] = []

    def get_fwd_recv_ops(self, microbatch_index: int) -> list[object]:
        return []

    get_fwd_send_ops = get_bwd_recv_ops = get_bwd_send_ops = get_fwd_recv_ops

    def forward_one_chunk(self, microbatch_index: int, *args: object, **kwargs: object) -> None:
        self.calls.append(f"{self.stage_index}F{microbatch_index}")

    def backward_one_chunk(self, microbatch_index: int, **kwargs: object) -> None:
        self.calls.append(f"{self.stage_index}B{microbatch_index}")

    def perform_reduce_grad(self, *args: object) -> None:
        pass

    def clear_runtime_states(self) -> None:
        pass


def _torch_single_stage_order(
    schedule_class: type, num_stages: int, num_microbatches: int
) -> dict[int, list[str]]:
    """rank -> compute calls made by torch's _step_microbatches for that rank's stage."""
    order = {}
    for rank in range(num_stages):
        stage = _StageStandIn(rank, num_stages, num_stages, rank)
        schedule = schedule_class(stage, num_microbatches)
        schedule._stage_forward_initialized = True  # skip shape inference, which needs tensors
        schedule._step_microbatches()
        order[rank] = stage.calls
    return order


def _torch_interleaved(num_stages: int, num_virtual: int, num_microbatches: int) -> object:
    """ScheduleInterleaved1F1B as rank 0 builds it; its pipeline_order covers every rank."""
    stages = [
        _StageStandIn(v * num_stages, num_stages * num_virtual, num_stages, 0)
        for v in range(num_virtual)
    ]
    return pipelining.ScheduleInterleaved1F1B(stages, num_microbatches)


def _ours(kind: str, p: int, v: int, m: int) -> dict[int, list[str]]:
    schedule = build_schedule(kind, p, v, m)
    return {rank: [str(a) for a in schedule.compute_actions(rank)] for rank in range(p)}


_SINGLE_CASES = [(p, m) for p in (2, 3, 4, 8) for m in (p, p + 1, 2 * p, 3 * p - 1)] + [(1, 3)]


@pytest.mark.parametrize(("p", "m"), _SINGLE_CASES)
def test_1f1b_matches_torch_execution(p: int, m: int) -> None:
    assert _ours("1f1b", p, 1, m) == _torch_single_stage_order(pipelining.Schedule1F1B, p, m)


@pytest.mark.parametrize(("p", "m"), _SINGLE_CASES + [(4, 1), (4, 3)])
def test_gpipe_matches_torch_execution(p: int, m: int) -> None:
    assert _ours("gpipe", p, 1, m) == _torch_single_stage_order(pipelining.ScheduleGPipe, p, m)


def test_torch_1f1b_refuses_fewer_microbatches_than_stages() -> None:
    """Why we say so in validate_schedule_params' docstring: a runner built on torch's
    Schedule1F1B needs M >= P, while our 1f1b also runs M < P."""
    with pytest.raises(ValueError, match="must be greater than or equal to the number of stages"):
        pipelining.Schedule1F1B(_StageStandIn(0, 4, 4, 0), 3)
    validate_schedule_params("1f1b", 4, 1, 3)


def _interleaved_cases() -> list[tuple[int, int, int]]:
    cases = []
    for p, v in itertools.product((2, 3, 4, 8), (2, 3)):
        for m in sorted({1, 2, p - 1, p, p + 1, 2 * p - 1, 2 * p, 3 * p, 4 * p, 10}):
            try:
                validate_schedule_params("interleaved-1f1b", p, v, m)
            except ScheduleError:
                continue
            cases.append((p, v, m))
    return cases


@pytest.mark.parametrize(("p", "v", "m"), _interleaved_cases())
def test_interleaved_matches_torch_pipeline_order(p: int, v: int, m: int) -> None:
    torch_order = {
        rank: [str(a) for a in actions if a is not None]
        for rank, actions in _torch_interleaved(p, v, m).pipeline_order.items()
    }
    assert _ours("interleaved-1f1b", p, v, m) == torch_order


def _pair_streams(
    actions_by_rank: dict[int, list[object]], num_stages: int
) -> dict[tuple, list[Action]]:
    """(rank, peer, "send" | "recv") -> that rank's messages with that peer, in list order."""
    streams: dict[tuple, list[Action]] = {}
    for rank, actions in actions_by_rank.items():
        for item in actions:
            text = str(item)
            if not any(code in text for code in ("SEND_F", "RECV_F", "SEND_B", "RECV_B")):
                continue  # torch also lists UNSHARD, RESHARD, REDUCE_GRAD
            action = Action.from_str(text)
            peer = chunk_rank(action.partner().stage_index, num_stages)
            direction = "send" if action.kind.is_send else "recv"
            streams.setdefault((rank, peer, direction), []).append(action)
    return streams


@pytest.mark.parametrize(
    ("p", "v", "m"), [(2, 2, 4), (2, 3, 6), (2, 2, 3), (3, 2, 5), (4, 2, 8), (4, 3, 10)]
)
def test_interleaved_messages_per_rank_pair_match_torch(p: int, v: int, m: int) -> None:
    """Torch's lowering (pipeline_order_with_comms) places each receive where its sender sends,
    so between two ranks torch receives in send order by construction. Our placement (receive
    just before use) must give the same message sequence on every (rank, peer) pair, both kinds
    together -- with P = 2 activations and gradients share each pair."""
    torch_streams = _pair_streams(_torch_interleaved(p, v, m).pipeline_order_with_comms, p)
    our_streams = _pair_streams(build_schedule("interleaved-1f1b", p, v, m).actions, p)
    assert our_streams == torch_streams


@pytest.mark.parametrize("p", [2, 3, 4, 8])
def test_interleaved_microbatch_rule_equals_torch(p: int) -> None:
    """We accept exactly the M that ScheduleInterleaved1F1B accepts."""
    for m in range(1, 5 * p):
        try:
            _torch_interleaved(p, 2, m)
            torch_accepts = True
        except ValueError:
            torch_accepts = False
        try:
            validate_schedule_params("interleaved-1f1b", p, 2, m)
            we_accept = True
        except ScheduleError:
            we_accept = False
        assert we_accept == torch_accepts, (p, m)
