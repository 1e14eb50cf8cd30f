"""The residual stream between sublayers: standard sum, or AttnRes depth attention over sources.

Standard: h_{l+1} = h_l + f_l(h_l); the state is one tensor, `hidden`.

AttnRes (paper sections 2-3, Eq. 2, 5, 6): the input of sublayer l is a softmax-weighted mix of
depth sources,
    h_l = sum_i alpha_i v_i,  alpha = softmax_i(w_l . RMSNorm(v_i)),
with the pseudo-query w_l, RMSNorm on the keys only (values stay raw), no 1/sqrt(d), and the
softmax over sources in fp32. The sources of sublayer l, the i-th sublayer of block n, are the
completed blocks b_0..b_{n-1} (b_0 = the embedding, never folded into a block) plus, for i >= 2,
the partial sum b_n^{i-1}. After the sublayer, partial <- partial + f_l(h_l); when l is the last
sublayer of its block, the partial becomes b_n. This is Fig. 2's order: the aggregation that opens
a block runs before the boundary moves the finished block into the list, so it sees exactly the
sources Eq. 6 gives for i = 1. Full AttnRes is S = 1 (b_i = output of sublayer i). The final
aggregation over b_0..b_N has its own query and key norm and feeds the final norm and LM head.

The state is therefore `blocks` (completed b_n by index) plus `partial`; that is also exactly
what crosses a pipeline boundary. There is no separate hidden state.

Keys: RMSNorm(v) . w = (v . (w * g)) / rms(v), so the per-source inverse RMS is computed once per
source and chunk and reused by every later aggregation in the chunk (`inv_rms`). The mixing
itself is one autograd Function (`_DepthMix`) that keeps only references to the sources and
per-token statistics for backward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from real_runner.model import RMSNorm, Sublayer

__all__ = ["ResidualState", "depth_attention", "apply_sublayer", "final_sources"]

_EPS = 1e-6


@dataclass
class ResidualState:
    """What flows from one sublayer to the next (and across a pipeline boundary)."""

    hidden: Tensor | None = None
    """Standard residual: h_l."""
    blocks: dict[int, Tensor] = field(default_factory=dict)
    """AttnRes: completed block representations b_0..b_{n-1}, by block index."""
    partial: Tensor | None = None
    """AttnRes: the partial sum of the current block; None at a block boundary."""
    inv_rms: dict[int, Tensor] = field(default_factory=dict)
    """Per-chunk cache of 1 / rms(b_n) in fp32, [b, T]; never sent."""


def _inv_rms(v: Tensor) -> Tensor:
    vf = v.to(_compute_dtype(v))
    return torch.rsqrt(vf.pow(2).mean(-1) + _EPS)


def _compute_dtype(v: Tensor) -> torch.dtype:
    """fp32 for bf16/fp16/fp32 sources (fp64 stays fp64, for gradcheck)."""
    return torch.promote_types(v.dtype, torch.float32)


def depth_attention(sources: list[Tensor], query: Tensor, key_norm: RMSNorm,
                    inv_rms: list[Tensor | None] | None = None) -> Tensor:
    """sum_i softmax_i(w . RMSNorm(v_i)) v_i over the source list, in fp32; input dtype out.

    `inv_rms` may give 1/rms(v_i) for some sources (None entries are computed here).
    """
    cached = inv_rms or [None] * len(sources)
    rms = [_inv_rms(v) if r is None else r for v, r in zip(sources, cached)]
    q_eff = query.to(_compute_dtype(sources[0])) * key_norm.weight.to(_compute_dtype(sources[0]))
    return _DepthMix.apply(q_eff, len(sources), *sources, *rms)


class _DepthMix(torch.autograd.Function):
    """softmax_i((v_i . q) r_i) mixing of the sources, with a hand-written backward.

    Saves references to the sources (no copies) plus per-token statistics - the dot products
    v_i . q and the softmax weights, [n, tokens] in fp32 - instead of autograd's per-op
    intermediates (Megatron's AttnRes kernel makes the same trade). The r_i = 1/rms(v_i) are
    inputs, so autograd takes their gradient back to the sources (and sums it over every
    aggregation that shares a cached r_i before doing so).
    """

    @staticmethod
    def forward(ctx, q_eff: Tensor, num_sources: int, *inputs: Tensor) -> Tensor:  # noqa: ANN001
        sources, rms = inputs[:num_sources], inputs[num_sources:]
        shape, dtype = sources[0].shape, _compute_dtype(sources[0])
        flat = [v.reshape(-1, shape[-1]) for v in sources]
        dots = torch.stack([f.to(dtype) @ q_eff for f in flat])  # [n, tokens]
        weights = torch.softmax(dots * torch.stack([r.reshape(-1) for r in rms]), dim=0)
        mixed = torch.zeros(flat[0].shape, dtype=dtype, device=flat[0].device)
        for i, f in enumerate(flat):
            mixed.addcmul_(weights[i].unsqueeze(1), f.to(dtype))
        ctx.num_sources = num_sources
        ctx.save_for_backward(q_eff, dots, weights, *sources, *rms)
        return mixed.to(sources[0].dtype).reshape(shape)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # noqa: ANN001
        q_eff, dots, weights, *rest = ctx.saved_tensors
        sources, rms = rest[:ctx.num_sources], rest[ctx.num_sources:]
        shape, dtype = sources[0].shape, _compute_dtype(sources[0])
        g = grad_out.reshape(-1, shape[-1]).to(dtype)
        flat = [v.reshape(-1, shape[-1]).to(dtype) for v in sources]
        r = torch.stack([x.reshape(-1) for x in rms])
        grad_w = torch.stack([(g * f).sum(-1) for f in flat])  # d loss / d weight_i
        grad_logit = weights * (grad_w - (weights * grad_w).sum(0, keepdim=True))
        scaled = grad_logit * r  # d loss / d (v_i . q)
        grad_q = sum(scaled[i] @ flat[i] for i in range(len(flat)))
        grad_sources = []
        for i, v in enumerate(sources):
            grad_v = g * weights[i].unsqueeze(1)
            grad_v.addr_(scaled[i], q_eff)
            grad_sources.append(grad_v.to(v.dtype).reshape(shape))
        grad_rms = [(grad_logit[i] * dots[i]).reshape(rms[i].shape).to(rms[i].dtype)
                    for i in range(len(rms))]
        return (grad_q, None, *grad_sources, *grad_rms)


def apply_sublayer(sublayer: Sublayer, state: ResidualState, block_size: int | None,
                   num_sublayers: int) -> ResidualState:
    """Run sublayer l (its residual update included) and return the state after it."""
    l = sublayer.index
    if block_size is None:
        assert state.hidden is not None, "standard residual needs the hidden state"
        return ResidualState(hidden=state.hidden + sublayer(state.hidden))
    n = -(-l // block_size)
    position = l - (n - 1) * block_size
    assert sorted(state.blocks) == list(range(n)), (
        f"sublayer {l} needs blocks b0..b{n - 1}, has {sorted(state.blocks)}")
    assert (state.partial is None) == (position == 1), f"partial sum out of step at sublayer {l}"
    ids = list(range(n))
    sources = [state.blocks[j] for j in ids]
    rms = [_cached_inv_rms(state, j) for j in ids]
    if state.partial is not None:
        sources.append(state.partial)
        rms.append(None)
    out = sublayer(depth_attention(sources, sublayer.res_query, sublayer.res_norm, rms))
    partial = out if state.partial is None else state.partial + out
    blocks, inv = dict(state.blocks), dict(state.inv_rms)
    if l == min(n * block_size, num_sublayers):  # the block is complete
        blocks[n] = partial
        partial = None
    return ResidualState(blocks=blocks, partial=partial, inv_rms=inv)


def _cached_inv_rms(state: ResidualState, block: int) -> Tensor:
    if block not in state.inv_rms:
        state.inv_rms[block] = _inv_rms(state.blocks[block])
    return state.inv_rms[block]


def final_sources(state: ResidualState, num_blocks: int) -> list[Tensor]:
    """b_0..b_N for the final aggregation (every block must be complete)."""
    assert state.partial is None and sorted(state.blocks) == list(range(num_blocks + 1)), (
        f"final aggregation needs b0..b{num_blocks}, has {sorted(state.blocks)}")
    return [state.blocks[j] for j in range(num_blocks + 1)]
