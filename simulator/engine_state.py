"""Mutable bookkeeping of the engine: message channels and per-rank counters.

A `Channel` is the ordered message queue between two ranks in one direction (NCCL's per-peer
matching): the k-th send posted on it is received by the k-th receive posted on it. Each
message is a `Slot`, filled from both ends in whichever order they arrive. `EngineState` holds
the per-rank counters and timelines as flat lists indexed by worker w = dp x P + pp, which keeps
the hot loop free of attribute lookups on per-rank objects.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulator.sim_env import Callback

__all__ = ["Slot", "Channel", "EngineState"]

_NAN = math.nan


class Slot:
    """One message on a channel."""

    __slots__ = ("send_w", "send_action", "send_bytes", "posted_s", "traffic_class", "recv_w",
                 "recv_action", "recv_expects", "recv_bytes", "recv_posted_s", "pending",
                 "unsent", "started_s", "delivered_s", "received_s", "waiter", "channel",
                 "src_busy_s", "dst_busy_s")

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.send_w = -1
        self.send_action: object = None
        self.send_bytes = -1
        self.posted_s = _NAN
        self.traffic_class = 0
        self.recv_w = -1
        self.recv_action: object = None
        self.recv_expects: object = None
        """The send action the receiver expects (its partner)."""
        self.recv_bytes = -1
        self.recv_posted_s = _NAN
        self.pending = 0
        """Flows (one per TP rank) not yet delivered."""
        self.unsent = 0
        """Flows whose last byte has not left yet."""
        self.started_s = _NAN
        """When its flows started (after the messages queued before it on the channel)."""
        self.delivered_s = _NAN
        self.received_s = _NAN
        self.waiter: Callback | None = None
        """The receiver's resume callback, while it waits for delivery."""
        self.src_busy_s = 0.0
        """The sender's compute seconds so far when its flows started (transfer CPU costs)."""
        self.dst_busy_s = 0.0
        """The same for the receiver."""


class Channel:
    """Messages from one rank to another in one direction, matched in posting order.

    Messages are also transmitted in order, one at a time (as on one NCCL stream): the next
    message's flows start when the last byte of the one before has left.
    """

    __slots__ = ("src_w", "dst_w", "paths", "slots", "num_sent", "num_received", "in_flight",
                 "queue")

    def __init__(self, src_w: int, dst_w: int, paths: list[tuple]) -> None:
        self.src_w = src_w
        self.dst_w = dst_w
        self.paths = paths
        """One network path per TP rank."""
        self.slots: list[Slot] = []
        self.num_sent = 0
        self.num_received = 0
        self.in_flight: Slot | None = None
        """The message being transmitted."""
        self.queue: deque[Slot] = deque()
        """Posted messages waiting for it."""

    def release(self) -> None:
        """Drop the messages' links back to this channel and to their wake-ups once the step
        is over, so that the engine's objects are freed by reference counting alone (a cycle
        would wait for a full garbage collection over all of them)."""
        for slot in self.slots:
            slot.channel = None  # type: ignore[assignment]
            slot.waiter = None

    def post_send(self, w: int, action: object, num_bytes: int, now: float,
                  traffic_class: int) -> Slot:
        """The next message slot, filled with the sender's side."""
        index, slots = self.num_sent, self.slots
        self.num_sent = index + 1
        if index == len(slots):
            slot = Slot(self)
            slots.append(slot)
        else:
            slot = slots[index]
        slot.send_w, slot.send_action, slot.send_bytes = w, action, num_bytes
        slot.posted_s, slot.traffic_class = now, traffic_class
        return slot

    def post_recv(self, w: int, action: object, expects: object, expected_bytes: int,
                  now: float) -> Slot:
        """The next message slot, filled with the receiver's side."""
        index, slots = self.num_received, self.slots
        self.num_received = index + 1
        if index == len(slots):
            slot = Slot(self)
            slots.append(slot)
        else:
            slot = slots[index]
        slot.recv_w, slot.recv_action, slot.recv_expects = w, action, expects
        slot.recv_bytes, slot.recv_posted_s = expected_bytes, now
        return slot


class EngineState:
    """Per-rank counters, spans and memory timelines of one simulated step."""

    def __init__(self, num_workers: int) -> None:
        n = num_workers
        self.position = [0] * n
        """Index of the action each rank is at (for deadlock reports)."""
        self.done = [False] * n
        self.busy_s = [0.0] * n
        self.comm_wait_s = [0.0] * n
        self.idle_wait_s = [0.0] * n
        self.compute_end_s = [0.0] * n
        self.compute_start_s = [_NAN] * n
        """When the compute a rank is in began (NaN between computes; kept only when
        transfers cost compute time)."""
        self.cpu_debt_s = [0.0] * n
        """Compute seconds transfers took from a rank, added to its next compute."""
        self.allreduce_start_s = [_NAN] * n
        self.end_s = [0.0] * n
        self.memory_bytes = [0] * n
        self.peak_memory_bytes = [0] * n
        self.memory_timeline: list[list[tuple[float, int]]] = [[] for _ in range(n)]
        self.spans: list[Any] = []
        """ComputeSpan records in completion order."""
        self.num_compute_done = 0

    def busy_now(self, w: int, now: float) -> float:
        """Rank w's compute seconds up to `now`, the compute it is in included."""
        start = self.compute_start_s[w]
        return self.busy_s[w] + (now - start if start == start else 0.0)

    def alloc(self, w: int, now: float, num_bytes: int) -> None:
        """Allocate (or, negative, free) bytes on rank w at time `now`."""
        live = self.memory_bytes[w] + num_bytes
        self.memory_bytes[w] = live
        if live > self.peak_memory_bytes[w]:
            self.peak_memory_bytes[w] = live
        timeline = self.memory_timeline[w]
        if timeline and timeline[-1][0] == now:
            timeline[-1] = (now, live)
        else:
            timeline.append((now, live))
