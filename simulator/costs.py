"""Compute cost model: FLOPs and HBM bytes per sublayer, and the one place they become seconds.

Every kernel takes ``max(flops / (peak x compute_efficiency), bytes / (hbm x memory_efficiency))``
(a roofline); `CostModel.seconds` is the only place FLOPs and bytes turn into time. Notation, per
micro-batch: b = micro_batch_size, T = seq_len, d = hidden_size, f = MLP width a token passes
through (experts included), V = vocab_size, t = tensor_parallel, e = dtype bytes, and a plane
P = b.T.d.e bytes. Counts are per GPU (one TP rank); "replicated" terms are divided by t only
under sequence parallelism.

Forward FLOPs (a multiply-add is 2 FLOPs):
- attention: QKV and output projections 8bTd^2, causal flash attention 2bT^2d (QK^T and AV,
  half the square each); all divided by t;
- MLP: 2bTdf per weight matrix (swiglu 3, gelu 2), divided by t;
- embedding (chunk 0): a lookup, memory-bound; LM head (last chunk): 2bTdV/t plus the loss.
Backward = 2 x forward FLOPs and bytes. Recompute runs before a chunk's backward: `selective`
recomputes the attention core and the AttnRes aggregations, `full` the whole chunk forward.

HBM bytes per sublayer: its weights once, plus activation planes (attention 4 replicated + 8 TP
planes; MLP 3 replicated + 6f/d (swiglu) or 4f/d (gelu) TP planes): an estimate that matters only
when a shape is memory-bound.

Residual / AttnRes I/O per sublayer, in planes (paper Table 1, section 4.6, per token per layer):
standard residual 3; Block AttnRes two-phase N/S + 5; Full AttnRes two-phase S' + N' with a
scheduling block S' = round(sqrt(L)) and N' = ceil(L / S'); `naive` aggregation reads all k
sources and writes the result, k + 1, plus 3 for Block AttnRes's partial-sum update. The final
aggregation before the LM head reads its N + 1 sources and writes one plane. Backward I/O is
twice the forward. These kernels are memory-bound; their FLOPs (4kd per token) are counted too.

Tensor-parallel collectives are analytic (alpha-beta on the intra-node link, not flows): one
all-reduce (or all-gather + reduce-scatter under sequence parallelism, the same volume) of a
full plane per sublayer forward and one per sublayer backward, plus one for the vocab-parallel
embedding: ``2(t-1) alpha + 2(t-1)/t x P / bandwidth``. They are added to compute time (not
overlapped).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from simulator.hardware import HardwareSpec, SublayerTiming
from simulator.layout import Layout, build_layout
from simulator.scenario import Scenario

__all__ = ["AGGREGATION_SCHEMES", "Work", "ChunkCost", "CostModel"]

AGGREGATION_SCHEMES: tuple[str, ...] = ("two-phase", "naive")
"""How AttnRes aggregation reads its sources: the paper's two-phase schedule, or one by one."""


@dataclass(frozen=True)
class Work:
    """FLOPs and HBM bytes of some kernels (per GPU)."""

    flops: float = 0.0
    hbm_bytes: float = 0.0

    def __add__(self, other: Work) -> Work:
        return Work(self.flops + other.flops, self.hbm_bytes + other.hbm_bytes)

    def scaled(self, factor: float) -> Work:
        """The same kernels `factor` times."""
        return Work(self.flops * factor, self.hbm_bytes * factor)


@dataclass(frozen=True)
class ChunkCost:
    """Durations of one chunk for one micro-batch on one GPU."""

    chunk_index: int
    forward_s: float
    """Forward, TP collectives included."""
    backward_s: float
    """Backward, recompute and TP collectives included."""
    recompute_s: float
    """The recompute part of backward_s."""
    aggregation_forward_s: float
    """The residual / AttnRes aggregation part of forward_s."""
    tensor_parallel_forward_s: float
    """The TP-collective part of forward_s."""
    forward_flops: float
    backward_flops: float


class CostModel:
    """Seconds per chunk for a scenario on some hardware."""

    def __init__(self, scenario: Scenario, hardware: HardwareSpec, *,
                 aggregation: str = "two-phase", layout: Layout | None = None) -> None:
        if aggregation not in AGGREGATION_SCHEMES:
            raise ValueError(f"aggregation = {aggregation!r}: use one of "
                             f"{', '.join(AGGREGATION_SCHEMES)}")
        self.scenario = scenario
        self.hardware = hardware
        self.aggregation = aggregation
        self.layout = layout if layout is not None else build_layout(scenario)
        m, par = scenario.model, scenario.parallelism
        self._t = par.tensor_parallel
        self._rep = par.tensor_parallel if par.sequence_parallel else 1
        self._plane = float(m.micro_batch_size * m.seq_len * m.hidden_size * m.dtype_bytes)
        self._tokens = float(m.micro_batch_size * m.seq_len)
        self._warned = False

    # -- the one unit conversion ------------------------------------------------------------
    def seconds(self, work: Work) -> float:
        """Roofline time of `work` on this hardware."""
        hw = self.hardware
        return max(work.flops / (hw.peak_flops_per_s * hw.compute_efficiency),
                   work.hbm_bytes / (hw.hbm_bytes_per_s * hw.memory_efficiency))

    def tensor_parallel_collective_s(self) -> float:
        """One all-reduce of a full plane across the t TP ranks (alpha-beta)."""
        t, hw = self._t, self.hardware
        if t == 1:
            return 0.0
        return (2 * (t - 1) * hw.tensor_parallel_latency_s
                + 2 * (t - 1) / t * self._plane / hw.tensor_parallel_bandwidth_bytes_per_s)

    # -- work per piece ---------------------------------------------------------------------
    def sublayer_work(self, sublayer: int) -> Work:
        """Forward work of one sublayer, without its residual / aggregation I/O."""
        m, t, rep, plane = self.scenario.model, self._t, self._rep, self._plane
        b_t, d, e = self._tokens, float(m.hidden_size), m.dtype_bytes
        if sublayer % 2 == 1:  # attention
            flops = (8 * b_t * d * d + 2 * m.micro_batch_size * m.seq_len**2 * d) / t
            weights = 4 * d * d * e / t
            planes = 4 / rep + 8 / t
        else:
            mats = 3 if m.mlp == "swiglu" else 2
            flops = 2 * mats * b_t * d * m.active_ffn_hidden_size / t
            weights = mats * d * m.stored_ffn_hidden_size * e / t
            planes = 3 / rep + (2 * mats) * m.active_ffn_hidden_size / d / t
        return Work(flops, weights + planes * plane)

    def attention_core_work(self) -> Work:
        """Forward work of causal flash attention alone (what selective recompute redoes)."""
        m = self.scenario.model
        flops = 2 * m.micro_batch_size * m.seq_len**2 * m.hidden_size / self._t
        return Work(flops, 4 * self._plane / self._t)

    def residual_planes(self, sublayer: int) -> float:
        """Residual or AttnRes I/O before `sublayer` in planes (L + 1: the final aggregation)."""
        layout = self.layout
        L, S = layout.num_sublayers, layout.block_size
        if S is None:
            return 3.0 if sublayer <= L else 0.0
        sources = layout.sources_at(sublayer)
        if sublayer == L + 1 or self.aggregation == "naive":
            return sources + 1 + (3 if (S > 1 and sublayer <= L) else 0)
        if S == 1:
            s_sched = max(1, round(math.sqrt(L)))
            return float(s_sched + -(-L // s_sched))
        return layout.num_blocks / S + 5

    def residual_work(self, sublayer: int) -> Work:
        """Forward residual / aggregation kernels before `sublayer`."""
        planes = self.residual_planes(sublayer)
        if planes == 0:
            return Work()
        per_token_flops = 4 * planes * self.scenario.model.hidden_size
        return Work(per_token_flops * self._tokens / self._rep, planes * self._plane / self._rep)

    def embedding_work(self) -> Work:
        """Token lookup: read b.T rows, write one plane."""
        return Work(0.0, 2 * self._plane / self._rep)

    def head_work(self) -> Work:
        """Final norm, untied LM head and cross-entropy on the last chunk."""
        m = self.scenario.model
        logits_bytes = 4.0 * self._tokens * m.vocab_size / self._t
        flops = 2 * self._tokens * m.hidden_size * m.vocab_size / self._t
        weights = float(m.vocab_size * m.hidden_size * m.dtype_bytes) / self._t
        return Work(flops, weights + 3 * logits_bytes + 2 * self._plane / self._rep)

    # -- chunks -----------------------------------------------------------------------------
    def chunk_cost(self, chunk_index: int) -> ChunkCost:
        """Forward, backward and recompute seconds of one chunk for one micro-batch."""
        layout = self.layout
        pieces: list[tuple[str, Work]] = []  # (kind, forward work of the sublayer body)
        if chunk_index == 0:
            pieces.append(("embedding", self.embedding_work()))
        sublayers = list(layout.chunk_sublayers(chunk_index))
        pieces += [("attention" if s % 2 == 1 else "mlp", self.sublayer_work(s)) for s in sublayers]
        if chunk_index == layout.num_chunks - 1:
            pieces.append(("head", self.head_work()))
        tp_s = self.tensor_parallel_collective_s()
        fwd_s = bwd_s = tp_total_s = flops = 0.0
        for kind, work in pieces:
            timing = self._find_timing(kind)
            if timing is not None:  # measured times include the TP collectives
                fwd_s, bwd_s = fwd_s + timing.forward_s, bwd_s + timing.backward_s
            else:
                fwd_s += self.seconds(work)
                bwd_s += self.seconds(work.scaled(2.0))
                tp_total_s += tp_s if kind != "head" else 0.0
            flops += work.flops
        aggregations = sublayers + ([layout.num_sublayers + 1]
                                    if chunk_index == layout.num_chunks - 1 else [])
        agg_fwd_s = agg_bwd_s = 0.0
        for sub in aggregations:
            a_fwd, a_bwd = self.aggregation_seconds(sub)
            agg_fwd_s, agg_bwd_s = agg_fwd_s + a_fwd, agg_bwd_s + a_bwd
            flops += self.residual_work(sub).flops
        forward_s = fwd_s + agg_fwd_s + tp_total_s
        recompute = self.scenario.training.recompute
        recompute_s = 0.0
        if recompute == "full":
            recompute_s = forward_s
        elif recompute == "selective":
            num_attention = sum(1 for sub in sublayers if sub % 2 == 1)
            recompute_s = num_attention * self.seconds(self.attention_core_work()) + agg_fwd_s
        backward_s = bwd_s + agg_bwd_s + tp_total_s + recompute_s
        backward_flops = 2 * flops + (flops if recompute == "full" else 0.0)
        return ChunkCost(chunk_index, forward_s, backward_s, recompute_s, agg_fwd_s, tp_total_s,
                         flops, backward_flops)

    def chunk_costs(self) -> list[ChunkCost]:
        """`chunk_cost` for every chunk, in chunk order."""
        return [self.chunk_cost(c) for c in range(self.layout.num_chunks)]

    def aggregation_seconds(self, sublayer: int) -> tuple[float, float]:
        """(forward_s, backward_s) of the residual / aggregation before `sublayer`.

        A measured profile's aggregation timings at this shape are interpolated linearly in
        the number of sources (extrapolated from the nearest two points); else the roofline.
        """
        points = self._aggregation_points()
        if points and self.layout.block_size is not None:
            return _interpolate(points, self.layout.sources_at(sublayer))
        work = self.residual_work(sublayer)
        return self.seconds(work), self.seconds(work.scaled(2.0))

    def _aggregation_points(self) -> list[tuple[int, float, float]]:
        profile = self.hardware.profile
        if profile is None:
            return []
        m = self.scenario.model
        shape = (m.hidden_size, m.seq_len, m.micro_batch_size, m.dtype)
        by_sources = {a.num_sources: (a.num_sources, a.forward_s, a.backward_s)
                      for a in profile.aggregation
                      if (a.hidden_size, a.seq_len, a.micro_batch_size, a.dtype) == shape}
        return sorted(by_sources.values())  # a repeated source count: the last entry wins

    def _find_timing(self, kind: str) -> SublayerTiming | None:
        profile = self.hardware.profile
        if profile is None or not profile.sublayers:
            return None
        m = self.scenario.model
        want = (kind, m.hidden_size, m.num_heads, m.ffn_hidden_size, m.vocab_size, m.seq_len,
                m.micro_batch_size, self._t, m.dtype)
        for timing in profile.sublayers:
            have = (timing.kind, timing.hidden_size, timing.num_heads, timing.ffn_hidden_size,
                    timing.vocab_size, timing.seq_len, timing.micro_batch_size,
                    timing.tensor_parallel, timing.dtype)
            if have == want:
                return timing
        if not self._warned:
            self._warned = True
            warnings.warn(f"measured profile {profile.device!r} has no {kind} timing at this "
                          "scenario's shape; using the analytic roofline model", stacklevel=3)
        return None


def _interpolate(points: list[tuple[int, float, float]], sources: int) -> tuple[float, float]:
    """Piecewise-linear (forward_s, backward_s) at `sources`, clamped at zero."""
    if len(points) == 1:
        _, fwd, bwd = points[0]
        return fwd, bwd
    for (k0, f0, b0), (k1, f1, b1) in zip(points, points[1:]):
        if sources <= k1 or (k1, f1, b1) == points[-1]:
            w = (sources - k0) / (k1 - k0)
            return max(f0 + w * (f1 - f0), 0.0), max(b0 + w * (b1 - b0), 0.0)
    raise AssertionError("unreachable")
