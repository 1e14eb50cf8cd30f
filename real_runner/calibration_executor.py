"""`pipesim calibrate`'s executor probe: the runner's host work after each compute, measured.

Each probe (simulator/calibrate_executor.py says which) runs the real runner on one local rank,
a one-stage 1F1B of the calibrated model cut to a chunk's sublayer count, with no communication,
so the time from the end of a compute span to the start of the next one is the executor's own
work alone. The rank gets the compute threads a pipeline rank of the calibration gets (the cores
split over `nproc` processes), as in the measured runs. The medians over the measured steps'
gaps after forwards and after backwards are the probe's result (hardware.ExecutorOverhead).

    measured = measure_executor_overheads(plan, Path("runs/calib"))
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from pathlib import Path

import yaml

from real_runner.launch import launch_local
from simulator.calibrate import CalibrationError, CalibrationPlan
from simulator.calibrate_executor import RAW_EXECUTOR_NAME, ExecutorMeasurements, ExecutorProbe
from simulator.hardware import ExecutorOverhead
from simulator.trace_schema import ComputeRecord, read_run

__all__ = ["measure_executor_overheads", "gaps_after_compute"]


def measure_executor_overheads(plan: CalibrationPlan, out_dir: Path, *,
                               extra_env: dict[str, str] | None = None,
                               on_progress: Callable[[str], None] | None = None
                               ) -> ExecutorMeasurements:
    """Run every probe of the plan under out_dir/executor-probes/ and write raw-executor.json.

    Raises:
        CalibrationError: a probe run failed (the message names its log).
    """
    threads = max(1, (os.cpu_count() or 1) // plan.nproc)
    env = {**(extra_env or {}), "OMP_NUM_THREADS": str(threads)}
    results = []
    for index, probe in enumerate(plan.executor_probes):
        if on_progress is not None:
            on_progress(f"executor probe {index + 1}/{len(plan.executor_probes)}: "
                        f"{probe.residual_kind}, {probe.num_sublayers} sublayers")
        results.append(_run_probe(probe, out_dir / "executor-probes", plan.timeout_s, env))
    measured = ExecutorMeasurements(probes=results)
    (out_dir / RAW_EXECUTOR_NAME).write_text(measured.model_dump_json(indent=1))
    return measured


def _run_probe(probe: ExecutorProbe, root: Path, timeout_s: float,
               env: dict[str, str]) -> ExecutorOverhead:
    root.mkdir(parents=True, exist_ok=True)
    name = str(probe.scenario["name"])
    scenario_path = root / f"{name}.yaml"
    scenario_path.write_text(yaml.safe_dump(probe.scenario, sort_keys=False))
    result = launch_local(scenario_path, 1, root / name, timeout_s=timeout_s, extra_env=env)
    if not result.ok:
        log = result.logs.get(0)
        raise CalibrationError(f"executor probe {name} failed ({result.failure}); see {log}")
    run = read_run(result.run_dir)
    measured = {s.step for s in run.measured_steps()}
    after_f, after_b = gaps_after_compute([r for r in run.ranks[0].compute
                                           if r.step in measured])
    if not after_f or not after_b:
        raise CalibrationError(f"executor probe {name}: no gap between computes in "
                               f"{result.run_dir}; it needs at least two micro-batches")
    return ExecutorOverhead(residual_kind=probe.residual_kind, num_sublayers=probe.num_sublayers,
                            after_forward_s=statistics.median(after_f),
                            after_backward_s=statistics.median(after_b),
                            num_samples=len(after_f) + len(after_b))


def gaps_after_compute(records: list[ComputeRecord]) -> tuple[list[float], list[float]]:
    """Seconds from the end of each compute to the start of the next in the same step, split
    by the kind ("F" or "B") of the earlier one."""
    after: dict[str, list[float]] = {"F": [], "B": []}
    ordered = sorted(records, key=lambda r: (r.step, r.start_s))
    for earlier, later in zip(ordered, ordered[1:]):
        if earlier.step == later.step:
            after[earlier.kind].append(later.start_s - earlier.end_s)
    return after["F"], after["B"]
