"""The runner's own host work after each forward and backward: what to probe, and what it costs.

Between the end of one compute span and the start of its next action the runner's executor does
bookkeeping no calibrated piece contains: it counts and releases the tensors the chunk saved,
writes the compute and memory records, and frees the finished micro-batch's state. On the
2-core validation host that took 0.12-0.36 ms per compute (docs/accuracy-report.md, cause B),
grows with the sublayers of the chunk after a backward, and the engine charged nothing for it.

`pipesim calibrate` measures it with the runner itself: one rank, no communication, the whole
model cut to as many sublayers as a chunk of the calibrated scenario has (real_runner/
calibration_executor.py launches it); the medians of the gaps after forwards and after backwards
go into the profile (hardware.ExecutorOverhead), and the plan charges each chunk the value
interpolated at its sublayer count (`executor_overhead_s`).

    probes = executor_probes_for([load_scenario("scenarios/cpu_block_cached_interleaved.yaml")])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from simulator.hardware import ExecutorOverhead
from simulator.scenario import Scenario

__all__ = ["ExecutorProbe", "ExecutorMeasurements", "executor_probes_for",
           "executor_overhead_s", "PROBE_MICROBATCHES", "PROBE_STEPS", "PROBE_WARMUP_STEPS",
           "RAW_EXECUTOR_NAME"]

PROBE_MICROBATCHES, PROBE_STEPS, PROBE_WARMUP_STEPS = 8, 3, 1
"""Per probe: measured steps after warm-up ones; 1F1B on one stage gives 8 gaps after forwards
and 7 after backwards per measured step."""


RAW_EXECUTOR_NAME = "raw-executor.json"
"""The probes' results in a calibration directory (an `ExecutorMeasurements`)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ExecutorProbe(_Strict):
    """One one-rank run to time: a scenario on one stage with `num_sublayers` sublayers."""

    residual_kind: Literal["standard", "full", "block"]
    num_sublayers: int = Field(ge=2)
    scenario: dict[str, Any]
    """The scenario to run (a mapping as in its YAML file)."""


class ExecutorMeasurements(_Strict):
    """What the probes measured (raw-executor.json of a calibration directory)."""

    probes: list[ExecutorOverhead] = []


def executor_probes_for(scenarios: Sequence[Scenario]) -> list[ExecutorProbe]:
    """One probe per distinct (model shape, residual kind, chunk size) of some scenarios.

    A chunk of n sublayers is probed with a one-stage model of ceil(n / 2) layers (the model
    has whole layers of two sublayers), its block size capped at 2 x that.
    """
    from simulator.layout import build_layout  # noqa: PLC0415

    probes: dict[tuple[object, ...], ExecutorProbe] = {}
    for s in scenarios:
        counts = set(build_layout(s).chunk_sublayer_counts)
        for count in sorted(counts):
            layers = (count + 1) // 2
            data = s.model_dump(mode="json", exclude_defaults=True)
            data["name"] = f"executor_probe_{s.residual.kind}_{2 * layers}"
            data["description"] = (f"pipesim calibrate's executor probe: {s.name} on one stage "
                                   f"with {2 * layers} sublayers")
            data["model"]["num_layers"] = layers
            if s.residual.block_size is not None:
                data["residual"]["block_size"] = min(s.residual.block_size, 2 * layers)
            data["pipeline"] = {"schedule": "1f1b", "num_stages": 1, "num_virtual_stages": 1,
                                "num_microbatches": PROBE_MICROBATCHES,
                                **({"comm_mode": s.pipeline.comm_mode}
                                   if s.residual.kind != "standard" else {})}
            data["run"] = {**data.get("run", {}), "num_steps": PROBE_STEPS,
                           "num_warmup_steps": PROBE_WARMUP_STEPS}
            for unused in ("topology", "placement", "hardware"):
                data.pop(unused, None)
            m = s.model
            key = (m.hidden_size, m.num_heads, m.ffn_hidden_size, m.vocab_size, m.seq_len,
                   m.micro_batch_size, m.dtype, m.mlp, s.residual.kind, 2 * layers)
            probes.setdefault(key, ExecutorProbe(residual_kind=s.residual.kind,
                                                 num_sublayers=2 * layers, scenario=data))
    return list(probes.values())


def executor_overhead_s(entries: Sequence[ExecutorOverhead], residual_kind: str,
                        num_sublayers: int) -> tuple[float, float]:
    """(after a forward, after a backward) for a chunk of `num_sublayers`: linear between the
    two measured sizes around it, the nearest one's value outside them; (0, 0) when no entry
    has this residual kind."""
    points = sorted((e.num_sublayers, e.after_forward_s, e.after_backward_s)
                    for e in entries if e.residual_kind == residual_kind)
    if not points:
        return 0.0, 0.0
    if num_sublayers <= points[0][0]:
        return points[0][1], points[0][2]
    for (n0, f0, b0), (n1, f1, b1) in zip(points, points[1:]):
        if num_sublayers <= n1:
            w = (num_sublayers - n0) / (n1 - n0) if n1 != n0 else 1.0
            return f0 + w * (f1 - f0), b0 + w * (b1 - b0)
    return points[-1][1], points[-1][2]
