"""The hardware a step runs on: GPU peak rates, efficiencies, the TP link, and measured profiles.

A `HardwareSpec` is what the cost model (`simulator/costs.py`) needs to turn FLOPs and bytes into
seconds: the dense bf16 peak in FLOP/s, HBM bandwidth and capacity, the fraction of each a real
kernel reaches, and an alpha-beta description of the intra-node link tensor-parallel collectives
use. Presets for A100, H100, H200 and B200 live in `simulator/presets/*.yaml`, each number with
its public source. All values are SI: bytes, seconds, bytes/s, FLOP/s.

A `MeasuredProfile` is the file `pipesim calibrate` writes: measured forward/backward seconds of
sublayers at given shapes, the AttnRes aggregation cost against its number of sources, and
point-to-point alpha-beta per rank pair or per link kind. When a hardware spec carries a profile,
measured numbers replace the analytic ones wherever the shapes match (docs/simulator.md).

In a scenario, `hardware:` is a preset name (`h100`), a YAML file, or a mapping: either a full
spec, or `{preset: h100, compute_efficiency: 0.45, profile: my_profile.yaml}` (overrides).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simulator.errors import UserError

__all__ = [
    "HardwareError",
    "ModelShape",
    "SublayerTiming",
    "AggregationTiming",
    "P2PTiming",
    "ExecutorOverhead",
    "MeasuredProfile",
    "HardwareSpec",
    "PRESET_NAMES",
    "PRESET_ALIASES",
    "load_hardware",
    "load_profile",
    "hardware_json_schema",
]

PRESET_NAMES: tuple[str, ...] = ("a100", "h100", "h200", "b200")
"""Hardware presets shipped in simulator/presets/."""

PRESET_ALIASES: dict[str, str] = {"a100-sxm": "a100", "h100-sxm": "h100", "h200-sxm": "h200",
                                  "b200-hgx": "b200"}
"""Longer names accepted for the presets."""


class HardwareError(UserError):
    """A hardware spec or measured profile is malformed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ModelShape(_Strict):
    """The model dimensions a sublayer timing is measured at (and calibration times at)."""

    hidden_size: int = Field(ge=1)
    num_heads: int = Field(ge=1)
    ffn_hidden_size: int = Field(ge=1)
    vocab_size: int = Field(ge=1)
    seq_len: int = Field(ge=1)
    micro_batch_size: int = Field(ge=1)


class SublayerTiming(ModelShape):
    """Measured seconds of one sublayer kind at one shape, per GPU (one TP rank)."""

    kind: Literal["attention", "mlp", "embedding", "head"]
    """attention/mlp sublayer, or the embedding (chunk 0) / final norm + LM head + loss."""
    tensor_parallel: int = Field(default=1, ge=1)
    dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    forward_s: float = Field(gt=0)
    """Median forward time, TP collectives included."""
    backward_s: float = Field(gt=0)
    """Median backward time (input and weight gradients), TP collectives included."""


class AggregationTiming(_Strict):
    """Measured seconds of one AttnRes aggregation over `num_sources` depth sources."""

    num_sources: int = Field(ge=1)
    hidden_size: int = Field(ge=1)
    seq_len: int = Field(ge=1)
    micro_batch_size: int = Field(ge=1)
    dtype: Literal["bf16", "fp16", "fp32"] = "bf16"
    forward_s: float = Field(gt=0)
    backward_s: float = Field(gt=0)


class P2PTiming(_Strict):
    """Point-to-point alpha-beta: time(bytes) = latency_s + bytes / bandwidth_bytes_per_s.

    Give `src_gpu` and `dst_gpu` (topology node names) for one pair, or `link_kind` (a
    topology edge kind such as "nvlink") for every link of that kind.
    """

    src_gpu: str | None = None
    dst_gpu: str | None = None
    link_kind: str | None = None
    latency_s: float = Field(ge=0)
    bandwidth_bytes_per_s: float = Field(gt=0)


class ExecutorOverhead(_Strict):
    """Host seconds the real runner's executor spends after a compute before its next action
    (bookkeeping, records, freeing), measured on one rank (simulator/calibrate_executor.py)."""

    residual_kind: Literal["standard", "full", "block"]
    num_sublayers: int = Field(ge=1)
    """Sublayers of the chunk the probe ran."""
    after_forward_s: float = Field(ge=0)
    after_backward_s: float = Field(ge=0)
    num_samples: int = Field(default=0, ge=0)
    """Gaps the medians were taken over (after forwards and after backwards together)."""


class MeasuredProfile(_Strict):
    """What `pipesim calibrate` measures and the simulator accepts (format_version 1)."""

    format_version: Literal[1] = 1
    device: str
    """What was measured, e.g. "NVIDIA H100 80GB HBM3" or "cpu (2 cores)"."""
    created_by: str = ""
    """Tool and version that wrote the file."""
    sublayers: list[SublayerTiming] = []
    aggregation: list[AggregationTiming] = []
    p2p: list[P2PTiming] = []
    late_receive_overhead_s: float = Field(default=0.0, ge=0)
    """Extra seconds a point-to-point message costs when its receive is posted after its send
    and both ranks were computing: on a host whose ranks fill every core, the communication
    threads' wake-ups wait for a core (measured by `pipesim calibrate`'s late-receive probe;
    charged by the engine's rendezvous protocol only)."""
    send_overhead_s: float = Field(default=0.0, ge=0)
    """Host seconds a point-to-point send holds the sending rank: the send call, its receive
    posted earlier (LogP's o; measured by `pipesim calibrate`'s point-to-point sweep)."""
    recv_overhead_s: float = Field(default=0.0, ge=0)
    """Host seconds completing a receive holds the receiving rank when its data is already in
    place (a waiting receiver's wake-up is part of the p2p latency)."""
    send_overhead_per_tensor_s: float = Field(default=0.0, ge=0)
    """Host seconds each tensor of a message beyond its first adds to the send (a message of k
    tensors holds the sender send_overhead_s + (k - 1) x this)."""
    send_s_per_byte: float = Field(default=0.0, ge=0)
    """Host seconds each byte of a message adds to its send, measured with both ranks
    computing (`pipesim calibrate`'s busy send probe): on a host whose ranks compute on every
    core, the send call's copy into the transport waits for the receiving side's threads."""
    recv_post_s: float = Field(default=0.0, ge=0)
    """Host seconds posting a one-tensor message's receive takes the receiving rank."""
    recv_post_per_tensor_s: float = Field(default=0.0, ge=0)
    """Host seconds each further tensor adds to posting a message's receives."""
    send_cpu_s_per_byte: float = Field(default=0.0, ge=0)
    """Compute seconds a sending rank loses per byte it moves while computing: the transfer's
    host work runs on the cores that compute (measured by `pipesim calibrate`'s traffic-load
    probe; the engine charges the part of a transfer that overlaps the rank's compute)."""
    recv_cpu_s_per_byte: float = Field(default=0.0, ge=0)
    """The same for a receiving rank."""
    executor_overhead: list[ExecutorOverhead] = []
    """The runner's host work after each compute, per residual kind and chunk size (`pipesim
    calibrate`'s executor probe; the engine holds the rank this long after each compute)."""


class HardwareSpec(_Strict):
    """One GPU kind, how close kernels get to its peaks, and its TP link."""

    name: str
    description: str = ""
    peak_flops_per_s: float = Field(gt=0)
    """Dense (non-sparse) bf16/fp16 tensor-core peak."""
    hbm_bytes_per_s: float = Field(gt=0)
    """Peak HBM bandwidth."""
    hbm_capacity_bytes: float = Field(gt=0)
    """HBM capacity as the vendor quotes it (decimal GB)."""
    compute_efficiency: float = Field(gt=0, le=1)
    """Fraction of peak FLOP/s that matmul-bound kernels reach (an assumption unless calibrated)."""
    memory_efficiency: float = Field(gt=0, le=1)
    """Fraction of peak HBM bandwidth that memory-bound kernels reach."""
    tensor_parallel_bandwidth_bytes_per_s: float = Field(gt=0)
    """Per-direction bandwidth of the intra-node link TP collectives run on."""
    tensor_parallel_latency_s: float = Field(ge=0)
    """Per-step latency (alpha) of a TP collective."""
    sources: dict[str, str] = {}
    """Field name -> where its number comes from."""
    profile: MeasuredProfile | None = None
    """Measured timings that replace the analytic model where shapes match."""


def _preset_text(name: str) -> str:
    return resources.files("simulator").joinpath("presets", f"{name}.yaml").read_text()


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise HardwareError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise HardwareError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _explain(label: str, exc: ValidationError) -> HardwareError:
    err = exc.errors()[0]
    path = ".".join(str(part) for part in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return HardwareError(f"{label}: {path}: unknown key; valid keys are listed in "
                             "docs/simulator.md (hardware specs and measured profiles)")
    if err["type"] == "missing":
        return HardwareError(f"{label}: {path}: required key is missing; add it")
    return HardwareError(f"{label}: {path} = {err.get('input')!r}: {err['msg']}; fix the value")


def load_profile(source: str | Path | dict[str, Any]) -> MeasuredProfile:
    """Load a measured profile from a YAML file or a mapping."""
    label = "profile" if isinstance(source, dict) else str(source)
    data = source if isinstance(source, dict) else _read_yaml(Path(source), "profile")
    try:
        return MeasuredProfile.model_validate(data)
    except ValidationError as exc:
        raise _explain(label, exc) from None


def load_hardware(source: str | Path | dict[str, Any] | None,
                  base_dir: str | Path | None = None) -> HardwareSpec:
    """The hardware a scenario names: a preset, a YAML file, or a mapping.

    Args:
        source: preset name (a100, h100, h200, b200), a path, or a mapping (a full spec, or
            `preset:` plus overriding keys). `profile:` in a mapping may name a profile file.
        base_dir: where relative file names are resolved (the scenario's directory).

    Raises:
        HardwareError: unknown preset, bad keys or values (one message with the key path).
    """
    if source is None:
        raise HardwareError("the scenario names no hardware: add `hardware: h100` (presets: "
                            f"{', '.join(PRESET_NAMES)}), a hardware YAML file, or a mapping; "
                            "or pass --hardware to `pipesim run`")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    label = "hardware"
    if isinstance(source, (str, Path)):
        name = PRESET_ALIASES.get(str(source), str(source))
        if name in PRESET_NAMES:
            data, label = yaml.safe_load(_preset_text(name)), f"hardware preset {name!r}"
        elif name.endswith((".yaml", ".yml")):
            path = base / name
            data, label = _read_yaml(path, "hardware"), str(path)
        else:
            raise HardwareError(f"hardware = {name!r}: not a preset or a .yaml file; use one of "
                                f"{', '.join(PRESET_NAMES)} or a path ending in .yaml")
    else:
        data = dict(source)
        preset = data.pop("preset", None)
        preset = PRESET_ALIASES.get(preset, preset)
        if preset is not None:
            if preset not in PRESET_NAMES:
                raise HardwareError(f"hardware.preset = {preset!r}: unknown preset; use one of "
                                    f"{', '.join(PRESET_NAMES)}")
            data = {**yaml.safe_load(_preset_text(preset)), **data}
    profile = data.get("profile")
    if isinstance(profile, str):
        data["profile"] = load_profile(base / profile)
    try:
        return HardwareSpec.model_validate(data)
    except ValidationError as exc:
        raise _explain(label, exc) from None


def hardware_json_schema() -> dict[str, Any]:
    """JSON Schema of a hardware spec (profile included), for editor completion."""
    return HardwareSpec.model_json_schema()
