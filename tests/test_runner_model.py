"""The runner's model is the paper's: depth attention, Fig. 2 block order, Eq. 3 Full AttnRes.

Each test recomputes the model's loss with an independent implementation written from
shared/reference/attnres-paper.md (sections 2, 3 and 7.5), using the same weights.

    python -m pytest tests/test_runner_model.py -q
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from real_runner.chunks import ModelChunk, ReferenceModel, make_batch, reference_step
from real_runner.model import ModelSpec
from real_runner.residual import depth_attention
from simulator.layout import Layout

torch.manual_seed(0)  # only for the random test inputs below; the model uses its own generators


def _spec(kind: str, block_size: int | None, *, num_layers: int = 4, std: float = 0.3,
          mlp: str = "swiglu") -> ModelSpec:
    return ModelSpec(num_sublayers=2 * num_layers, hidden_size=16, num_heads=2,
                     ffn_hidden_size=24, vocab_size=32, mlp=mlp, residual_kind=kind,
                     block_size=block_size, seed=3, pseudo_query_init_std=std)


def _rmsnorm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight.double()


def _paper_mix(sources: list[torch.Tensor], w: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Eq. 2 / Fig. 2 block_attn_res: V = stack(sources), K = RMSNorm(V), softmax over sources."""
    values = torch.stack(sources).double()
    logits = torch.einsum("d,nbtd->nbt", w.double(), _rmsnorm(values, g))
    return torch.einsum("nbt,nbtd->btd", logits.softmax(0), values).to(sources[0].dtype)


def _f(model: ReferenceModel, index: int, h: torch.Tensor) -> torch.Tensor:
    sub = model.sublayers[str(index)]
    return sub.inner(sub.norm(h))


def _head_loss(model: ReferenceModel, sources: list[torch.Tensor] | None, h: torch.Tensor | None,
               targets: torch.Tensor) -> torch.Tensor:
    head = model.head
    if sources is not None:
        h = _paper_mix(sources, head.res_query, head.res_norm.weight)
    return head.loss(h, targets)


def _fig2_loss(model: ReferenceModel, tokens: torch.Tensor, targets: torch.Tensor,
               block_size: int) -> torch.Tensor:
    """The paper's Fig. 2 loop, per transformer layer, 0-based layer_number."""
    blocks: list[torch.Tensor] = []
    partial: torch.Tensor | None = model.embedding(tokens)
    for layer_number in range(model.spec.num_sublayers // 2):
        attn, mlp = model.sublayers[str(2 * layer_number + 1)], model.sublayers[str(2 * layer_number + 2)]
        h = _paper_mix(blocks + [partial], attn.res_query, attn.res_norm.weight)
        if layer_number % (block_size // 2) == 0:
            blocks.append(partial)
            partial = None
        out = attn.inner(attn.norm(h))
        partial = out if partial is None else partial + out
        h = _paper_mix(blocks + [partial], mlp.res_query, mlp.res_norm.weight)
        partial = partial + mlp.inner(mlp.norm(h))
    return _head_loss(model, blocks + [partial], None, targets)


def _eq3_full_loss(model: ReferenceModel, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Full AttnRes, Eq. 1-3: v_0 = embedding, h_l over v_0..v_{l-1}, v_l = f_l(h_l)."""
    values = [model.embedding(tokens)]
    for l in range(1, model.spec.num_sublayers + 1):
        sub = model.sublayers[str(l)]
        values.append(_f(model, l, _paper_mix(values, sub.res_query, sub.res_norm.weight)))
    return _head_loss(model, values, None, targets)


def _eq6_loss(model: ReferenceModel, tokens: torch.Tensor, targets: torch.Tensor,
              block_size: int) -> torch.Tensor:
    """Block AttnRes, Eq. 5-6, any S: the last block takes the remainder."""
    L = model.spec.num_sublayers
    blocks = [model.embedding(tokens)]
    partial = None
    for l in range(1, L + 1):
        sub = model.sublayers[str(l)]
        sources = blocks + ([] if partial is None else [partial])
        out = _f(model, l, _paper_mix(sources, sub.res_query, sub.res_norm.weight))
        partial = out if partial is None else partial + out
        if l % block_size == 0 or l == L:
            blocks.append(partial)
            partial = None
    return _head_loss(model, blocks, None, targets)


def _batch(spec: ModelSpec) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, targets = make_batch(spec, step=0, num_microbatches=1, micro_batch_size=2, seq_len=8)
    return inputs[0], targets[0]


@pytest.mark.parametrize("block_size", [2, 4, 8])
def test_block_attnres_equals_the_papers_fig2_loop(block_size):
    spec = _spec("block", block_size)
    model = ReferenceModel(spec)
    tokens, targets = _batch(spec)
    assert_close(model(tokens, targets), _fig2_loss(model, tokens, targets, block_size))


@pytest.mark.parametrize("block_size", [3, 5])
def test_uneven_last_block_equals_eq6(block_size):
    spec = _spec("block", block_size)
    model = ReferenceModel(spec)
    tokens, targets = _batch(spec)
    assert_close(model(tokens, targets), _eq6_loss(model, tokens, targets, block_size))


def test_full_attnres_equals_eq3():
    spec = _spec("full", 1, mlp="gelu")
    model = ReferenceModel(spec)
    tokens, targets = _batch(spec)
    assert_close(model(tokens, targets), _eq3_full_loss(model, tokens, targets))


def test_standard_residual_is_the_prenorm_sum():
    spec = _spec("standard", None)
    model = ReferenceModel(spec)
    tokens, targets = _batch(spec)
    h = model.embedding(tokens)
    for l in range(1, spec.num_sublayers + 1):
        h = h + _f(model, l, h)
    assert_close(model(tokens, targets), _head_loss(model, None, h, targets))


def test_depth_attention_is_eq2_without_temperature():
    sources = [torch.randn(2, 3, 16) * scale for scale in (1.0, 5.0, 0.2)]
    norm = torch.nn.Module()
    norm.weight = torch.nn.Parameter(torch.rand(16) + 0.5)
    query = torch.randn(16)
    expected = _paper_mix(sources, query, norm.weight)
    assert_close(depth_attention(sources, query, norm), expected)
    # A 1/sqrt(d) temperature would give a visibly different mix.
    scaled = _paper_mix(sources, query / 4.0, norm.weight)
    assert not torch.allclose(scaled, expected, atol=1e-3)


def test_depth_softmax_runs_in_fp32_for_bf16_sources():
    sources = [(torch.randn(2, 3, 16) * 3).to(torch.bfloat16) for _ in range(4)]
    norm = torch.nn.Module()
    norm.weight = torch.nn.Parameter(torch.ones(16))
    query = torch.randn(16) * 4
    got = depth_attention(sources, query, norm)
    assert got.dtype == torch.bfloat16
    exact = _paper_mix([s.double() for s in sources], query, norm.weight).to(torch.bfloat16)
    assert (got.float() - exact.float()).abs().max() <= 0.02  # one bf16 rounding, no more


def test_pseudo_queries_are_zero_by_default_so_the_mix_starts_as_a_mean():
    spec = _spec("block", 2, std=0.0)
    model = ReferenceModel(spec)
    queries = [p for name, p in model.named_parameters() if name.endswith("res_query")]
    assert len(queries) == spec.num_sublayers + 1  # one per sublayer plus the final aggregation
    assert all(torch.count_nonzero(q) == 0 for q in queries)
    sources = [torch.randn(2, 3, 16) for _ in range(3)]
    sub = model.sublayers["1"]
    assert_close(depth_attention(sources, sub.res_query, sub.res_norm),
                 torch.stack(sources).mean(0))


def test_chunks_get_the_reference_weights_by_name():
    spec = _spec("block", 3)
    reference = dict(ReferenceModel(spec).named_parameters())
    layout = Layout(num_sublayers=8, num_stages=2, num_virtual_stages=2,
                    chunk_sublayer_counts=(3, 1, 2, 2), block_size=3)
    seen = {}
    for c in range(layout.num_chunks):
        chunk = ModelChunk(spec, layout.chunk_sublayers(c), has_embedding=c == 0,
                           has_head=c == layout.num_chunks - 1)
        for name, param in chunk.named_parameters():
            assert name not in seen, f"{name} in two chunks"
            seen[name] = param
            assert torch.equal(param, reference[name]), name
    assert sorted(seen) == sorted(reference)


def test_batches_are_deterministic_per_step_and_shifted():
    spec = _spec("standard", None)
    first = make_batch(spec, 0, 2, 2, 8)
    assert all(torch.equal(a, b) for a, b in zip(first, make_batch(spec, 0, 2, 2, 8)))
    assert not torch.equal(first[0], make_batch(spec, 1, 2, 2, 8)[0])
    assert torch.equal(first[0][..., 1:], first[1][..., :-1])


def test_reference_step_averages_microbatch_losses():
    spec = _spec("full", 1)
    model = ReferenceModel(spec)
    inputs, targets = make_batch(spec, 0, 3, 2, 8)
    loss = reference_step(model, inputs, targets)
    assert_close(loss, torch.stack([model(inputs[m], targets[m]) for m in range(3)]).mean()
                 .detach())
    assert all(p.grad is not None for p in model.parameters())


def test_depth_mix_backward_passes_gradcheck_with_shared_inverse_rms():
    from real_runner.residual import _DepthMix, _inv_rms

    sources = [torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    query = torch.randn(5, dtype=torch.float64, requires_grad=True)

    def two_mixes(q, *vs):  # two aggregations sharing each source's 1/rms, as in a chunk
        rms = [_inv_rms(v) for v in vs]
        first = _DepthMix.apply(q, len(vs), *vs, *rms)
        return first + _DepthMix.apply(q * 0.5, 2, vs[0], first, rms[0], _inv_rms(first))

    assert torch.autograd.gradcheck(two_mixes, (query, *sources))
