"""A rank's per-micro-batch block store, what it knows of its peers, and the wire header.

In the cached modes a rank keeps, for each micro-batch in flight, every block representation it
received or produced (`StoredBlock`), so a later chunk on the same rank reads it locally instead
of receiving it again. Gradients then follow two routes:
- a block that arrived on the wire into chunk c is a leaf of c's graph; its gradient goes back to
  the sender in c's SEND_B;
- a block a later chunk c' read from the store is a fresh leaf (a detached alias) in c''s graph;
  after B(c') its gradient is *deposited* in the store, and the block's owner chunk (the one that
  received or produced it on this rank, always an earlier chunk, so its backward comes later)
  adds the deposits to its own gradient before it sends upstream. Each owner checks that every
  reader deposited.

What to send (`blocks_to_send`) is decided from the sender's own bookkeeping at run time:
- naive: every completed block, every time;
- cached: not the blocks this rank already sent to that peer for this micro-batch, nor b_0 to
  the rank that computed it (the embedding is that rank's own input) - the paper's Fig. 3
  accounting;
- cached-own: also not any block the peer produced itself. A block's producer (its origin rank)
  travels in the header the first time the block crosses a link, so every holder knows it.

A receiver posts a forward message's receives before the message exists (real_runner/p2p.py), so
it sizes them from the layout: `expected_payload` replays the sender's rule over the transfers
between the two ranks, in chunk order. That is a guess about the peer, never trusted: the
header, which the sender writes from its own state, must list the same blocks, or the receive
fails naming both.

The header (int64, fixed length N + 5) tells the receiver what the payload holds:
  [src_chunk, microbatch, has_partial, num_wire_blocks, code(b_0), ..., code(b_N)]
with code = -1 (not in the sender's state), -2 (the receiver holds it: take it from the store),
or >= 0 (on the wire; the value is the block's origin rank). Wire order is ascending block index,
then `partial`. The receiver checks the held blocks against its own store and fails loudly if
one is missing, so a bookkeeping error can never silently reuse a wrong tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from simulator.layout import Layout

__all__ = [
    "StoredBlock",
    "BlockStore",
    "WireHeader",
    "blocks_to_send",
    "expected_payload",
    "encode_header",
    "decode_header",
    "header_length",
    "ABSENT",
    "HELD",
]

ABSENT = -1
HELD = -2


@dataclass
class StoredBlock:
    """One block representation kept on this rank for one micro-batch."""

    tensor: Tensor
    """The tensor in the owner chunk's graph: a received leaf, or the producing sublayer's output."""
    owner_chunk: int
    origin_rank: int
    num_readers: int = 0
    num_deposits: int = 0
    deposit: Tensor | None = None


class BlockStore:
    """Blocks per micro-batch, plus which blocks were already sent to which peer."""

    def __init__(self) -> None:
        self._blocks: dict[int, dict[int, StoredBlock]] = {}
        self._sent: dict[tuple[int, int], set[int]] = {}

    def holds(self, microbatch: int, block: int) -> bool:
        """True if the block is stored for this micro-batch."""
        return block in self._blocks.get(microbatch, {})

    def put(self, microbatch: int, block: int, tensor: Tensor, owner_chunk: int,
            origin_rank: int) -> None:
        """Keep a block unless the micro-batch already has it (the first owner stays)."""
        blocks = self._blocks.setdefault(microbatch, {})
        if block not in blocks:
            blocks[block] = StoredBlock(tensor, owner_chunk, origin_rank)

    def read(self, microbatch: int, block: int) -> tuple[Tensor, int]:
        """A new leaf aliasing the stored block for a reader chunk, and the block's origin."""
        entry = self._blocks[microbatch][block]
        entry.num_readers += 1
        return entry.tensor.detach().requires_grad_(), entry.origin_rank

    def deposit(self, microbatch: int, block: int, grad: Tensor) -> None:
        """Add a reader's gradient for the block."""
        entry = self._blocks[microbatch][block]
        entry.deposit = grad if entry.deposit is None else entry.deposit + grad
        entry.num_deposits += 1

    def owned(self, microbatch: int, chunk: int) -> list[StoredBlock]:
        """The micro-batch's blocks owned by `chunk`, checking every reader has deposited."""
        owned = [e for e in self._blocks.get(microbatch, {}).values() if e.owner_chunk == chunk]
        for entry in owned:
            assert entry.num_deposits == entry.num_readers, (
                f"chunk {chunk}, micro-batch {microbatch}: {entry.num_readers} readers but "
                f"{entry.num_deposits} gradient deposits")
        return owned

    def sent_to(self, peer: int, microbatch: int) -> set[int]:
        """Blocks this rank already sent to `peer` for the micro-batch."""
        return self._sent.get((peer, microbatch), set())

    def mark_sent(self, peer: int, microbatch: int, blocks: list[int]) -> None:
        """Remember that `blocks` went to `peer`."""
        self._sent.setdefault((peer, microbatch), set()).update(blocks)

    def release(self, microbatch: int) -> None:
        """Drop a micro-batch after this rank's last backward for it."""
        self._blocks.pop(microbatch, None)
        for key in [k for k in self._sent if k[1] == microbatch]:
            del self._sent[key]

    def is_empty(self) -> bool:
        """True when no micro-batch is in flight."""
        return not self._blocks and not self._sent


def blocks_to_send(mode: str, blocks: list[int], origins: dict[int, int], peer: int,
                   already_sent: set[int]) -> tuple[list[int], list[int]]:
    """(blocks on the wire, blocks the peer holds) for one forward transfer, ascending."""
    wire, held = [], []
    for block in sorted(blocks):
        if mode == "naive":
            skip = False
        elif mode == "cached":
            skip = block in already_sent or (block == 0 and origins[0] == peer)
        else:
            assert mode == "cached-own", mode
            skip = block in already_sent or origins[block] == peer
        (held if skip else wire).append(block)
    return wire, held


def expected_payload(layout: Layout, mode: str, dst_chunk: int) -> tuple[list[int], bool]:
    """(wire blocks, whether a partial sum follows) of the forward message into `dst_chunk`, as
    the sender's `blocks_to_send` will choose them: its earlier transfers to the same rank, in
    chunk order, make its `already_sent`; a block's origin is the rank whose chunk completed it.
    """
    sender, receiver = layout.chunk_rank(dst_chunk - 1), layout.chunk_rank(dst_chunk)
    origins: dict[int, int] = {}
    already_sent: set[int] = set()
    wire: list[int] = []
    for c in range(1, dst_chunk + 1):
        origins.update(dict.fromkeys(layout.blocks_completed_in(c - 1), layout.chunk_rank(c - 1)))
        if layout.chunk_rank(c - 1) != sender or layout.chunk_rank(c) != receiver:
            continue
        wire, _ = blocks_to_send(mode, list(layout.completed_blocks(c - 1)), origins, receiver,
                                 already_sent)
        if mode != "naive":
            already_sent.update(wire)
    return wire, layout.mid_block(dst_chunk - 1)


@dataclass(frozen=True)
class WireHeader:
    """Decoded header of one forward AttnRes transfer."""

    src_chunk: int
    microbatch: int
    has_partial: bool
    wire: list[tuple[int, int]]
    """(block, origin rank) in wire order."""
    held: list[int]
    """Blocks the receiver must take from its store."""


def header_length(num_blocks: int) -> int:
    """Entries of the header for N blocks: 4 fields + one code per b_0..b_N."""
    return 4 + num_blocks + 1


def encode_header(num_blocks: int, src_chunk: int, microbatch: int, has_partial: bool,
                  wire: list[int], held: list[int], origins: dict[int, int],
                  device: torch.device) -> Tensor:
    """The int64 header tensor for one transfer."""
    codes = [ABSENT] * (num_blocks + 1)
    for block in held:
        codes[block] = HELD
    for block in wire:
        codes[block] = origins[block]
    values = [src_chunk, microbatch, int(has_partial), len(wire)] + codes
    return torch.tensor(values, dtype=torch.int64, device=device)


def decode_header(header: Tensor) -> WireHeader:
    """Inverse of `encode_header`."""
    src_chunk, microbatch, has_partial, num_wire, *codes = header.tolist()
    wire = [(block, code) for block, code in enumerate(codes) if code >= 0]
    held = [block for block, code in enumerate(codes) if code == HELD]
    assert len(wire) == num_wire, f"header lists {len(wire)} wire blocks, says {num_wire}"
    return WireHeader(src_chunk, microbatch, bool(has_partial), wire, held)
