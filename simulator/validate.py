"""`pipesim validate`: simulate the scenario a measured run executed and compare, number by number.

Why: a simulator's numbers are worth exactly what its measured error says. The run is read
with `simulator.ingest.load_trace` (any supported format); for our runner's JSONL the full
trace (steps, memory, payload vs header) is read too. The scenario is simulated independently:
the runner was never told what the simulator predicts, and the calibrated profile comes from a
separate `pipesim calibrate` run. Then:

- bytes per transition and per rank pair (must be exact), operation counts (must be exact);
- per-operation durations, step time and per-rank peak saved-for-backward bytes, as errors in
  percent (simulated - measured) / measured.

Resolution of what to simulate on: hardware is the calibration's (`--calibration DIR`) or the
scenario's `hardware:`; the topology is `--topology`, else the scenario's `topology:`, else the
calibrated host_loopback link for K local processes; the protocol is the engine's eager sends
for our runner's traces (it posts every receive before its send, real_runner/executor.py) and
for NCCL, and gloo's rendezvous for other gloo traces (`StepPlan.p2p_protocol`,
simulator/step_plan.py: "eager" starts a message's flows at its send; "rendezvous" once both its
send and its receive are posted, as a gloo TCP pair moves an unbound buffer only after the
receiver announced it).

    report = validate_run(load_scenario("scenarios/cpu_block_naive_gpipe.yaml"),
                          "runs/measure/cpu_block_naive_gpipe", calibration="runs/calib")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.calibrate_files import Calibration, load_calibration
from simulator.calibrate_memory import ActivationProfileError, runner_activation_memory
from simulator.errors import UserError
from simulator.hardware import load_hardware
from simulator.ingest import load_trace
from simulator.ingest.model import MeasuredRun as IngestedRun
from simulator.manifest import build_manifest
from simulator.memory import memory_model
from simulator.engine import P2P_PROTOCOLS, StepPlan, simulate_plan
from simulator.plan import build_plan, resolve_fabric
from simulator.results import SimulationResult
from simulator.scenario import Scenario
from simulator.trace_schema import MeasuredRun as RunnerRun
from simulator.trace_schema import read_run
from simulator.validate_compare import (
    DurationRow,
    MemoryRow,
    OpCount,
    PairBytes,
    StepTime,
    TransitionBytes,
    compare_generic_pairs,
    compare_runner_bytes,
    compare_runner_counts,
    compare_runner_durations,
    compare_runner_step_time,
    measured_chunk_compute_s,
    measured_steps,
)

__all__ = ["ValidationError", "ValidationReport", "validate_run"]

_COMPARED_SECTIONS = ("model", "residual", "pipeline", "parallelism", "training")


class ValidationError(UserError):
    """The trace and the scenario do not belong together, or a needed input is missing."""


@dataclass
class ValidationReport:
    """Everything `pipesim validate` found; `to_json()` is the machine-readable form."""

    scenario_name: str
    trace: str
    trace_format: str
    backend: str
    protocol: str
    hardware: str
    topology: str
    transitions: list[TransitionBytes] = field(default_factory=list)
    pairs: list[PairBytes] = field(default_factory=list)
    counts: list[OpCount] = field(default_factory=list)
    durations: list[DurationRow] = field(default_factory=list)
    step: StepTime | None = None
    memory: list[MemoryRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    simulated: SimulationResult | None = None
    measured_gantt: list[tuple[int, str, int, int, float, float]] = field(default_factory=list)
    """(rank, "F"/"B", chunk, micro-batch, start_s, end_s) of the median measured step."""

    @property
    def bytes_exact(self) -> bool:
        """Every transition and every rank pair carried exactly the simulated bytes."""
        return all(t.exact for t in self.transitions) and all(p.exact for p in self.pairs)

    @property
    def counts_exact(self) -> bool:
        """Every rank ran exactly the simulated operations."""
        return all(c.exact for c in self.counts)

    @property
    def step_time_error_pct(self) -> float | None:
        """Step-time error in percent (None when the trace has no step times)."""
        return None if self.step is None else self.step.error_pct

    @property
    def worst_memory_error_pct(self) -> float | None:
        """The largest |calibrated error| over ranks, in percent."""
        errors = [abs(e) for m in self.memory if (e := m.calibrated_error_pct) is not None]
        return max(errors) if errors else None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data: every table, the headline verdicts, and the simulated summary."""
        def rows(items: list[Any], *props: str) -> list[dict[str, Any]]:
            return [{**dataclasses.asdict(i), **{p: getattr(i, p) for p in props}}
                    for i in items]

        return {
            "scenario": self.scenario_name, "trace": self.trace,
            "trace_format": self.trace_format, "backend": self.backend,
            "protocol": self.protocol, "hardware": self.hardware, "topology": self.topology,
            "bytes_exact": self.bytes_exact, "counts_exact": self.counts_exact,
            "step_time_error_pct": self.step_time_error_pct,
            "worst_memory_error_pct": self.worst_memory_error_pct,
            "transitions": rows(self.transitions, "exact"),
            "pairs": rows(self.pairs, "exact"),
            "counts": rows(self.counts, "exact"),
            "durations": rows(self.durations, "error_pct"),
            "step": None if self.step is None else {
                **dataclasses.asdict(self.step), "error_pct": self.step.error_pct,
                "with_run_compute_error_pct": self.step.with_run_compute_error_pct},
            "memory": rows(self.memory, "calibrated_error_pct", "analytic_error_pct"),
            "notes": self.notes,
            "simulated_summary": None if self.simulated is None else self.simulated.summary(),
        }


def _check_same_scenario(scenario: Scenario, run: RunnerRun) -> None:
    """The trace's resolved scenario must match the one given, section by section."""
    ours = scenario.model_dump(mode="json")
    theirs = run.manifest.scenario
    for section in _COMPARED_SECTIONS:
        mine, recorded = ours.get(section), theirs.get(section)
        if mine == recorded:
            continue
        keys = sorted(set(mine or {}) | set(recorded or {}))
        key = next((k for k in keys if (mine or {}).get(k) != (recorded or {}).get(k)), "")
        raise ValidationError(
            f"{run.run_dir}: the trace was measured with {section}.{key} = "
            f"{(recorded or {}).get(key)!r} but the scenario says {(mine or {}).get(key)!r}; "
            f"validate the trace against the scenario it ran (its manifest.json holds it)")


def validate_run(scenario: Scenario, trace: str | Path | Sequence[str | Path], *,
                 calibration: Calibration | str | Path | None = None,
                 topology: Any = None, protocol: str | None = None,
                 base_dir: str | Path | None = None) -> ValidationReport:
    """Simulate `scenario` as the traced run executed it and compare.

    `trace` is a run directory, one trace file, or a list of files (one per rank).

    Raises:
        ValidationError: the trace belongs to another scenario or world size, or no hardware.
        TraceError, TraceFormatError: the trace cannot be read.
    """
    ingested = load_trace(trace)
    runner = read_run(_run_dir(trace)) if ingested.source_format == "runner_jsonl" else None
    p = scenario.pipeline
    if ingested.world_size != p.num_stages * scenario.parallelism.data_parallel * \
            scenario.parallelism.tensor_parallel:
        raise ValidationError(f"{_run_dir(trace)}: the trace has {ingested.world_size} ranks "
                              f"but scenario {scenario.name!r} needs {p.num_stages} "
                              "(pipeline.num_stages x data and tensor parallel degrees); "
                              "check the pairing")
    if runner is not None:
        _check_same_scenario(scenario, runner)
        if not measured_steps(runner):
            raise ValidationError(f"{_run_dir(trace)}: every step is a warm-up step; measure "
                                  "at least one more step (--steps)")
    backend = runner.manifest.backend if runner is not None else _backend_of(ingested)
    protocol = protocol or ("rendezvous" if backend == "gloo" and runner is None else "eager")
    if protocol not in P2P_PROTOCOLS:
        raise ValidationError(f"protocol = {protocol!r}: use one of {', '.join(P2P_PROTOCOLS)}")
    calib = load_calibration(calibration) if isinstance(calibration, (str, Path)) \
        else calibration
    hardware = calib.hardware if calib is not None else None
    if hardware is None:
        if scenario.hardware is None:
            raise ValidationError("no hardware to simulate on: pass --calibration DIR (from "
                                  "`pipesim calibrate`) or give the scenario a `hardware:`")
        hardware = load_hardware(scenario.hardware, base_dir)
    spec = topology if topology is not None else scenario.topology
    if spec is None:
        if calib is None:
            raise ValidationError("no topology to simulate on: pass --topology, give the "
                                  "scenario a `topology:`, or pass --calibration DIR for the "
                                  "measured loopback of local processes")
        spec = calib.topology(ingested.world_size)
    fabric = resolve_fabric(scenario, spec, base_dir)
    plan = dataclasses.replace(build_plan(scenario, hardware, fabric), p2p_protocol=protocol)
    options = {"hardware": hardware.name, "comm_mode": build_manifest(scenario).comm_mode,
               "schedule": p.schedule, "protocol": protocol}
    result = simulate_plan(plan, options=options)
    label = str(trace) if isinstance(trace, (str, Path)) else " ".join(map(str, trace))
    report = ValidationReport(scenario.name, label, ingested.source_format, backend,
                              protocol, hardware.name, fabric.description, simulated=result,
                              notes=list(ingested.notes))
    if runner is not None:
        _compare_runner(report, scenario, result, runner, calib)
        report.step.with_run_compute_s = _step_with_run_compute(plan, runner)
    else:
        report.pairs, report.counts, notes = compare_generic_pairs(result, ingested)
        report.notes += notes + ["durations, step time and memory need a runner trace "
                                 "(pipesim measure); this format has no step records"]
    return report


def _compare_runner(report: ValidationReport, scenario: Scenario, result: SimulationResult,
                    run: RunnerRun, calib: Calibration | None) -> None:
    manifest = build_manifest(scenario)
    names = {(hop.direction, hop.src_chunk): list(hop.names(manifest.comm_mode))
             for hop in manifest.transitions}
    report.transitions, report.pairs = compare_runner_bytes(result, run, names)
    report.counts = compare_runner_counts(result, run)
    report.durations = compare_runner_durations(result, run)
    report.step = compare_runner_step_time(result, run)
    steps = set(measured_steps(run))
    analytic = memory_model(scenario)
    calibrated: list[int | None] = [None] * len(run.ranks)
    if calib is not None:
        try:
            calibrated = [r.peak_bytes for r in runner_activation_memory(scenario,
                                                                         calib.activations)]
        except ActivationProfileError as exc:
            report.notes.append(f"no calibrated memory prediction: {exc}")
    for rank in run.ranks:
        r = rank.header.rank
        peak = max(s.peak_saved_bytes for s in rank.steps if s.step in steps)
        report.memory.append(MemoryRow(r, peak, calibrated[r],
                                       analytic.ranks[r].peak_activation_bytes))
    report.measured_gantt = _median_step_spans(run, report.step)


def _step_with_run_compute(plan: StepPlan, run: RunnerRun) -> float | None:
    """The step simulated again with the run's own per-chunk compute medians (attribution)."""
    measured = measured_chunk_compute_s(run, len(plan.forward_s))
    if measured is None:
        return None
    forward_s, backward_s = measured
    plan = dataclasses.replace(plan, forward_s=forward_s, backward_s=backward_s,
                               record_link_timeline=False, send_cpu_s_per_byte=0.0,
                               recv_cpu_s_per_byte=0.0)  # the run's compute includes them
    return simulate_plan(plan).step_time_s


def _median_step_spans(run: RunnerRun, step: StepTime | None
                       ) -> list[tuple[int, str, int, int, float, float]]:
    """Compute spans of the measured step closest to the median, from that step's start."""
    if step is None or not step.measured_steps_s:
        return []
    steps = measured_steps(run)
    chosen = min(zip(step.measured_steps_s, steps), key=lambda p: abs(p[0] - step.measured_s))[1]
    origin = {rank.header.rank: rank.header.time_origin_unix_s for rank in run.ranks}
    start = min(origin[rank.header.rank] + s.start_s for rank in run.ranks
                for s in rank.steps if s.step == chosen)
    return [(rank.header.rank, rec.kind, rec.chunk, rec.microbatch,
             origin[rank.header.rank] + rec.start_s - start,
             origin[rank.header.rank] + rec.end_s - start)
            for rank in run.ranks for rec in rank.compute if rec.step == chosen]


def _run_dir(trace: str | Path | Sequence[str | Path]) -> Path:
    path = Path(trace if isinstance(trace, (str, Path)) else trace[0])
    return path if path.is_dir() else path.parent


def _backend_of(run: IngestedRun) -> str:
    return "nccl" if run.source_format in ("nccl_log", "flight_recorder") else "unknown"
