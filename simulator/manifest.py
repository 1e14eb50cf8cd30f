"""The boundary manifest: which named tensors cross each pipeline transition, and their bytes.

For one micro-batch, forward transition c -> c+1 (c = 0..C-2) carries:
- standard residual: `hidden`;
- Block/Full AttnRes: the completed block representations `b0`, `b1`, ... the receiver needs,
  plus `partial` when the cut falls inside a block (paper section 4; Full AttnRes is S = 1).
The backward transition c+1 -> c carries the gradients of the same tensors, in reverse order.

Communication modes (what the receiver lacks):
- `naive`: the whole history, every time (the paper's Eq. 7);
- `cached`: a rank keeps the blocks it *received* for that micro-batch (the paper's Eq. 8, Fig. 3);
- `cached-own`: it also keeps the blocks it completed itself (our improvement on the paper's count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from simulator.layout import Layout, build_layout
from simulator.scenario import Scenario

__all__ = [
    "ATTNRES_MODES",
    "TensorSpec",
    "Transition",
    "Manifest",
    "build_manifest",
    "build_manifest_for_layout",
    "paper_eq7_planes",
    "paper_eq8_planes",
]

ATTNRES_MODES: tuple[str, ...] = ("naive", "cached", "cached-own")
"""The AttnRes boundary modes; "standard" names the standard-residual baseline."""

Direction = Literal["forward", "backward"]


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor on the wire."""

    name: str
    num_bytes: int


@dataclass(frozen=True)
class Transition:
    """One hop of one micro-batch between consecutive chunks."""

    direction: Direction
    src_chunk: int
    dst_chunk: int
    src_rank: int
    dst_rank: int
    tensors: dict[str, tuple[TensorSpec, ...]]
    """Mode ("standard", "naive", "cached", "cached-own") -> tensors in wire order."""

    def num_bytes(self, mode: str) -> int:
        """Bytes this hop carries in a mode."""
        return sum(t.num_bytes for t in self.tensors[mode])

    def names(self, mode: str) -> tuple[str, ...]:
        """Tensor names this hop carries in a mode."""
        return tuple(t.name for t in self.tensors[mode])

    def num_blocks(self, mode: str) -> int:
        """Completed block representations (b_n, b_0 included) on the wire: the paper's Fig. 3 count."""
        return sum(1 for t in self.tensors[mode] if t.name.startswith("b"))


@dataclass(frozen=True)
class Manifest:
    """Every transition of one micro-batch, for every mode the residual kind allows."""

    residual_kind: str
    comm_mode: str
    """The mode the scenario runs: its own comm_mode, or "standard" for the standard residual."""
    plane_bytes: int
    """U: bytes of one [b, T, d] tensor per TP rank."""
    transitions: tuple[Transition, ...]
    modes: tuple[str, ...]

    def forward(self) -> list[Transition]:
        """Forward transitions in chunk order."""
        return [t for t in self.transitions if t.direction == "forward"]

    def backward(self) -> list[Transition]:
        """Backward transitions in the order gradients flow (last chunk first)."""
        return [t for t in self.transitions if t.direction == "backward"]

    def transition(self, direction: Direction, src_chunk: int) -> Transition:
        """The transition leaving `src_chunk` in `direction`."""
        index = src_chunk if direction == "forward" else len(self.transitions) // 2 + (
            len(self.transitions) // 2 - src_chunk)
        hop = self.transitions[index]
        assert hop.direction == direction and hop.src_chunk == src_chunk
        return hop

    def total_bytes(self, mode: str, direction: Direction | None = None) -> int:
        """Bytes over all transitions of one micro-batch (one direction, or both)."""
        return sum(t.num_bytes(mode) for t in self.transitions
                   if direction is None or t.direction == direction)

    def peak_bytes(self, mode: str) -> int:
        """The largest single transition in a mode."""
        return max((t.num_bytes(mode) for t in self.transitions), default=0)

    def block_counts(self, mode: str) -> list[int]:
        """Completed blocks sent on each forward transition (the paper's Fig. 3 numbers)."""
        return [t.num_blocks(mode) for t in self.forward()]


def build_manifest(scenario: Scenario) -> Manifest:
    """The manifest of a validated scenario."""
    own_mode = "standard" if scenario.residual.kind == "standard" else scenario.pipeline.comm_mode
    return build_manifest_for_layout(build_layout(scenario), scenario.plane_bytes(),
                                     scenario.residual.kind, own_mode)


def build_manifest_for_layout(layout: Layout, plane_bytes: int, residual_kind: str,
                              comm_mode: str) -> Manifest:
    """The manifest of a layout; every AttnRes mode is computed so they can be compared."""
    modes = ("standard",) if layout.block_size is None else ("standard",) + ATTNRES_MODES
    per_mode = {mode: _forward_payloads(layout, mode) for mode in modes}
    forward: list[Transition] = []
    for c in range(layout.num_chunks - 1):
        tensors = {mode: tuple(TensorSpec(name, plane_bytes) for name in per_mode[mode][c])
                   for mode in modes}
        forward.append(Transition("forward", c, c + 1, layout.chunk_rank(c),
                                  layout.chunk_rank(c + 1), tensors))
    backward = [
        Transition("backward", hop.dst_chunk, hop.src_chunk, hop.dst_rank, hop.src_rank,
                   {mode: tuple(reversed(specs)) for mode, specs in hop.tensors.items()})
        for hop in reversed(forward)
    ]
    return Manifest(residual_kind, comm_mode, plane_bytes, tuple(forward + backward), modes)


def _forward_payloads(layout: Layout, mode: str) -> list[tuple[str, ...]]:
    """Names sent on each forward transition c -> c+1 of one micro-batch in one mode."""
    if mode == "standard":
        return [("hidden",)] * (layout.num_chunks - 1)
    held: dict[int, set[int]] = {rank: set() for rank in range(layout.num_stages)}
    held[0].add(0)  # rank 0 computes the embedding b_0 itself
    payloads = []
    for c in range(layout.num_chunks - 1):
        src, dst = layout.chunk_rank(c), layout.chunk_rank(c + 1)
        completed = layout.completed_blocks(c)
        if mode == "cached-own":
            held[src].update(completed)  # everything it holds after running c, own blocks included
        lacking = completed if mode == "naive" else tuple(n for n in completed if n not in held[dst])
        names = tuple(f"b{n}" for n in lacking) + (("partial",) if layout.mid_block(c) else ())
        payloads.append(names)
        held[dst].update(completed)  # after receiving, dst holds the whole history up to c
    return payloads


def paper_eq7_planes(num_stages: int, num_virtual_stages: int, num_blocks: int) -> float:
    """Paper Eq. 7: naive per-token traffic in planes, C(C-1)/2 x N_p with N_p = N / C."""
    chunks = num_stages * num_virtual_stages
    return chunks * (chunks - 1) / 2 * (num_blocks / chunks)


def paper_eq8_planes(num_stages: int, num_virtual_stages: int, num_blocks: int) -> float:
    """Paper Eq. 8: cached traffic in planes, N_p [P(P-1)/2 + (V-1)P^2]."""
    p, v = num_stages, num_virtual_stages
    n_p = num_blocks / (p * v)
    return n_p * (p * (p - 1) / 2 + (v - 1) * p * p)
