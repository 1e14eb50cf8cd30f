"""Simulate one plan candidate and reduce the result to the numbers a plan compares.

`evaluate_candidate` is a top-level function of picklable arguments, so that it runs unchanged
in this process, in a spawned worker process, or on a Dask worker. For each candidate it runs
the engine twice:

1. the real step: the scenario's hardware and topology, gradient all-reduce included (with the
   symmetry reduction when asked: one representative pipeline on links shared by the others);
2. the compute-only step: the same schedule and chunk durations on an ideal fabric (unlimited,
   zero-latency links) without the all-reduce.

The difference is the exposed communication time: how much longer the step is because data
moves over real links, i.e. the communication that compute did not hide. Evaluation is
deterministic: no randomness, and the same inputs give the same numbers in any process.

Fabrics are cached per worker process (keyed by topology, placement and parallel layout), so a
sweep over N and modes builds and routes a large cluster once per process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from simulator.engine import simulate_plan
from simulator.fabric import Fabric, ideal_fabric
from simulator.hardware import HardwareSpec, load_hardware
from simulator.manifest import build_manifest
from simulator.plan import build_plan, resolve_fabric
from simulator.results import LinkStats, SimulationResult
from simulator.scenario import Scenario

__all__ = ["EvalTask", "CandidateMetrics", "EvalOutcome", "evaluate_candidate", "task_base_dir"]


@dataclass(frozen=True)
class EvalTask:
    """Everything a worker needs to simulate one candidate."""

    index: int
    scenario: Scenario
    symmetric: bool = False
    """Simulate one representative replica (see simulator/fabric.py symmetric_fabric)."""
    hardware: Any = None
    """Overrides scenario.hardware (preset name, file, mapping or HardwareSpec)."""
    topology: Any = None
    """Overrides scenario.topology (preset name, file, mapping or "ideal")."""
    base_dir: str | None = None
    """The scenario file's directory, for relative file names."""
    aggregation: str = "two-phase"


@dataclass(frozen=True)
class CandidateMetrics:
    """What one candidate's simulated step costs."""

    step_time_s: float
    pipeline_time_s: float
    """End of the last compute action (before the all-reduce tail)."""
    bubble_fraction: float
    compute_only_step_time_s: float
    """The same step on unlimited, zero-latency links without the all-reduce."""
    max_comm_wait_s: float
    """Longest time any rank sat blocked on data in flight (pipeline and all-reduce)."""
    peak_memory_bytes_per_stage: tuple[int, ...]
    """Per pipeline rank: the peak over its replicas, per GPU."""
    hbm_capacity_bytes: float
    busiest_link: str
    """The link carrying the most pipeline-boundary bytes ("" when none crosses a link)."""
    busiest_link_kind: str
    busiest_link_pipeline_bytes: int
    busiest_link_bytes: int
    """Pipeline and all-reduce bytes on that link."""
    busiest_link_utilization: float
    """Its bytes / (capacity x step time)."""
    max_link_utilization: float
    """The highest utilization of any link (often an all-reduce link)."""
    boundary_bytes_per_step: int
    """Bytes one pipeline replica sends across stage boundaries per step (all TP ranks)."""
    num_gpus: int
    symmetric: bool
    sim_wall_s: float
    """Wall seconds of both simulations."""
    num_events: int

    @property
    def exposed_comm_s(self) -> float:
        """Step time added by real links: step time minus the compute-only step time."""
        return self.step_time_s - self.compute_only_step_time_s

    @property
    def max_peak_memory_bytes(self) -> int:
        """The most loaded GPU."""
        return max(self.peak_memory_bytes_per_stage)


@dataclass(frozen=True)
class EvalOutcome:
    """A candidate's metrics, or why it could not be simulated."""

    index: int
    metrics: CandidateMetrics | None
    error: str | None = None


_FABRICS: dict[str, Fabric] = {}
"""Per-process cache of resolved fabrics (see the module docstring)."""
_HARDWARE: dict[str, HardwareSpec] = {}


def _cache_key(*parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=repr)


def _hardware(task: EvalTask) -> HardwareSpec:
    spec = task.hardware if task.hardware is not None else task.scenario.hardware
    if isinstance(spec, HardwareSpec):
        return spec
    key = _cache_key(spec, task.base_dir)
    if key not in _HARDWARE:
        _HARDWARE[key] = load_hardware(spec, task.base_dir)
    return _HARDWARE[key]


def _fabric(task: EvalTask) -> Fabric:
    s = task.scenario
    spec = task.topology if task.topology is not None else s.topology
    if hasattr(spec, "edges"):  # a graph object: not cacheable by value
        return resolve_fabric(s, spec, task.base_dir)
    p, par = s.pipeline, s.parallelism
    key = _cache_key(spec, s.placement, par.data_parallel, p.num_stages, par.tensor_parallel,
                     p.num_virtual_stages, task.base_dir)
    if key not in _FABRICS:
        _FABRICS[key] = resolve_fabric(s, spec, task.base_dir)
    return _FABRICS[key]


def _busiest(links: list[LinkStats], multiplicity: dict[str, int]
             ) -> tuple[LinkStats | None, int, int]:
    """The link with the most pipeline bytes, and its pipeline and total bytes (all replicas)."""
    carrying = [link for link in links if link.pipeline_bytes]
    if not carrying:
        return None, 0, 0
    scale = {id(link): multiplicity.get(f"{link.src}->{link.dst}", 1) for link in carrying}
    best = max(carrying, key=lambda l: (l.pipeline_bytes * scale[id(l)], l.utilization))
    m = scale[id(best)]
    return best, best.pipeline_bytes * m, best.total_bytes * m


def _metrics(task: EvalTask, hw: HardwareSpec, result: SimulationResult,
             ideal: SimulationResult, multiplicity: dict[str, int],
             wall_s: float) -> CandidateMetrics:
    s = task.scenario
    P = s.pipeline.num_stages
    peaks = [0] * P
    for rank in result.ranks:
        peaks[rank.pp_index] = max(peaks[rank.pp_index], rank.peak_memory_bytes)
    busiest, pipeline_bytes, total_bytes = _busiest(result.links, multiplicity)
    manifest = build_manifest(s)
    boundary = (manifest.total_bytes(manifest.comm_mode) * s.pipeline.num_microbatches
                * s.parallelism.tensor_parallel)
    return CandidateMetrics(
        step_time_s=result.step_time_s, pipeline_time_s=result.pipeline_time_s,
        bubble_fraction=result.bubble_fraction, compute_only_step_time_s=ideal.step_time_s,
        max_comm_wait_s=max((r.comm_wait_s for r in result.ranks), default=0.0),
        peak_memory_bytes_per_stage=tuple(peaks), hbm_capacity_bytes=hw.hbm_capacity_bytes,
        busiest_link="" if busiest is None else f"{busiest.src}->{busiest.dst}",
        busiest_link_kind="" if busiest is None else busiest.link_kind,
        busiest_link_pipeline_bytes=pipeline_bytes, busiest_link_bytes=total_bytes,
        busiest_link_utilization=0.0 if busiest is None else busiest.utilization,
        max_link_utilization=max((l.utilization for l in result.links), default=0.0),
        boundary_bytes_per_step=boundary,
        num_gpus=s.parallelism.data_parallel * P * s.parallelism.tensor_parallel,
        symmetric=result.num_replicas == 1 and s.parallelism.data_parallel > 1,
        sim_wall_s=wall_s,
        num_events=int(result.stats.get("num_events", 0)) + int(ideal.stats.get("num_events", 0)))


def evaluate_candidate(task: EvalTask) -> EvalOutcome:
    """Simulate one candidate; a user error (bad hardware, placement, ...) becomes `error`."""
    s = task.scenario
    try:
        hw = _hardware(task)
        fabric = _fabric(task)
        plan = build_plan(s, hw, fabric, aggregation=task.aggregation,
                          symmetric=task.symmetric and s.parallelism.data_parallel > 1,
                          record_link_timeline=False)
    except (ValueError, FileNotFoundError) as exc:
        return EvalOutcome(task.index, None, str(exc))
    result = simulate_plan(plan, options={"hardware": hw.name})
    p = s.pipeline
    compute_only = replace(plan, fabric=ideal_fabric(1, p.num_stages, plan.tensor_parallel),
                           num_replicas=1, memory=None, allreduce_step_bytes=(), ring_size=None)
    ideal = simulate_plan(compute_only)
    fabric_used = plan.fabric
    multiplicity = ({f"{u}->{v}": m for (u, v), m in fabric_used.replica_multiplicity.items()}
                    if fabric_used is not None else {})
    wall_s = float(result.stats.get("wall_s", 0.0)) + float(ideal.stats.get("wall_s", 0.0))
    return EvalOutcome(task.index, _metrics(task, hw, result, ideal, multiplicity, wall_s))


def task_base_dir(path: str | Path | None) -> str | None:
    """The directory relative names in a scenario file are resolved against."""
    return None if path is None else str(Path(path).resolve().parent)
