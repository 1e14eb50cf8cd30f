"""A rank's action list compiled for the engine: flat tuples with every number resolved.

The engine walks each rank's actions once per replica (64 times on a 1,024-GPU step), so the
lookups that do not depend on the replica happen here, once per pipeline rank: durations from
the plan, bytes from the boundary manifest, memory sizes, the partner a receive expects, and the
channel a message travels on (an index into the rank's channel keys).

An op is (code, chunk, micro-batch, a, b, action, host seconds):

| code | a | b | host seconds |
|---|---|---|---|
| `F` | forward seconds | bytes allocated at its start | after it (the runner's bookkeeping) |
| `B` | backward seconds | bytes freed at its end | after it |
| `SEND` | channel index | bytes per TP rank | the send's host time (StepPlan) |
| `RECV` | channel index | (expected bytes, bytes allocated at its start, partner action) | posting its receives |

A channel key is (sending rank, receiving rank, direction) within one replica.
"""

from __future__ import annotations

from simulator.errors import ScheduleError
from simulator.schedule_ir import ActionKind
from simulator.step_plan import StepPlan

__all__ = ["F", "B", "SEND", "RECV", "ChannelKey", "compile_rank"]

F, B, SEND, RECV = 0, 1, 2, 3
"""Op codes; F and B are the two smallest, so `code <= B` means compute."""

ChannelKey = tuple[int, int, str]


def compile_rank(plan: StepPlan, pp: int) -> tuple[list[tuple], list[ChannelKey]]:
    """Pipeline rank `pp`'s ops, and the channel key of each channel index they use.

    Raises:
        ScheduleError: a send on a transition the boundary manifest does not have.
    """
    schedule = plan.schedule
    recv_bytes = plan.recv_bytes if plan.recv_bytes is not None else plan.send_bytes
    memory = plan.memory[pp] if plan.memory is not None else None
    ops: list[tuple] = []
    keys: dict[ChannelKey, int] = {}
    for action in schedule.actions[pp]:
        c, m, kind = action.stage_index, action.microbatch_index, action.kind
        if kind is ActionKind.FORWARD:
            alloc = memory.activation_bytes.get(c, 0) if memory else 0
            ops.append((F, c, m, plan.forward_s[c], alloc, action,
                        plan.forward_host_s[c] if plan.forward_host_s else 0.0))
        elif kind is ActionKind.BACKWARD:
            free = (memory.activation_bytes.get(c, 0) + memory.received_bytes.get(c, 0)
                    if memory else 0)
            ops.append((B, c, m, plan.backward_s[c], free, action,
                        plan.backward_host_s[c] if plan.backward_host_s else 0.0))
        elif kind.is_send:
            direction = "forward" if kind is ActionKind.SEND_F else "backward"
            peer = schedule.chunk_rank(c + 1 if kind is ActionKind.SEND_F else c - 1)
            key = (direction, c)
            if key not in plan.send_bytes:
                raise ScheduleError(f"rank {pp}: {action} sends on transition {key} that "
                                    "the boundary manifest does not have")
            channel_index = keys.setdefault((pp, peer, direction), len(keys))
            extra = _tensors(plan, key) - 1
            num_bytes = plan.send_bytes[key]
            ops.append((SEND, c, m, channel_index, num_bytes, action,
                        plan.send_overhead_s + extra * plan.send_overhead_per_tensor_s
                        + num_bytes * plan.send_s_per_byte))
        else:
            direction = "forward" if kind is ActionKind.RECV_F else "backward"
            src_chunk = c - 1 if kind is ActionKind.RECV_F else c + 1
            peer = schedule.chunk_rank(src_chunk)
            expected = recv_bytes.get((direction, src_chunk), -1)
            alloc = (memory.received_bytes.get(c, 0)
                     if memory and kind is ActionKind.RECV_F else 0)
            channel_index = keys.setdefault((peer, pp, direction), len(keys))
            extra = _tensors(plan, (direction, src_chunk)) - 1
            ops.append((RECV, c, m, channel_index, (expected, alloc, action.partner()),
                        action, plan.recv_post_s + extra * plan.recv_post_per_tensor_s))
    return ops, list(keys)


def _tensors(plan: StepPlan, key: tuple[str, int]) -> int:
    """Tensors one message of a transition carries (1 when the plan does not say)."""
    return plan.send_tensors.get(key, 1) if plan.send_tensors is not None else 1
