"""Calibrated activation memory: bytes autograd saves per piece, and the runner's storage walk.

Why: the analytic model (simulator/memory.py) uses Korthikanti-style formulas for GPU kernels
(flash attention and friends); the CPU runner's autograd saves other tensors. Calibration
(`pipesim calibrate`, a separate run) measures with the runner's own modules what each piece
saves for backward at a shape, counted the way the runner's tracker counts (storages, once,
parameters excluded); this module predicts a step's per-rank peak from those numbers.

Measured per shape (`SavedBytesAtShape`): the internal bytes of an attention sublayer, an MLP
sublayer, the embedding and the head (their inputs' storages excluded), whether each piece
keeps its input's storage, and an AttnRes aggregation's internal bytes against its number of
sources (its sources' storages excluded) and whether it keeps the sources' storages.

The walk (`runner_activation_memory`) follows the runner's algorithm (real_runner/residual.py,
executor.py, saved_tensors.py): every (chunk, micro-batch) forward saves a set of storages;
a storage shared by several keys (a depth source read by every later aggregation, a block a
cached-mode rank reads back from its store, the token ids shared by the step's micro-batches)
counts once while any holder lives. Sources: the embedding b_0, each received tensor, the first
sublayer output of a block and every later partial sum, blocks read from the rank's store in the
cached modes (the storage that was put there first). Keys are added at each forward and dropped
at each backward in the rank's schedule order; the peak is taken after forwards, as the
runner's tracker does. What this leaves out: the per-chunk sharing of cached inverse RMS values
(counted per aggregation, about 1/d of a plane per source).

This file is the home of the `activations:` data until MeasuredProfile carries it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simulator.errors import UserError
from simulator.layout import Layout, build_layout
from simulator.manifest import build_manifest
from simulator.scenario import Scenario

__all__ = [
    "PieceSaved",
    "SavedBytesAtShape",
    "ActivationProfile",
    "RankActivationMemory",
    "load_activation_profile",
    "runner_activation_memory",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class PieceSaved(_Strict):
    """Bytes one piece saves for backward, measured with its inputs' storages excluded."""

    internal_bytes: int = Field(ge=0)
    input_saved: bool
    """Whether the piece also keeps its input's own storage (head: the hidden input)."""


class AggregationSaved(_Strict):
    """An AttnRes aggregation over `num_sources` sources."""

    num_sources: int = Field(ge=1)
    internal_bytes: int = Field(ge=0)
    """Its sources' own storages excluded."""


class SavedBytesAtShape(_Strict):
    """Saved-for-backward bytes of every piece at one shape."""

    hidden_size: int
    num_heads: int
    ffn_hidden_size: int
    vocab_size: int
    seq_len: int
    micro_batch_size: int
    dtype: Literal["bf16", "fp16", "fp32"]
    mlp: Literal["swiglu", "gelu"]
    plane_bytes: int = Field(ge=1)
    """One [b, T, d] activation: a sublayer input, a received tensor, a depth source."""
    attention: PieceSaved
    mlp_sublayer: PieceSaved
    embedding: PieceSaved
    """input_saved: the embedding keeps the token ids."""
    head: PieceSaved
    targets_saved: bool
    """Whether the loss keeps the target ids."""
    index_bytes_per_token: int = Field(ge=1)
    """Bytes of one token id (int64: 8); the runner holds a step's ids in one tensor."""
    aggregation: list[AggregationSaved] = []
    sources_saved: bool = True
    """Whether an aggregation keeps its sources' own storages."""

    def aggregation_bytes(self, num_sources: int) -> int:
        """Internal bytes at `num_sources`: measured, or linear through the nearest two."""
        points = sorted((a.num_sources, a.internal_bytes) for a in self.aggregation)
        if not points:
            raise ActivationProfileError(
                f"activation profile at hidden_size {self.hidden_size}: no aggregation "
                "measurements; calibrate with an AttnRes scenario")
        exact = dict(points)
        if num_sources in exact:
            return exact[num_sources]
        if len(points) == 1:
            return points[0][1]
        if num_sources < points[0][0]:
            (k0, b0), (k1, b1) = points[0], points[1]
        elif num_sources > points[-1][0]:
            (k0, b0), (k1, b1) = points[-2], points[-1]
        else:
            (k0, b0) = [q for q in points if q[0] < num_sources][-1]
            (k1, b1) = [q for q in points if q[0] > num_sources][0]
        return max(0, round(b0 + (num_sources - k0) * (b1 - b0) / (k1 - k0)))


class ActivationProfile(_Strict):
    """activations.yaml of a calibration directory (format_version 1)."""

    format_version: Literal[1] = 1
    device: str
    created_by: str = ""
    shapes: list[SavedBytesAtShape] = []

    def at(self, scenario: Scenario) -> SavedBytesAtShape:
        """The measurements at the scenario's shape.

        Raises:
            ActivationProfileError: none was measured at that shape.
        """
        m = scenario.model
        want = (m.hidden_size, m.num_heads, m.ffn_hidden_size, m.vocab_size, m.seq_len,
                m.micro_batch_size, m.dtype, m.mlp)
        for shape in self.shapes:
            have = (shape.hidden_size, shape.num_heads, shape.ffn_hidden_size, shape.vocab_size,
                    shape.seq_len, shape.micro_batch_size, shape.dtype, shape.mlp)
            if have == want:
                return shape
        raise ActivationProfileError(
            f"activation profile ({self.device}) has no measurements at scenario "
            f"{scenario.name!r}'s shape (hidden_size {m.hidden_size}, seq_len {m.seq_len}, "
            f"dtype {m.dtype}, ...); run `pipesim calibrate` with this scenario")


class ActivationProfileError(UserError):
    """An activation profile is malformed or lacks a shape."""


def load_activation_profile(source: str | Path | dict[str, Any]) -> ActivationProfile:
    """Read activations.yaml (or a mapping)."""
    label = "activation profile" if isinstance(source, dict) else str(source)
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"activation profile not found: {path}")
        data = yaml.safe_load(path.read_text())
    try:
        return ActivationProfile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        what = "required key is missing" if err["type"] == "missing" else \
            f"= {err.get('input')!r}: {err['msg']}"
        raise ActivationProfileError(f"{label}: {where} {what}; write it again with "
                                     "`pipesim calibrate`") from None


@dataclass
class RankActivationMemory:
    """Predicted saved-for-backward bytes of one pipeline rank over a step."""

    rank: int
    peak_bytes: int
    timeline: list[tuple[str, int]] = field(default_factory=list)
    """(compute action, live bytes after it) in the rank's schedule order."""


def runner_activation_memory(scenario: Scenario,
                             profile: ActivationProfile) -> list[RankActivationMemory]:
    """Per-rank peak bytes saved for backward, as the runner's tracker counts them."""
    from simulator.schedule import ActionKind, build_schedule  # noqa: PLC0415

    shape = profile.at(scenario)
    p = scenario.pipeline
    layout = build_layout(scenario)
    schedule = build_schedule(p.schedule, p.num_stages, p.num_virtual_stages, p.num_microbatches)
    keys = _all_key_storages(scenario, layout, shape)
    out = []
    for rank in range(p.num_stages):
        counts: dict[Hashable, int] = {}
        live = peak = 0
        timeline = []
        for action in schedule.actions[rank]:
            if action.kind not in (ActionKind.FORWARD, ActionKind.BACKWARD):
                continue
            storages = keys[(action.stage_index, action.microbatch_index)]
            for ident, num_bytes in storages.items():
                if action.kind is ActionKind.FORWARD:
                    counts[ident] = counts.get(ident, 0) + 1
                    live += num_bytes if counts[ident] == 1 else 0
                else:
                    counts[ident] -= 1
                    if counts[ident] == 0:
                        del counts[ident]
                        live -= num_bytes
            if action.kind is ActionKind.FORWARD:
                peak = max(peak, live)
            timeline.append((str(action), live))
        assert live == 0 and not counts, f"rank {rank}: storages left after the step"
        out.append(RankActivationMemory(rank, peak, timeline))
    return out


def _all_key_storages(scenario: Scenario, layout: Layout,
                      shape: SavedBytesAtShape) -> dict[tuple[int, int], dict[Hashable, int]]:
    """(chunk, micro-batch) -> {storage identity: bytes} its forward saves."""
    num_mb = scenario.pipeline.num_microbatches
    ids_bytes = num_mb * scenario.model.micro_batch_size * scenario.model.seq_len \
        * shape.index_bytes_per_token
    out = {}
    for m in range(num_mb):
        store: dict[tuple[int, int], Hashable] = {}  # (rank, block) -> first storage put there
        for c in range(layout.num_chunks):
            out[(c, m)] = _chunk_storages(scenario, layout, shape, c, m, store, ids_bytes)
    return out


def _chunk_storages(scenario: Scenario, layout: Layout, shape: SavedBytesAtShape, c: int,
                    m: int, store: dict[tuple[int, int], Hashable],
                    ids_bytes: int) -> dict[Hashable, int]:
    plane, last = shape.plane_bytes, layout.num_chunks - 1
    saved: dict[Hashable, int] = {}

    def piece(kind: str, sub: int, piece_shape: PieceSaved) -> None:
        saved[("internal", kind, c, m, sub)] = piece_shape.internal_bytes
        if piece_shape.input_saved:
            saved[("input", c, m, sub)] = plane

    if c == 0 and shape.embedding.input_saved:
        saved[("token_ids",)] = ids_bytes
    if c == 0:
        saved[("internal", "embedding", c, m, 0)] = shape.embedding.internal_bytes
    if c == last and shape.targets_saved:
        saved[("target_ids",)] = ids_bytes
    pieces = {True: shape.attention, False: shape.mlp_sublayer}
    if layout.block_size is None:
        for sub in layout.chunk_sublayers(c):
            piece("sublayer", sub, pieces[sub % 2 == 1])
    else:
        _attnres_sources(scenario, layout, shape, c, m, store, saved, piece)
    if c == last:
        piece("head", layout.num_sublayers + 1, shape.head)
    return {k: v for k, v in saved.items() if v}


def _attnres_sources(scenario: Scenario, layout: Layout, shape: SavedBytesAtShape, c: int,
                     m: int, store: dict[tuple[int, int], Hashable], saved: dict[Hashable, int],
                     piece: Any) -> None:
    """Depth sources and aggregations of one AttnRes chunk (residual.apply_sublayer's order)."""
    mode = scenario.pipeline.comm_mode
    rank, S, L = layout.chunk_rank(c), layout.block_size, layout.num_sublayers
    assert S is not None
    plane = shape.plane_bytes
    blocks: dict[int, Hashable] = {}
    partial: Hashable | None = None
    if c == 0:
        blocks[0] = ("produced", c, m, 0)
    else:
        hop = build_manifest(scenario).transition("forward", c - 1)
        wire = hop.names(mode)
        for name in wire:
            if name == "partial":
                partial = ("received", c, m, name)
            else:
                blocks[int(name[1:])] = ("received", c, m, name)
        for j in layout.completed_blocks(c - 1):
            if j not in blocks:  # held: read from the rank's store (cached modes)
                assert (rank, j) in store, f"chunk {c}: block {j} neither sent nor stored"
                blocks[j] = store[(rank, j)]

    def read(sources: list[Hashable], sub: int) -> None:
        if shape.sources_saved:
            for ident in sources:
                saved[ident] = plane
        saved[("aggregation", c, m, sub)] = shape.aggregation_bytes(len(sources))

    for sub in layout.chunk_sublayers(c):
        n = layout.block_of_sublayer(sub)
        first = sub == (n - 1) * S + 1
        sources = [blocks[j] for j in range(n)] + ([] if first else [partial])
        read(sources, sub)
        piece("sublayer", sub, shape.attention if sub % 2 == 1 else shape.mlp_sublayer)
        partial = ("output", c, m, sub) if first else ("partial_sum", c, m, sub)
        if sub == layout.block_end(n):
            blocks[n], partial = partial, None
    if c == layout.num_chunks - 1:
        read([blocks[j] for j in range(layout.num_blocks + 1)], L + 1)
    if mode in ("cached", "cached-own"):  # executor._store_blocks: the first put stays
        for j, ident in blocks.items():
            store.setdefault((rank, j), ident)
