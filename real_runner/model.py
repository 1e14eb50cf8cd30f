"""The building blocks of the small decoder the runner trains: norms, sublayers, embedding, head.

A transformer layer is two AttnRes "sublayers" (paper section 2): sublayer 2k-1 is layer k's
causal self-attention, sublayer 2k its MLP (swiglu or gelu). Each sublayer is pre-norm,
f_l(h) = inner(RMSNorm(h)). With AttnRes each sublayer also owns the pair the paper's Fig. 2
gives it: a pseudo-query w_l in R^d (zero-initialised) and an RMSNorm applied to the keys.
The output head optionally owns the final aggregation's own pseudo-query and key norm.

Weights are drawn on the CPU in fp32 from a torch.Generator seeded per module (embedding,
sublayer l, head), then cast and moved. So any subset of the model - one pipeline chunk - gets
exactly the weights the unsplit model has, without building the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ModelSpec",
    "RMSNorm",
    "Sublayer",
    "Embedding",
    "OutputHead",
    "module_generator",
    "TORCH_DTYPES",
]

TORCH_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16,
                                        "fp32": torch.float32}

_INIT_STD = 0.02
_NORM_EPS = 1e-6


@dataclass(frozen=True)
class ModelSpec:
    """What the runner needs to build the model (taken from a scenario's model/residual)."""

    num_sublayers: int
    hidden_size: int
    num_heads: int
    ffn_hidden_size: int
    vocab_size: int
    mlp: str
    """"swiglu" or "gelu"."""
    residual_kind: str
    """"standard", "full" or "block"."""
    block_size: int | None
    """S in sublayers (1 for full, None for standard)."""
    seed: int
    pseudo_query_init_std: float = 0.0
    """0 as the paper requires; tests may use a small value so the softmax is not uniform."""

    @property
    def attnres(self) -> bool:
        """True for Full and Block AttnRes."""
        return self.residual_kind != "standard"

    @property
    def num_blocks(self) -> int | None:
        """N = ceil(L / S); None for the standard residual."""
        if self.block_size is None:
            return None
        return -(-self.num_sublayers // self.block_size)


def module_generator(seed: int, module_index: int) -> torch.Generator:
    """The generator for one module: 0 is the embedding, l the sublayer l, L + 1 the head."""
    return torch.Generator().manual_seed((seed * 1_000_003 + module_index) % (2**63 - 1))


def _normal(shape: tuple[int, ...], gen: torch.Generator, std: float) -> nn.Parameter:
    if std == 0.0:
        return nn.Parameter(torch.zeros(shape))
    return nn.Parameter(torch.randn(shape, generator=gen) * std)


def _linear(in_features: int, out_features: int, gen: torch.Generator) -> nn.Linear:
    layer = nn.Linear(in_features, out_features, bias=False)
    layer.weight = _normal((out_features, in_features), gen, _INIT_STD)
    return layer


class RMSNorm(nn.Module):
    """x / rms(x) * g, computed in fp32 and returned in the input dtype."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + _NORM_EPS)
        return (normed * self.weight.float()).to(x.dtype)


class _Attention(nn.Module):
    def __init__(self, spec: ModelSpec, gen: torch.Generator) -> None:
        super().__init__()
        self.num_heads = spec.num_heads
        self.qkv = _linear(spec.hidden_size, 3 * spec.hidden_size, gen)
        self.out = _linear(spec.hidden_size, spec.hidden_size, gen)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.num_heads, d // self.num_heads).unbind(2)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                           v.transpose(1, 2), is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class _MLP(nn.Module):
    def __init__(self, spec: ModelSpec, gen: torch.Generator) -> None:
        super().__init__()
        self.swiglu = spec.mlp == "swiglu"
        d, f = spec.hidden_size, spec.ffn_hidden_size
        self.up = _linear(d, f, gen)
        self.gate = _linear(d, f, gen) if self.swiglu else None
        self.down = _linear(f, d, gen)

    def forward(self, x: Tensor) -> Tensor:
        if self.gate is not None:
            return self.down(F.silu(self.gate(x)) * self.up(x))
        return self.down(F.gelu(self.up(x)))


class Sublayer(nn.Module):
    """Sublayer l: f_l(h) = inner(RMSNorm(h)); with AttnRes also (res_query w_l, res_norm)."""

    def __init__(self, spec: ModelSpec, index: int) -> None:
        super().__init__()
        gen = module_generator(spec.seed, index)
        self.index = index
        self.is_attention = index % 2 == 1
        self.norm = RMSNorm(spec.hidden_size)
        self.inner = _Attention(spec, gen) if self.is_attention else _MLP(spec, gen)
        if spec.attnres:
            self.res_query = _normal((spec.hidden_size,), gen, spec.pseudo_query_init_std)
            self.res_norm = RMSNorm(spec.hidden_size)

    def forward(self, h: Tensor) -> Tensor:
        return self.inner(self.norm(h))


class Embedding(nn.Module):
    """Token embedding: produces h_1, which AttnRes keeps as the permanent source b_0."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        gen = module_generator(spec.seed, 0)
        self.weight = _normal((spec.vocab_size, spec.hidden_size), gen, _INIT_STD)

    def forward(self, tokens: Tensor) -> Tensor:
        return F.embedding(tokens, self.weight)


class OutputHead(nn.Module):
    """Final norm, LM head and loss; with AttnRes also the final aggregation's query and norm."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        gen = module_generator(spec.seed, spec.num_sublayers + 1)
        if spec.attnres:
            self.res_query = _normal((spec.hidden_size,), gen, spec.pseudo_query_init_std)
            self.res_norm = RMSNorm(spec.hidden_size)
        self.final_norm = RMSNorm(spec.hidden_size)
        self.lm_head = _linear(spec.hidden_size, spec.vocab_size, gen)

    def loss(self, h: Tensor, targets: Tensor) -> Tensor:
        """Mean next-token cross entropy over the micro-batch, in fp32."""
        logits = self.lm_head(self.final_norm(h)).float()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))
