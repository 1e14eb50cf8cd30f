"""The scenario a user writes: model, residual kind, pipeline layout, parallelism, training.

A scenario is YAML validated by pydantic v2 models with `extra="forbid"`. Every way a file can be
wrong ends in one `ScenarioError` that names the key path, the bad value, the rule and the fix;
unknown keys get a did-you-mean. Cross-field rules (sublayers splittable over P x V, the block
size fitting the model, schedule rules) are checked after the fields themselves.

    scenario = load_scenario("scenarios/fig3_toy.yaml")
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from simulator.errors import ScenarioError, ScheduleError

__all__ = [
    "DTYPE_BYTES",
    "MoEConfig",
    "ModelConfig",
    "ResidualConfig",
    "PipelineConfig",
    "ParallelismConfig",
    "TrainingConfig",
    "RunConfig",
    "Scenario",
    "load_scenario",
    "scenario_json_schema",
]

DTYPE_BYTES: dict[str, int] = {"bf16": 2, "fp16": 2, "fp32": 4}
"""Bytes per element of each activation dtype a scenario may name."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class MoEConfig(_Section):
    """Mixture-of-experts MLPs: every MLP sublayer routes each token to a few experts."""

    num_experts: int = Field(ge=1)
    """Routed experts per MLP sublayer."""
    experts_per_token: int = Field(ge=1)
    """Routed experts each token visits (top-k)."""
    num_shared_experts: int = Field(default=0, ge=0)
    """Experts every token visits."""
    expert_parallel: int = Field(default=1, ge=1)
    """Expert-parallel degree: routed experts are split over this many GPUs."""


class ModelConfig(_Section):
    """The transformer: each layer is an attention sublayer followed by an MLP sublayer."""

    num_layers: int = Field(ge=1)
    """Transformer layers. AttnRes counts sublayers, so L = 2 x num_layers."""
    hidden_size: int = Field(ge=1)
    """Model width d."""
    num_heads: int = Field(ge=1)
    """Attention heads; must divide hidden_size."""
    ffn_hidden_size: int = Field(ge=1)
    """Inner width of the MLP."""
    vocab_size: int = Field(ge=1)
    """Vocabulary size (embedding rows, LM-head columns; untied)."""
    seq_len: int = Field(ge=1)
    """Tokens per sequence T."""
    micro_batch_size: int = Field(default=1, ge=1)
    """Sequences per micro-batch b."""
    dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    """Activation and parameter dtype."""
    mlp: Literal["swiglu", "gelu"] = "swiglu"
    """MLP kind: swiglu has three weight matrices, gelu two."""
    moe: MoEConfig | None = None
    """Mixture of experts; ffn_hidden_size is then the width of one expert."""

    @property
    def active_ffn_hidden_size(self) -> int:
        """MLP width a token passes through: ffn_hidden_size, times the experts it visits."""
        if self.moe is None:
            return self.ffn_hidden_size
        return self.ffn_hidden_size * (self.moe.experts_per_token + self.moe.num_shared_experts)

    @property
    def stored_ffn_hidden_size(self) -> int:
        """MLP width whose weights one GPU stores (routed experts split over expert_parallel)."""
        if self.moe is None:
            return self.ffn_hidden_size
        local = self.moe.num_experts // self.moe.expert_parallel + self.moe.num_shared_experts
        return self.ffn_hidden_size * local

    @property
    def num_sublayers(self) -> int:
        """L: attention and MLP sublayers counted separately, as AttnRes does."""
        return 2 * self.num_layers

    @property
    def dtype_bytes(self) -> int:
        """Bytes per element of `dtype`."""
        return DTYPE_BYTES[self.dtype]


class ResidualConfig(_Section):
    """How sublayer outputs are combined: the fixed sum, Full AttnRes or Block AttnRes."""

    kind: Literal["standard", "full", "block"] = "standard"
    """`standard` residual sum, `full` AttnRes over every sublayer output, `block` AttnRes."""
    num_blocks: int | None = Field(default=None, ge=1)
    """Block AttnRes: number of blocks N. Give this or block_size, not both."""
    block_size: int | None = Field(default=None, ge=1)
    """Block AttnRes: sublayers per block S; the last block takes the remainder."""


class PipelineConfig(_Section):
    """The pipeline schedule and how the model is cut into chunks (virtual stages)."""

    schedule: Literal["gpipe", "1f1b", "interleaved-1f1b"] = "1f1b"
    """Pipeline schedule."""
    num_stages: int = Field(default=1, ge=1)
    """Pipeline ranks P."""
    num_virtual_stages: int = Field(default=1, ge=1)
    """Chunks per rank V (interleaved-1f1b only); the model is cut into C = P x V chunks."""
    num_microbatches: int = Field(default=1, ge=1)
    """Micro-batches per step M."""
    sublayers_per_chunk: list[int] | None = None
    """Explicit contiguous map: sublayers in chunk 0, 1, ..., C-1 (sums to L). Default: even split."""
    comm_mode: Literal["naive", "cached", "cached-own"] = "naive"
    """AttnRes boundary traffic: resend the history, cache what a rank received, or also what it made."""


class ParallelismConfig(_Section):
    """Data and tensor parallelism around each pipeline."""

    data_parallel: int = Field(default=1, ge=1)
    """Data-parallel degree (pipeline replicas)."""
    tensor_parallel: int = Field(default=1, ge=1)
    """Tensor-parallel degree t inside each pipeline stage."""
    sequence_parallel: bool = False
    """Shard activations outside the TP regions by t; boundary tensors are then sent as 1/t shards."""


class TrainingConfig(_Section):
    """What training keeps in memory."""

    recompute: Literal["none", "selective", "full"] = "none"
    """Recompute: none; selective (attention core, AttnRes statistics); full (layer inputs kept)."""
    grad_bytes_per_param: float = Field(default=4.0, ge=0)
    """Gradient bytes per parameter (fp32 accumulation: 4)."""
    optimizer_bytes_per_param: float = Field(default=12.0, ge=0)
    """Optimizer state per parameter (Adam with fp32 master: 4 + 4 + 4 = 12)."""
    distributed_optimizer: bool = False
    """Shard the optimizer state over the data-parallel group (ZeRO-1 / Megatron distributed optimizer)."""


class RunConfig(_Section):
    """How a run is executed and measured."""

    seed: int = 0
    """Seed for every random choice (weights in the runner, ECMP hashing is seed-free)."""
    num_steps: int = Field(default=1, ge=1)
    """Training steps to run (the real runner measures these after warm-up)."""
    num_warmup_steps: int = Field(default=0, ge=0)
    """Steps run before measuring."""


class Scenario(_Section):
    """One complete scenario file."""

    name: str
    """Short identifier, used in output file names."""
    description: str = ""
    """One line: what this scenario is for."""
    model: ModelConfig
    residual: ResidualConfig = ResidualConfig()
    pipeline: PipelineConfig = PipelineConfig()
    parallelism: ParallelismConfig = ParallelismConfig()
    training: TrainingConfig = TrainingConfig()
    hardware: str | dict[str, Any] | None = None
    """Hardware preset name, profile file, or inline description (used by `pipesim run`)."""
    topology: str | dict[str, Any] | None = None
    """Topology preset name, file, or builder description (used by `pipesim run`)."""
    placement: str | dict[str, Any] = "packed"
    """Placement of (dp, pp, tp) ranks onto GPUs: packed, spread-racks, or an explicit map."""
    run: RunConfig = RunConfig()

    @model_validator(mode="after")
    def _cross_field_rules(self) -> Scenario:
        _check_cross_fields(self)
        return self

    @property
    def num_chunks(self) -> int:
        """C = P x V model chunks."""
        return self.pipeline.num_stages * self.pipeline.num_virtual_stages

    def chunk_sublayer_counts(self) -> list[int]:
        """Sublayers in each chunk: the explicit map, or an even split with the remainder first."""
        if self.pipeline.sublayers_per_chunk is not None:
            return list(self.pipeline.sublayers_per_chunk)
        base, extra = divmod(self.model.num_sublayers, self.num_chunks)
        return [base + (1 if c < extra else 0) for c in range(self.num_chunks)]

    def block_size(self) -> int | None:
        """S in sublayers: None for standard, 1 for full, the resolved value for block."""
        kind = self.residual.kind
        if kind == "standard":
            return None
        if kind == "full":
            return 1
        if self.residual.block_size is not None:
            return self.residual.block_size
        assert self.residual.num_blocks is not None  # enforced by _check_residual
        return -(-self.model.num_sublayers // self.residual.num_blocks)

    def num_blocks(self) -> int | None:
        """N: None for standard, L for full, ceil(L / S) for block."""
        size = self.block_size()
        return None if size is None else -(-self.model.num_sublayers // size)

    def plane_bytes(self) -> int:
        """U: bytes of one [b, T, d] activation as sent by one TP rank (1/t of it with SP)."""
        m = self.model
        full = m.micro_batch_size * m.seq_len * m.hidden_size * m.dtype_bytes
        t = self.parallelism.tensor_parallel if self.parallelism.sequence_parallel else 1
        return full // t


def _fail(path: str, value: Any, rule: str, fix: str) -> ScenarioError:
    return ScenarioError(f"{path} = {value!r}: {rule}; {fix}")


def _check_cross_fields(s: Scenario) -> None:
    """Rules spanning several keys, each reported with its key path and a fix."""
    m, p = s.model, s.pipeline
    L = m.num_sublayers
    if m.moe is not None:
        if m.moe.experts_per_token > m.moe.num_experts:
            raise _fail("model.moe.experts_per_token", m.moe.experts_per_token,
                        f"exceeds model.moe.num_experts ({m.moe.num_experts})",
                        "route each token to at most num_experts experts")
        if m.moe.num_experts % m.moe.expert_parallel:
            raise _fail("model.moe.expert_parallel", m.moe.expert_parallel,
                        f"must divide model.moe.num_experts ({m.moe.num_experts})",
                        "choose an expert-parallel degree that divides the expert count")
    if m.hidden_size % m.num_heads:
        raise _fail("model.num_heads", m.num_heads, f"must divide model.hidden_size ({m.hidden_size})",
                    "choose a head count that divides the hidden size")
    _check_residual(s)
    _check_schedule(s)
    C = s.num_chunks
    if p.sublayers_per_chunk is None:
        if L < C:
            raise _fail("pipeline.num_stages", p.num_stages,
                        f"L = 2 x model.num_layers = {L} sublayers cannot be split over "
                        f"P x V = {p.num_stages} x {p.num_virtual_stages} = {C} chunks",
                        f"every chunk needs at least one sublayer: use P x V <= {L}")
        if L % C:
            base, extra = divmod(L, C)
            example = [base + 1] * extra + [base] * (C - extra)
            raise _fail("pipeline.num_stages", p.num_stages,
                        f"L = {L} sublayers do not split evenly over P x V = {C} chunks",
                        f"use P x V dividing {L}, or give pipeline.sublayers_per_chunk "
                        f"explicitly, e.g. {example}")
    else:
        counts = p.sublayers_per_chunk
        if len(counts) != C:
            raise _fail("pipeline.sublayers_per_chunk", counts,
                        f"needs one entry per chunk, P x V = {C} entries, got {len(counts)}",
                        f"list {C} sublayer counts")
        if any(n < 1 for n in counts):
            raise _fail("pipeline.sublayers_per_chunk", counts,
                        "every chunk needs at least one sublayer", "make every entry >= 1")
        if sum(counts) != L:
            raise _fail("pipeline.sublayers_per_chunk", counts,
                        f"entries sum to {sum(counts)} but the model has L = {L} sublayers",
                        f"make them sum to {L}")
    t = s.parallelism.tensor_parallel
    if m.num_heads % t:
        raise _fail("parallelism.tensor_parallel", t,
                    f"must divide model.num_heads ({m.num_heads})", "choose a TP degree dividing it")
    if s.parallelism.sequence_parallel and (m.seq_len * m.micro_batch_size) % t:
        raise _fail("parallelism.sequence_parallel", True,
                    f"sequence parallelism shards b x T = {m.seq_len * m.micro_batch_size} tokens "
                    f"over tensor_parallel = {t}, which must divide it",
                    "change seq_len or tensor_parallel, or turn sequence_parallel off")
    if s.parallelism.sequence_parallel and t == 1:
        raise _fail("parallelism.sequence_parallel", True,
                    "has no effect with tensor_parallel = 1",
                    "set tensor_parallel > 1 or remove sequence_parallel")


def _check_residual(s: Scenario) -> None:
    r, L = s.residual, s.model.num_sublayers
    if r.kind != "block":
        for key in ("num_blocks", "block_size"):
            if getattr(r, key) is not None:
                raise _fail(f"residual.{key}", getattr(r, key),
                            f"only applies to residual.kind 'block', not {r.kind!r}",
                            f"remove residual.{key} or set residual.kind: block")
        return
    if r.num_blocks is None and r.block_size is None:
        raise _fail("residual", dict(r.model_dump(exclude_none=True)),
                    "block AttnRes needs residual.num_blocks (N) or residual.block_size (S)",
                    "add one of them, e.g. num_blocks: 8")
    if r.num_blocks is not None and r.block_size is not None:
        raise _fail("residual", {"num_blocks": r.num_blocks, "block_size": r.block_size},
                    "give num_blocks or block_size, not both", "remove one of them")
    if r.block_size is not None and r.block_size > L:
        raise _fail("residual.block_size", r.block_size,
                    f"exceeds L = {L} sublayers", f"use a block size <= {L}")
    if r.num_blocks is not None:
        if r.num_blocks > L:
            raise _fail("residual.num_blocks", r.num_blocks,
                        f"exceeds L = {L} sublayers", f"use at most {L} blocks (N = L is Full AttnRes)")
        size = -(-L // r.num_blocks)
        if -(-L // size) != r.num_blocks:
            raise _fail("residual.num_blocks", r.num_blocks,
                        f"L = {L} sublayers cannot form exactly {r.num_blocks} blocks with one "
                        f"block size and a shorter last block (S = ceil(L/N) = {size} gives "
                        f"{-(-L // size)} blocks)",
                        "pick N such that ceil(L / ceil(L / N)) == N, or give residual.block_size")


def _check_schedule(s: Scenario) -> None:
    from simulator.schedule import validate_schedule_params

    p = s.pipeline
    try:
        validate_schedule_params(p.schedule, p.num_stages, p.num_virtual_stages, p.num_microbatches)
    except ScheduleError as exc:
        raise ScenarioError(f"pipeline: {exc}") from None


def load_scenario(source: str | Path | dict[str, Any]) -> Scenario:
    """Load and validate a scenario from a YAML path or a mapping.

    Raises:
        ScenarioError: one message naming the key path, value, rule and fix.
        FileNotFoundError: the path does not exist.
    """
    label = "scenario"
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        label = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"scenario file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{label}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ScenarioError(f"{label}: the top level must be a mapping of keys "
                                f"(name, model, residual, pipeline, ...), got {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(f"{label}: {_explain(exc)}") from None
    except ScenarioError as exc:
        raise ScenarioError(f"{label}: {exc}") from None


def _explain(exc: ValidationError) -> str:
    """Turn pydantic's first error into our one-line form, with did-you-mean for unknown keys."""
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"]]
    path = ".".join(loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _model_at(loc[:-1])
        valid = sorted(parent.model_fields) if parent else []
        close = difflib.get_close_matches(loc[-1], valid, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(valid)}"
        return f"{path}: unknown key; {hint}"
    if kind == "missing":
        return f"{path}: required key is missing; add it"
    if kind == "value_error":  # raised by our own cross-field checks
        return str(err.get("ctx", {}).get("error", err["msg"]))
    return f"{path} = {err.get('input')!r}: {err['msg']}; fix the value"


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] = Scenario
    for part in loc:
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def scenario_json_schema() -> dict[str, Any]:
    """JSON Schema of a scenario file, for editor completion."""
    return Scenario.model_json_schema()
