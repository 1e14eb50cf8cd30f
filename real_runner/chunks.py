"""The model cut into pipeline chunks, the unsplit reference model, and the synthetic data.

A `ModelChunk` owns a contiguous range of sublayers (the scenario's layout decides which);
chunk 0 also owns the embedding, the last chunk the final aggregation, final norm, LM head and
loss. Parameter names are the unsplit model's ("sublayers.3.inner.qkv.weight", "head.lm_head.
weight"), so gradients of a chunk compare with the reference by name. `ReferenceModel` is the
whole model in one process: `ModelChunk` over every sublayer with both ends, the single-process
forward and backward that pipelined runs must reproduce.

Data: every step draws its token ids from a generator seeded by (seed, step), so the rank with
chunk 0 (inputs) and the rank with the last chunk (targets) agree without communicating.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from real_runner.model import Embedding, ModelSpec, OutputHead, Sublayer, module_generator
from real_runner.residual import ResidualState, apply_sublayer, depth_attention, final_sources

__all__ = ["ModelChunk", "ReferenceModel", "make_batch", "reference_step"]


class ModelChunk(nn.Module):
    """Sublayers `sublayers` (1-based, contiguous) plus the embedding and/or the head."""

    def __init__(self, spec: ModelSpec, sublayers: range, *, has_embedding: bool,
                 has_head: bool) -> None:
        super().__init__()
        self.spec = spec
        self.sublayer_range = sublayers
        self.embedding = Embedding(spec) if has_embedding else None
        self.sublayers = nn.ModuleDict({str(l): Sublayer(spec, l) for l in sublayers})
        self.head = OutputHead(spec) if has_head else None

    def embed(self, tokens: Tensor) -> ResidualState:
        """The state entering sublayer 1: h_1 (standard) or b_0 alone (AttnRes)."""
        assert self.embedding is not None, "only chunk 0 embeds"
        emb = self.embedding(tokens)
        return ResidualState(blocks={0: emb}) if self.spec.attnres else ResidualState(hidden=emb)

    def run_sublayers(self, state: ResidualState) -> ResidualState:
        """Every sublayer of the chunk, in order."""
        for sublayer in self.sublayers.values():
            state = apply_sublayer(sublayer, state, self.spec.block_size, self.spec.num_sublayers)
        return state

    def loss(self, state: ResidualState, targets: Tensor) -> Tensor:
        """Final aggregation (AttnRes), final norm, LM head, cross entropy."""
        assert self.head is not None, "only the last chunk computes the loss"
        if self.spec.attnres:
            assert self.spec.num_blocks is not None
            h = depth_attention(final_sources(state, self.spec.num_blocks),
                                self.head.res_query, self.head.res_norm)
        else:
            assert state.hidden is not None
            h = state.hidden
        return self.head.loss(h, targets)


class ReferenceModel(ModelChunk):
    """The unsplit model: every sublayer, the embedding and the head in one module."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec, range(1, spec.num_sublayers + 1), has_embedding=True,
                         has_head=True)

    def forward(self, tokens: Tensor, targets: Tensor) -> Tensor:
        return self.loss(self.run_sublayers(self.embed(tokens)), targets)


def make_batch(spec: ModelSpec, step: int, num_microbatches: int, micro_batch_size: int,
               seq_len: int) -> tuple[Tensor, Tensor]:
    """(inputs, targets), each [M, b, T] int64 on the CPU, the same on every rank."""
    gen = module_generator(spec.seed + 7919 * (step + 1), spec.num_sublayers + 2)
    tokens = torch.randint(spec.vocab_size, (num_microbatches, micro_batch_size, seq_len + 1),
                           generator=gen)
    return tokens[..., :-1].contiguous(), tokens[..., 1:].contiguous()


def reference_step(model: ReferenceModel, inputs: Tensor, targets: Tensor) -> Tensor:
    """One step of the unsplit model: mean loss over micro-batches, gradients accumulated.

    Returns the detached mean loss; gradients are in the parameters' `.grad`.
    """
    num_microbatches = inputs.shape[0]
    total = torch.zeros(())
    for m in range(num_microbatches):
        loss = model(inputs[m], targets[m]) / num_microbatches
        loss.backward()
        total += loss.detach().float().cpu()
    return total
