"""The engine's input: a training step resolved to numbers (`simulator/plan.py` builds it).

A `StepPlan` holds the schedule, per-chunk seconds, per-transition bytes, per-rank memory sizes,
the gradient all-reduce steps and the fabric. Tests and other tools may build one by hand (for
example uniform stage times on an ideal fabric to check closed forms).
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.fabric import Fabric
from simulator.schedule_ir import Schedule

__all__ = ["P2P_PROTOCOLS", "HOST_COST_FIELDS", "RankMemoryPlan", "StepPlan"]

HOST_COST_FIELDS: tuple[str, ...] = (
    "late_receive_overhead_s", "send_overhead_s", "recv_overhead_s",
    "send_overhead_per_tensor_s", "send_s_per_byte", "recv_post_s", "recv_post_per_tensor_s",
    "send_cpu_s_per_byte", "recv_cpu_s_per_byte")
"""StepPlan fields that a measured profile (MeasuredProfile) fills under the same names."""

P2P_PROTOCOLS: tuple[str, ...] = ("eager", "rendezvous")
"""When a message's flows start: at its send, or once its receive is posted too."""


@dataclass(frozen=True)
class RankMemoryPlan:
    """Bytes one GPU of a pipeline rank allocates and frees, per chunk and micro-batch."""

    base_bytes: int
    """Model states and the recompute working set, resident all step."""
    received_bytes: dict[int, int]
    """chunk -> boundary tensors received before its forward (kept until its backward ends)."""
    activation_bytes: dict[int, int]
    """chunk -> activations and AttnRes extras allocated at its forward."""


@dataclass(frozen=True)
class StepPlan:
    """Everything the engine needs, already resolved to numbers."""

    schedule: Schedule
    num_replicas: int
    tensor_parallel: int
    forward_s: tuple[float, ...]
    """Per chunk: forward seconds of one micro-batch."""
    backward_s: tuple[float, ...]
    """Per chunk: backward seconds (recompute included)."""
    send_bytes: dict[tuple[str, int], int]
    """(direction, src_chunk) -> bytes each TP rank sends on that transition."""
    recv_bytes: dict[tuple[str, int], int] | None = None
    """What receivers expect, keyed like send_bytes; None: the same as send_bytes."""
    allreduce_step_bytes: tuple[tuple[int, ...], ...] = ()
    """Per pipeline rank: bytes per GPU of each ring step; empty: no all-reduce."""
    ring_size: int | None = None
    """Replicas in the ring (defaults to num_replicas; larger under the symmetry reduction)."""
    memory: tuple[RankMemoryPlan, ...] | None = None
    fabric: Fabric | None = None
    """None: an ideal fabric (unlimited, zero-latency links)."""
    name: str = ""
    record_link_timeline: bool = True
    p2p_protocol: str = "eager"
    """"eager": a message's flows start when it is sent (NCCL); "rendezvous": once both its send
    and its receive are posted (gloo over TCP)."""
    late_receive_overhead_s: float = 0.0
    """Rendezvous only: a message whose receive is posted after its send starts moving this
    much later (host CPU contention, MeasuredProfile.late_receive_overhead_s)."""
    send_overhead_s: float = 0.0
    """Host time a pipeline send holds its rank (LogP's o: posting it; the flows start at the
    send, MeasuredProfile.send_overhead_s)."""
    recv_overhead_s: float = 0.0
    """Host time a pipeline receive holds its rank when its data was already in place (a
    waiting receiver's wake-up is in the link's measured latency; MeasuredProfile)."""
    send_overhead_per_tensor_s: float = 0.0
    """Host time each tensor of a message beyond its first adds to its send."""
    send_s_per_byte: float = 0.0
    """Host time each byte of a message adds to its send: the call writes the message into
    the transport while the ranks compute (MeasuredProfile)."""
    recv_post_s: float = 0.0
    """Host time posting a one-tensor message's receive holds the receiving rank (charged at
    the receive; the tensors of a message: `send_tensors`)."""
    recv_post_per_tensor_s: float = 0.0
    """Host time each further tensor adds to posting a message's receives."""
    send_tensors: dict[tuple[str, int], int] | None = None
    """(direction, src_chunk) -> tensors one message carries; None: one each."""
    send_cpu_s_per_byte: float = 0.0
    """Compute seconds a rank loses per byte it sends while computing (MeasuredProfile): a
    message of B bytes in flight for T seconds, during t of which its sender computed, makes
    the sender's next compute B x this x t / T longer."""
    recv_cpu_s_per_byte: float = 0.0
    """The same for the receiving rank."""
    forward_host_s: tuple[float, ...] = ()
    """Per chunk: host seconds a rank spends after a forward before its next action (the
    runner's own bookkeeping, MeasuredProfile.executor_overhead); empty: none."""
    backward_host_s: tuple[float, ...] = ()
    """The same after a backward."""

    def __post_init__(self) -> None:
        if self.p2p_protocol not in P2P_PROTOCOLS:
            raise ValueError(f"p2p_protocol = {self.p2p_protocol!r}: use one of "
                             f"{', '.join(P2P_PROTOCOLS)}")
        for name in HOST_COST_FIELDS:
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} = {getattr(self, name)!r}: must be >= 0")
        for name in ("forward_s", "backward_s", "forward_host_s", "backward_host_s"):
            for chunk, seconds in enumerate(getattr(self, name)):
                if not seconds >= 0:
                    raise ValueError(f"{name}[{chunk}] = {seconds!r}: a chunk's duration must be "
                                     ">= 0 seconds; check the cost model or the plan built by hand")
