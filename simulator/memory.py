"""Analytic memory per pipeline rank: model states, activations, AttnRes depth sources, the peak.

Everything is per GPU (one TP rank of one pipeline rank), in bytes. Notation: s = seq_len,
b = micro_batch_size, h = hidden_size, f = the MLP width (active width for activations, stored width
for weights, which differ under MoE), a = num_heads, t = tensor_parallel,
e = dtype bytes, V = vocab_size.

Model states (Megatron / ZeRO accounting, peers.md 6.2): weights e, gradients
`grad_bytes_per_param`, optimizer `optimizer_bytes_per_param` (divided by the data-parallel degree
with a distributed optimizer) per parameter held by the rank.

Activations saved for backward, per sublayer and micro-batch (Korthikanti et al., MLSys'23,
"Reducing Activation Recomputation", Sec. 4.1, re-derived for flash attention, RMSNorm and no
dropout, so the 5as^2b score term and the dropout masks vanish). "Replicated" terms are divided
by t only with sequence parallelism; "TP" terms always are:
- attention: norm input e.sbh + QKV input e.sbh (replicated); Q, K, V, O 4e.sbh and the fp32
  log-sum-exp 4.sba (TP). At e = 2 that is Korthikanti's 11sbh less the dropout mask, plus 2sbh
  for the norm input.
- MLP: norm input e.sbh + MLP input e.sbh (replicated); swiglu gate, up, silu(gate), product
  4e.sbf; gelu fc1 output and gelu output 2e.sbf (TP). Korthikanti's 19sbh is gelu, f = 4h, with
  a dropout mask.
- AttnRes (full, block): the aggregation before a sublayer with k sources keeps fp32 softmax
  weights and inverse RMS per source, 8.k.sb (replicated), and the sublayer's output or partial
  sum is itself a depth source kept for later aggregations, e.sbh (replicated).
- recompute "selective": the attention core and the AttnRes aggregation internals are recomputed,
  so Q, K, V, O, the log-sum-exp and the 8.k.sb statistics are not kept.
- recompute "full" (Megatron's uniform full recompute, one checkpoint per transformer layer): each
  attention sublayer keeps its layer input, e.sbh; Block AttnRes also keeps every block it
  completes and Full AttnRes every sublayer output (they are sources later layers read, the
  paper's O(Nd) vs O(Ld)); a rank adds one layer's full activations as the recompute working set.
- received depth sources: the bytes of the forward transition into the chunk in the scenario's
  communication mode (the manifest), kept until that chunk's backward. In the cached modes blocks
  reused from the rank's store are not received again, so they are stored once per rank.
- chunk 0 keeps the token ids (8.sb); the last chunk keeps the final norm and LM-head inputs
  (2e.sbh, replicated) and fp32 logits for the loss (4.sbV/t).

Micro-batches in flight come from the schedule itself: walking each rank's compute order, a
chunk's activations are allocated at its forward and released at its backward; the peak of that
running sum plus the model states is the rank's peak.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simulator.layout import Layout, build_layout
from simulator.manifest import Manifest, build_manifest
from simulator.scenario import Scenario

__all__ = [
    "ParameterCounts",
    "ChunkActivations",
    "RankMemory",
    "MemoryReport",
    "parameter_counts",
    "chunk_activations",
    "memory_model",
    "walk_peak_bytes",
]


@dataclass(frozen=True)
class ParameterCounts:
    """Parameters held by one GPU of one pipeline rank."""

    transformer: int
    attnres: int
    embedding: int
    head: int

    @property
    def total(self) -> int:
        """All parameters on the GPU."""
        return self.transformer + self.attnres + self.embedding + self.head


@dataclass(frozen=True)
class ChunkActivations:
    """Bytes one micro-batch keeps on a GPU between a chunk's forward and its backward."""

    sublayers_bytes: int
    """Activations of the chunk's sublayers (attention, MLP; embedding and head terms included)."""
    attnres_bytes: int
    """AttnRes aggregation statistics and the depth sources the chunk produces."""
    received_bytes: int
    """Boundary tensors received from the previous chunk (the manifest, scenario's mode)."""

    @property
    def total_bytes(self) -> int:
        """Everything the chunk keeps for one micro-batch."""
        return self.sublayers_bytes + self.attnres_bytes + self.received_bytes


@dataclass(frozen=True)
class RankMemory:
    """Memory of one GPU of pipeline rank `rank`."""

    rank: int
    parameter_count: int
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    chunk_bytes: dict[int, ChunkActivations]
    peak_activation_bytes: int
    """Peak of the activation running sum over the rank's compute order."""
    peak_in_flight: int
    """Most (chunk, micro-batch) activation sets alive at once."""
    recompute_working_bytes: int

    @property
    def model_state_bytes(self) -> int:
        """Weights, gradients and optimizer state."""
        return self.weights_bytes + self.gradients_bytes + self.optimizer_bytes

    @property
    def peak_bytes(self) -> int:
        """Model states + peak activations + recompute working set."""
        return self.model_state_bytes + self.peak_activation_bytes + self.recompute_working_bytes


@dataclass(frozen=True)
class MemoryReport:
    """Per-rank memory of a scenario."""

    ranks: list[RankMemory] = field(default_factory=list)

    @property
    def max_peak_bytes(self) -> int:
        """The most loaded GPU."""
        return max(r.peak_bytes for r in self.ranks)


def parameter_counts(scenario: Scenario, layout: Layout, rank: int) -> ParameterCounts:
    """Parameters of the chunks on `rank`, per TP rank (weight matrices split t ways)."""
    m, t = scenario.model, scenario.parallelism.tensor_parallel
    h, f = m.hidden_size, m.stored_ffn_hidden_size
    mlp_mats = 3 if m.mlp == "swiglu" else 2
    attnres = scenario.residual.kind != "standard"
    transformer = attnres_params = embedding = head = 0
    for c in layout.rank_chunks(rank):
        for sub in layout.chunk_sublayers(c):
            is_attention = sub % 2 == 1
            transformer += (4 * h * h if is_attention else mlp_mats * h * f) // t + h  # + norm
            attnres_params += 2 * h if attnres else 0  # pseudo-query + key RMSNorm weight
        if c == 0:
            embedding += m.vocab_size * h // t
        if c == layout.num_chunks - 1:
            head += m.vocab_size * h // t + h  # untied LM head + final norm
            attnres_params += 2 * h if attnres else 0  # final aggregation
    return ParameterCounts(transformer, attnres_params, embedding, head)


def _sublayer_bytes(scenario: Scenario, sublayer: int, sources: int | None) -> tuple[int, int]:
    """(sublayer activations, AttnRes extras) of one sublayer for one micro-batch, per GPU."""
    m, par = scenario.model, scenario.parallelism
    t = par.tensor_parallel
    rep = t if par.sequence_parallel else 1  # divisor of "replicated" terms
    e, sb, h, f = m.dtype_bytes, m.seq_len * m.micro_batch_size, m.hidden_size, m.active_ffn_hidden_size
    recompute = scenario.training.recompute
    is_attention = sublayer % 2 == 1
    if recompute == "full":
        sub = e * sb * h // rep if is_attention else 0  # the layer-input checkpoint
        return sub, 0
    replicated = 2 * e * sb * h // rep  # norm input + matmul input
    if is_attention:
        core = 0 if recompute == "selective" else (4 * e * sb * h + 4 * sb * m.num_heads) // t
    else:
        core = (4 if m.mlp == "swiglu" else 2) * e * sb * f // t
    extras = 0
    if sources is not None:
        stats = 0 if recompute == "selective" else 8 * sources * sb // rep
        extras = stats + e * sb * h // rep
    return replicated + core, extras


def chunk_activations(scenario: Scenario, layout: Layout, manifest: Manifest,
                      chunk_index: int) -> ChunkActivations:
    """Bytes chunk `chunk_index` keeps per micro-batch from its forward to its backward."""
    m, par = scenario.model, scenario.parallelism
    t = par.tensor_parallel
    rep = t if par.sequence_parallel else 1
    e, sb, h = m.dtype_bytes, m.seq_len * m.micro_batch_size, m.hidden_size
    attnres = layout.block_size is not None
    sub_total = extra_total = 0
    for sub in layout.chunk_sublayers(chunk_index):
        sources = layout.sources_at(sub) if attnres else None
        sub_bytes, extra = _sublayer_bytes(scenario, sub, sources)
        sub_total += sub_bytes
        extra_total += extra
    if attnres and scenario.training.recompute == "full":
        extra_total += _full_recompute_sources(layout, chunk_index) * e * sb * h // rep
    if chunk_index == 0:
        sub_total += 8 * sb  # int64 token ids for the embedding backward
    if chunk_index == layout.num_chunks - 1:
        sub_total += 2 * e * sb * h // rep + 4 * sb * m.vocab_size // t
        if attnres and scenario.training.recompute != "full":
            extra_total += 8 * layout.sources_at(layout.num_sublayers + 1) * sb // rep
    received = 0
    if chunk_index > 0:
        received = manifest.transition("forward", chunk_index - 1).num_bytes(manifest.comm_mode)
    return ChunkActivations(sub_total, extra_total, received)


def _full_recompute_sources(layout: Layout, chunk_index: int) -> int:
    """Depth sources a chunk produces that must outlive its recompute (blocks, or outputs)."""
    if layout.block_size == 1:
        return len(layout.chunk_sublayers(chunk_index))
    return sum(1 for n in layout.blocks_completed_in(chunk_index) if n >= 1)


def _recompute_working_bytes(scenario: Scenario) -> int:
    """One transformer layer's full activations, rebuilt during its recompute."""
    if scenario.training.recompute != "full":
        return 0
    probe = scenario.model_copy(update={"training": scenario.training.model_copy(
        update={"recompute": "none"})})
    attnres = scenario.residual.kind != "standard"
    total = 0
    for sub in (1, 2):
        sub_bytes, extra = _sublayer_bytes(probe, sub, 2 if attnres else None)
        total += sub_bytes + extra
    return total


def walk_peak_bytes(compute_order: list[tuple[str, int]], chunk_bytes: dict[int, int]
                    ) -> tuple[int, int]:
    """Peak of allocate-at-forward / free-at-backward over one rank's compute order.

    Args:
        compute_order: ("F" or "B", chunk_index) in execution order.
        chunk_bytes: bytes one micro-batch of each chunk keeps.

    Returns:
        (peak bytes, peak number of live chunk activation sets).
    """
    live_bytes = peak_bytes = live = peak_live = 0
    for kind, chunk in compute_order:
        if kind == "F":
            live_bytes += chunk_bytes[chunk]
            live += 1
        else:
            live_bytes -= chunk_bytes[chunk]
            live -= 1
        peak_bytes = max(peak_bytes, live_bytes)
        peak_live = max(peak_live, live)
    assert live == 0 and live_bytes == 0, "every forward needs its backward"
    return peak_bytes, peak_live


def memory_model(scenario: Scenario) -> MemoryReport:
    """Per-rank memory of a validated scenario."""
    from simulator.schedule import ActionKind, build_schedule

    layout, manifest = build_layout(scenario), build_manifest(scenario)
    p = scenario.pipeline
    schedule = build_schedule(p.schedule, p.num_stages, p.num_virtual_stages, p.num_microbatches)
    tr, e = scenario.training, scenario.model.dtype_bytes
    optimizer_share = scenario.parallelism.data_parallel if tr.distributed_optimizer else 1
    working = _recompute_working_bytes(scenario)
    ranks = []
    for rank in range(p.num_stages):
        params = parameter_counts(scenario, layout, rank).total
        chunks = {c: chunk_activations(scenario, layout, manifest, c)
                  for c in layout.rank_chunks(rank)}
        order = [(a.kind.value, a.stage_index) for a in schedule.actions[rank]
                 if a.kind in (ActionKind.FORWARD, ActionKind.BACKWARD)]
        peak, in_flight = walk_peak_bytes(order, {c: a.total_bytes for c, a in chunks.items()})
        ranks.append(RankMemory(
            rank=rank,
            parameter_count=params,
            weights_bytes=params * e,
            gradients_bytes=int(params * tr.grad_bytes_per_param),
            optimizer_bytes=int(params * tr.optimizer_bytes_per_param / optimizer_share),
            chunk_bytes=chunks,
            peak_activation_bytes=peak,
            peak_in_flight=in_flight,
            recompute_working_bytes=working,
        ))
    return MemoryReport(ranks)
