"""The schedule IR: small immutable actions and one ordered action list per pipeline rank.

A schedule is data, as in PyTorch's `torch.distributed.pipelining`: an `Action` is a (chunk,
kind, micro-batch) record whose compact string form is PyTorch's ("1F0", "2SEND_F3",
"0RECV_B1"), and a `Schedule` holds one ordered list of actions per rank. The simulator engine
times these lists and the real runner executes them; both walk `schedule.actions[rank]`.

Chunks (virtual stages) are numbered globally, c = 0..P*V-1, exactly like PyTorch's
`stage_index`. Chunk c runs on rank c % P with virtual index c // P (Megatron/PyTorch
interleaved placement); chunk 0 holds the embedding and chunk P*V-1 the loss.

Communication semantics for executors: a SEND is asynchronous (the rank goes on at once), a
RECV blocks until its message has arrived. SEND_F(c, m) on rank(c) is received by
RECV_F(c+1, m) on rank(c+1); SEND_B(c, m) on rank(c) by RECV_B(c-1, m) on rank(c-1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from simulator.errors import ScheduleError

__all__ = ["ActionKind", "Action", "Schedule", "chunk_rank", "chunk_virtual_index"]


class ActionKind(str, Enum):
    """What an action does; the value is PyTorch's short code."""

    FORWARD = "F"
    BACKWARD = "B"
    SEND_F = "SEND_F"
    RECV_F = "RECV_F"
    SEND_B = "SEND_B"
    RECV_B = "RECV_B"

    @property
    def is_compute(self) -> bool:
        """True for FORWARD and BACKWARD."""
        return self in (ActionKind.FORWARD, ActionKind.BACKWARD)

    @property
    def is_send(self) -> bool:
        """True for SEND_F and SEND_B."""
        return self in (ActionKind.SEND_F, ActionKind.SEND_B)

    @property
    def is_recv(self) -> bool:
        """True for RECV_F and RECV_B."""
        return self in (ActionKind.RECV_F, ActionKind.RECV_B)


# <chunk><kind code><microbatch>; the code is checked against ActionKind afterwards so that a
# wrong code gets its own message.
_ACTION_RE = re.compile(r"(\d+)([A-Za-z_]+)(\d+)")
_KIND_CODES = ", ".join(kind.value for kind in ActionKind)

# For a communication action: the kind of its partner on the peer rank, the chunk offset of
# that partner, and the compute kind it belongs to on its own rank.
_PARTNER: dict[ActionKind, tuple[ActionKind, int]] = {
    ActionKind.SEND_F: (ActionKind.RECV_F, +1),
    ActionKind.RECV_F: (ActionKind.SEND_F, -1),
    ActionKind.SEND_B: (ActionKind.RECV_B, -1),
    ActionKind.RECV_B: (ActionKind.SEND_B, +1),
}
_COMPUTE_OF: dict[ActionKind, ActionKind] = {
    ActionKind.SEND_F: ActionKind.FORWARD,
    ActionKind.RECV_F: ActionKind.FORWARD,
    ActionKind.SEND_B: ActionKind.BACKWARD,
    ActionKind.RECV_B: ActionKind.BACKWARD,
}


class Action(NamedTuple):
    """One step of one rank: compute a chunk for a micro-batch, or send/receive its boundary."""

    stage_index: int
    """Global chunk index c in 0..P*V-1 (PyTorch's stage_index)."""
    kind: ActionKind
    """Forward, backward, or one of the four communication kinds."""
    microbatch_index: int
    """Micro-batch m in 0..M-1."""

    def __str__(self) -> str:
        return f"{self.stage_index}{self.kind.value}{self.microbatch_index}"

    def __repr__(self) -> str:
        return str(self)

    @staticmethod
    def from_str(text: str) -> Action:
        """Parse the compact form ("1F0", "2SEND_F3"); the inverse of `str(action)`.

        Raises:
            ScheduleError: the text is not <chunk><kind><microbatch> with a known kind.
        """
        if not isinstance(text, str):
            raise ScheduleError(
                f"action {text!r} is not a string; write it like '1F0' or '2SEND_F3'"
            )
        match = _ACTION_RE.fullmatch(text.strip())
        if match is None:
            raise ScheduleError(
                f"action {text!r} is not <chunk><kind><microbatch>; write it like '1F0' or "
                f"'2SEND_F3' (kinds: {_KIND_CODES})"
            )
        stage, code, microbatch = match.groups()
        try:
            kind = ActionKind(code)
        except ValueError:
            raise ScheduleError(
                f"action {text!r} has unknown kind {code!r}; kinds are {_KIND_CODES}"
            ) from None
        return Action(int(stage), kind, int(microbatch))

    @property
    def is_compute(self) -> bool:
        """True for a forward or backward."""
        return self.kind.is_compute

    def partner(self) -> Action:
        """The matching action on the peer rank: SEND_F(c, m) <-> RECV_F(c+1, m), and
        SEND_B(c, m) <-> RECV_B(c-1, m). Only for communication actions."""
        assert not self.kind.is_compute, f"{self} is a compute action and has no partner"
        kind, offset = _PARTNER[self.kind]
        return Action(self.stage_index + offset, kind, self.microbatch_index)

    def compute_action(self) -> Action:
        """The compute action this communication belongs to on its own rank: the F or B of the
        same chunk and micro-batch (a RECV comes before it, a SEND after it)."""
        assert not self.kind.is_compute, f"{self} is already a compute action"
        return Action(self.stage_index, _COMPUTE_OF[self.kind], self.microbatch_index)


def chunk_rank(chunk_index: int, num_stages: int) -> int:
    """The rank that runs chunk `chunk_index` under interleaved placement: c % P."""
    return chunk_index % num_stages


def chunk_virtual_index(chunk_index: int, num_stages: int) -> int:
    """The virtual index of chunk `chunk_index` on its rank: c // P."""
    return chunk_index // num_stages


@dataclass(frozen=True)
class Schedule:
    """One training step of a pipeline schedule: an ordered action list per rank."""

    kind: str
    """Schedule name, a key of `simulator.schedule.SCHEDULES` ("gpipe", "1f1b", ...)."""
    num_stages: int
    """P: pipeline ranks."""
    num_virtual_stages: int
    """V: chunks per rank."""
    num_microbatches: int
    """M: micro-batches per step."""
    actions: dict[int, list[Action]]
    """rank -> actions in execution order, communication included."""

    @property
    def num_chunks(self) -> int:
        """C = P * V, the number of chunks (virtual stages) in the whole pipeline."""
        return self.num_stages * self.num_virtual_stages

    def chunk_rank(self, chunk_index: int) -> int:
        """The rank that runs chunk `chunk_index`: c % P."""
        return chunk_rank(chunk_index, self.num_stages)

    def chunks_of_rank(self, rank: int) -> list[int]:
        """The chunks rank `rank` runs, by virtual index: rank, rank + P, rank + 2P, ..."""
        return list(range(rank, self.num_chunks, self.num_stages))

    def compute_actions(self, rank: int) -> list[Action]:
        """The F and B actions of `rank` in execution order, communication left out."""
        return [a for a in self.actions[rank] if a.kind.is_compute]

    def peak_in_flight(self, rank: int) -> int:
        """Most (chunk, micro-batch) pairs whose F has run and whose B has not, at any point of
        `rank`'s order: how many sets of activations the rank holds at its peak."""
        in_flight = peak = 0
        for action in self.actions[rank]:
            if action.kind is ActionKind.FORWARD:
                in_flight += 1
                peak = max(peak, in_flight)
            elif action.kind is ActionKind.BACKWARD:
                in_flight -= 1
        return peak

    def label(self) -> str:
        """A short name for messages: "1f1b (P=4, V=1, M=8)"."""
        return (
            f"{self.kind} (P={self.num_stages}, V={self.num_virtual_stages}, "
            f"M={self.num_microbatches})"
        )

    def to_strings(self) -> dict[int, list[str]]:
        """rank -> compact action strings, e.g. for JSON output or a CSV row per rank."""
        return {rank: [str(a) for a in acts] for rank, acts in sorted(self.actions.items())}
