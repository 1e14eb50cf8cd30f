"""One calibration from several runs of the same plan: every rank's raw numbers averaged.

On a host whose speed drifts (a shared VM: the validation host's compute moved by 10-30% within a
minute, docs/accuracy-report.md), one calibration samples one moment. Calibrating before and
after a run and averaging the two brackets the state the run saw, without using anything the run
measured. `pipesim calibrate --average DIR --average DIR --out DIR` does this; the raw per-rank
measurements (raw-rank-<r>.json, and the executor probes' raw-executor.json) are averaged number
by number (a float is the mean, a count that differs the rounded mean; lists and records must
have the same shape) and the profile is built from them as from a measurement.

    calibration = average_calibrations(["runs/calib-before", "runs/calib-after"], "runs/calib")
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulator.calibrate import CalibrationError, CalibrationPlan, RankMeasurements
from simulator.calibrate_executor import RAW_EXECUTOR_NAME, ExecutorMeasurements
from simulator.calibrate_files import Calibration, build_calibration, write_calibration

__all__ = ["average_calibrations", "average_measurements", "read_raw", "read_raw_executor"]


def read_raw(directory: str | Path) -> tuple[CalibrationPlan, list[RankMeasurements]]:
    """The plan and every rank's raw measurements that `pipesim calibrate` left in a directory.

    Raises:
        CalibrationError: the directory lacks plan.json or a rank's raw-rank-<r>.json.
    """
    path = Path(directory)
    plan_path = path / "plan.json"
    if not plan_path.is_file():
        raise CalibrationError(f"{plan_path}: not found; --average takes directories written by "
                               "`pipesim calibrate` (they keep plan.json and raw-rank-<r>.json)")
    plan = CalibrationPlan.model_validate_json(plan_path.read_text())
    ranks = []
    for rank in range(plan.nproc):
        raw = path / f"raw-rank-{rank}.json"
        if not raw.is_file():
            raise CalibrationError(f"{raw}: not found; the calibration in {path} did not finish")
        ranks.append(RankMeasurements.model_validate_json(raw.read_text()))
    return plan, ranks


def read_raw_executor(directory: str | Path) -> ExecutorMeasurements:
    """The executor probes' results in a calibration directory (none in one written before
    the probe existed)."""
    path = Path(directory) / RAW_EXECUTOR_NAME
    if not path.is_file():
        return ExecutorMeasurements()
    return ExecutorMeasurements.model_validate_json(path.read_text())


def average_measurements(runs: Sequence[RankMeasurements]) -> RankMeasurements:
    """One rank's measurements from several calibrations, averaged field by field."""
    dumps = [run.model_dump(mode="python") for run in runs]
    return RankMeasurements.model_validate(_average(dumps, f"rank {runs[0].rank}"))


def average_calibrations(directories: Sequence[str | Path],
                         out_dir: str | Path | None = None) -> Calibration:
    """The calibration of several calibration directories of one plan, averaged; with
    `out_dir`, written there as a calibration directory (plan and averaged raw files too, so
    that it can be averaged again).

    Raises:
        CalibrationError: fewer than two directories, plans that differ (other shapes, sizes or
            process counts), or measurements of different shapes.
    """
    if len(directories) < 2:
        raise CalibrationError(f"--average: give at least two calibration directories, got "
                               f"{len(directories)}")
    read = [read_raw(d) for d in directories]
    plan = read[0][0]
    for directory, (other, _) in zip(directories[1:], read[1:]):
        if other != plan:
            raise CalibrationError(f"--average: {directory} was calibrated with another plan "
                                   f"than {directories[0]} (shapes, sizes or processes differ); "
                                   "average only calibrations of the same scenarios and options")
    ranks = [average_measurements([ranks[r] for _, ranks in read]) for r in range(plan.nproc)]
    executor = ExecutorMeasurements.model_validate(_average(
        [read_raw_executor(d).model_dump(mode="python") for d in directories], "executor probes"))
    calibration = build_calibration(plan, ranks, executor=executor.probes,
                                    created_by=f"pipesim calibrate --average of "
                                               f"{len(directories)} calibrations")
    calibration.record["averaged_from"] = [str(Path(d)) for d in directories]
    if out_dir is not None:
        out = Path(out_dir)
        write_calibration(calibration, out)
        (out / "plan.json").write_text(plan.model_dump_json(indent=1))
        for rank in ranks:
            (out / f"raw-rank-{rank.rank}.json").write_text(rank.model_dump_json(indent=1))
        (out / RAW_EXECUTOR_NAME).write_text(executor.model_dump_json(indent=1))
    return calibration


def _average(values: list[Any], where: str) -> Any:
    """The field-by-field average of equally shaped values (see the module docstring)."""
    first = values[0]
    if isinstance(first, bool) or first is None or isinstance(first, str):
        return first
    if isinstance(first, float):
        return statistics.fmean(values)
    if isinstance(first, int):
        return first if all(v == first for v in values) else round(statistics.fmean(values))
    if isinstance(first, list):
        if any(len(v) != len(first) for v in values):
            raise CalibrationError(f"--average: {where} has {[len(v) for v in values]} entries "
                                   "in the calibrations; they measured different things")
        return [_average(list(items), f"{where}[{i}]") for i, items in enumerate(zip(*values))]
    if isinstance(first, dict):
        if any(v.keys() != first.keys() for v in values):
            raise CalibrationError(f"--average: {where} has different fields in the "
                                   "calibrations")
        return {key: _average([v[key] for v in values], f"{where}.{key}") for key in first}
    raise CalibrationError(f"--average: {where}: cannot average a {type(first).__name__}")
