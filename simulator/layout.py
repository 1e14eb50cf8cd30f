"""Where each sublayer and each AttnRes block lives in the pipeline: pure arithmetic, no timing.

Sublayers are numbered 1..L as in the paper (sublayer 2k-1 is layer k's attention, 2k its MLP).
Chunks (virtual stages) c = 0..C-1 own contiguous sublayer ranges; chunk c runs on rank c mod P
(Megatron's interleaved placement). Block n = 1..N holds sublayers (n-1)S+1 .. min(nS, L), so an
uneven last block is shorter, as in the paper. Block 0 is the embedding b_0. Full AttnRes is the
S = 1 case: block n is the output of sublayer n.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from simulator.scenario import Scenario

__all__ = ["Layout", "build_layout"]


@dataclass(frozen=True)
class Layout:
    """The static partition of a model into chunks and blocks."""

    num_sublayers: int
    """L."""
    num_stages: int
    """P: pipeline ranks."""
    num_virtual_stages: int
    """V: chunks per rank."""
    chunk_sublayer_counts: tuple[int, ...]
    """Sublayers owned by each chunk, in chunk order."""
    block_size: int | None
    """S in sublayers; None for the standard residual, 1 for Full AttnRes."""

    def __post_init__(self) -> None:
        assert sum(self.chunk_sublayer_counts) == self.num_sublayers
        assert len(self.chunk_sublayer_counts) == self.num_stages * self.num_virtual_stages

    @property
    def num_chunks(self) -> int:
        """C = P x V."""
        return len(self.chunk_sublayer_counts)

    @property
    def num_blocks(self) -> int | None:
        """N = ceil(L / S); None for the standard residual."""
        if self.block_size is None:
            return None
        return -(-self.num_sublayers // self.block_size)

    def chunk_rank(self, chunk_index: int) -> int:
        """Rank running chunk c: c mod P."""
        return chunk_index % self.num_stages

    def chunk_virtual_index(self, chunk_index: int) -> int:
        """Virtual stage of chunk c on its rank: c div P."""
        return chunk_index // self.num_stages

    def rank_chunks(self, rank: int) -> list[int]:
        """Chunks of one rank, in model order."""
        return list(range(rank, self.num_chunks, self.num_stages))

    @cached_property
    def _chunk_starts(self) -> tuple[int, ...]:
        starts, first = [], 1
        for count in self.chunk_sublayer_counts:
            starts.append(first)
            first += count
        return tuple(starts)

    def chunk_sublayers(self, chunk_index: int) -> range:
        """1-based sublayer indices owned by chunk c."""
        first = self._chunk_starts[chunk_index]
        return range(first, first + self.chunk_sublayer_counts[chunk_index])

    def last_sublayer(self, chunk_index: int) -> int:
        """The last sublayer of chunk c (1-based)."""
        return self._chunk_starts[chunk_index] + self.chunk_sublayer_counts[chunk_index] - 1

    def block_of_sublayer(self, sublayer: int) -> int:
        """1-based block holding a sublayer."""
        assert self.block_size is not None and 1 <= sublayer <= self.num_sublayers
        return -(-sublayer // self.block_size)

    def block_end(self, block_index: int) -> int:
        """Last sublayer of block n; block 0 (the embedding) 'ends' before sublayer 1."""
        assert self.block_size is not None
        return min(block_index * self.block_size, self.num_sublayers)

    def completed_blocks(self, chunk_index: int) -> tuple[int, ...]:
        """Blocks complete after chunk c, b_0 included: all n with block_end(n) <= last sublayer."""
        assert self.block_size is not None
        last = self.last_sublayer(chunk_index)
        return tuple(n for n in range(self.num_blocks + 1) if self.block_end(n) <= last)

    def blocks_completed_in(self, chunk_index: int) -> tuple[int, ...]:
        """Blocks whose last sublayer lies in chunk c (chunk 0 also creates b_0)."""
        assert self.block_size is not None
        first = self.chunk_sublayers(chunk_index).start
        made = tuple(n for n in self.completed_blocks(chunk_index) if n >= 1
                     and self.block_end(n) >= first)
        return ((0,) if chunk_index == 0 else ()) + made

    def mid_block(self, chunk_index: int) -> bool:
        """True when the cut after chunk c falls inside a block, so a partial sum must cross it."""
        assert self.block_size is not None
        last = self.last_sublayer(chunk_index)
        return last < self.num_sublayers and last % self.block_size != 0

    def sources_at(self, sublayer: int) -> int:
        """Depth sources the aggregation before sublayer l attends over (paper Eq. 6).

        The first sublayer of block n sees b_0..b_{n-1} (n sources); later ones add the partial
        sum b_n^{i-1} (n + 1 sources). For Full AttnRes (S = 1) that is l sources. Sublayer
        L + 1 stands for the final aggregation over b_0..b_N.
        """
        assert self.block_size is not None and 1 <= sublayer <= self.num_sublayers + 1
        if sublayer == self.num_sublayers + 1:
            return self.num_blocks + 1
        n = self.block_of_sublayer(sublayer)
        first_of_block = (n - 1) * self.block_size + 1
        return n if sublayer == first_of_block else n + 1


def build_layout(scenario: Scenario) -> Layout:
    """The layout a validated scenario describes."""
    return Layout(
        num_sublayers=scenario.model.num_sublayers,
        num_stages=scenario.pipeline.num_stages,
        num_virtual_stages=scenario.pipeline.num_virtual_stages,
        chunk_sublayer_counts=tuple(scenario.chunk_sublayer_counts()),
        block_size=scenario.block_size(),
    )
