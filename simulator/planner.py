"""Block-size planning for a cluster: which N, mode, V and placement buy AttnRes's gain cheaply.

`run_plan` generates the candidates (simulator/planner_candidates.py), simulates every one of
them in parallel (simulator/planner_eval.py), and turns the results into a `PlanReport` with a
Pareto front and one recommendation (simulator/planner_report.py):

    report = run_plan(load_scenario("scenarios/paper_48b_block.yaml"), blocks=[1, 2, 4, 8, 9])
    print(report.reason)

Execution engines: "local" runs candidates in a `ProcessPoolExecutor` of `jobs` spawned
processes (one in-process loop when jobs = 1); "dask" sends the same top-level function to a
Dask distributed cluster (`scheduler`: an address such as "tcp://10.0.0.5:8786", or a
`distributed.LocalCluster` / `Client`). Dask is an optional dependency (`pip install
"attnres-pipesim[cluster]"`), imported only when asked for. Results are ordered by candidate,
never by completion, so every engine gives the same report.

The symmetry reduction simulates one representative pipeline replica on links whose capacity
is divided among the replicas sharing them. "auto" uses it from `SYMMETRY_AUTO_MIN_GPUS` GPUs
on; the report then says so (docs/planning.md has its measured error).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Any

from simulator.errors import UserError
from simulator.planner_candidates import Candidate, Skipped, generate_candidates
from simulator.planner_eval import EvalOutcome, EvalTask, evaluate_candidate, task_base_dir
from simulator.planner_report import PlanConstraints, PlanReport, build_rows, recommend
from simulator.quality import DEFAULT_QUALITY, QualityModel
from simulator.scenario import Scenario

__all__ = ["ENGINES", "SYMMETRY_CHOICES", "SYMMETRY_AUTO_MIN_GPUS", "run_tasks", "run_plan"]

ENGINES: tuple[str, ...] = ("local", "dask")
SYMMETRY_CHOICES: tuple[str, ...] = ("auto", "on", "off")
SYMMETRY_AUTO_MIN_GPUS = 512
"""`symmetry="auto"` simulates one representative replica from this many GPUs on."""

Progress = Callable[[int, int, str], None]
"""progress(done, total, label of the candidate just finished)."""


def _run_local(tasks: list[EvalTask], jobs: int, on_done: Callable[[EvalOutcome], None]) -> None:
    if jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            on_done(evaluate_candidate(task))
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context) as pool:
        futures = [pool.submit(evaluate_candidate, task) for task in tasks]
        for future in as_completed(futures):
            on_done(future.result())


def _run_dask(tasks: list[EvalTask], scheduler: Any,
              on_done: Callable[[EvalOutcome], None]) -> None:
    try:
        from dask.distributed import Client, as_completed as dask_completed  # noqa: PLC0415
    except ImportError:
        raise UserError('engine dask: dask.distributed is not installed; pip install '
                        '"dask[distributed]" (or the attnres-pipesim[cluster] extra), or use '
                        '--engine local') from None
    if scheduler is None:
        raise UserError("engine dask: give the scheduler address, e.g. --scheduler "
                        "tcp://10.0.0.5:8786 (start one with `dask scheduler` and "
                        "`dask worker ADDRESS` on each machine)")
    if isinstance(scheduler, Client):
        client, own = scheduler, False
    else:
        client, own = Client(scheduler, set_as_default=False), True
    try:
        futures = client.map(evaluate_candidate, tasks, pure=False)
        for future in dask_completed(futures, loop=client.loop):
            on_done(future.result())
    finally:
        if own:
            client.close()


def run_tasks(tasks: Sequence[EvalTask], *, engine: str = "local", jobs: int | None = None,
              scheduler: Any = None, progress: Callable[[EvalOutcome], None] | None = None
              ) -> list[EvalOutcome]:
    """Evaluate tasks on an engine; outcomes come back in task order."""
    if engine not in ENGINES:
        raise UserError(f"engine = {engine!r}: unknown; use one of {', '.join(ENGINES)}")
    outcomes: dict[int, EvalOutcome] = {}

    def on_done(outcome: EvalOutcome) -> None:
        outcomes[outcome.index] = outcome
        if progress is not None:
            progress(outcome)

    task_list = list(tasks)
    if engine == "local":
        _run_local(task_list, jobs if jobs is not None else (os.cpu_count() or 1), on_done)
    else:
        _run_dask(task_list, scheduler, on_done)
    assert len(outcomes) == len(task_list), "every task reports exactly once"
    return [outcomes[task.index] for task in task_list]


def _use_symmetry(scenario: Scenario, symmetry: str) -> bool:
    if symmetry not in SYMMETRY_CHOICES:
        raise UserError(f"symmetry = {symmetry!r}: use one of {', '.join(SYMMETRY_CHOICES)}")
    par = scenario.parallelism
    if par.data_parallel == 1 or symmetry == "off":
        return False
    if symmetry == "on":
        return True
    gpus = par.data_parallel * scenario.pipeline.num_stages * par.tensor_parallel
    return gpus >= SYMMETRY_AUTO_MIN_GPUS


def run_plan(
    scenario: Scenario, *, blocks: Sequence[int] | str | None = None,
    modes: Sequence[str] | None = None, virtual_stages: Sequence[int] | None = None,
    placements: Sequence[str] | None = None, constraints: PlanConstraints | None = None,
    quality: QualityModel = DEFAULT_QUALITY, engine: str = "local", jobs: int | None = None,
    scheduler: Any = None, symmetry: str = "auto", hardware: Any = None, topology: Any = None,
    scenario_path: str | Path | None = None, progress: Progress | None = None,
    verify: bool = True,
) -> PlanReport:
    """Simulate the baseline and every candidate; recommend one under the constraints.

    Args:
        blocks, modes, virtual_stages, placements: what to sweep (`generate_candidates`).
        constraints: the accepted step-time overhead and memory share (defaults: 5%, 0.9).
        quality: the quality model (default: the paper's 436M block-size ablation).
        engine, jobs, scheduler: where candidates run (module docstring).
        symmetry: "auto", "on" or "off" (module docstring).
        hardware, topology: override the scenario's.
        scenario_path: the scenario file, for relative file names in it.
        progress: called after each candidate.
        verify: after a symmetry-reduced sweep, simulate the reference and the recommendation
            with every replica and report the differences (`PlanReport.verification`).

    Raises:
        UserError: bad arguments, or the reference baseline cannot be simulated.
    """
    constraints = constraints or PlanConstraints()
    candidates, skipped = generate_candidates(scenario, blocks=blocks, modes=modes,
                                              virtual_stages=virtual_stages, placements=placements)
    symmetric = _use_symmetry(scenario, symmetry)
    base_dir = task_base_dir(scenario_path)
    tasks = [EvalTask(c.index, c.scenario, symmetric, hardware, topology, base_dir)
             for c in candidates]
    done = 0

    def report_progress(outcome: EvalOutcome) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(tasks), candidates[outcome.index].label)

    outcomes = run_tasks(tasks, engine=engine, jobs=jobs, scheduler=scheduler,
                         progress=report_progress)
    reference = outcomes[0]
    if reference.metrics is None:
        raise UserError(f"the reference baseline ({candidates[0].label}) cannot be simulated: "
                        f"{reference.error}")
    pairs: list[tuple[Candidate, Any]] = []
    for cand, outcome in zip(candidates, outcomes):
        if outcome.metrics is None:
            skipped.append(Skipped(cand.label, outcome.error or "simulation failed"))
        else:
            pairs.append((cand, outcome.metrics))
    ref_step = reference.metrics.step_time_s
    rows = build_rows(pairs, ref_step, constraints, quality)
    index, reason = recommend(rows, constraints)
    if index is not None:
        rows[index].recommended = True
    notes = [f"expected gain: {quality.source}"]
    verification = None
    if symmetric:
        notes.append("symmetry reduction: one representative pipeline replica on shared links; "
                     "accurate while links are lightly loaded, optimistic where they saturate "
                     "(docs/planning.md gives its measured error)")
        if verify:
            picked = [candidates[0]] + ([rows[index].candidate] if index is not None
                                        and rows[index].candidate.index != 0 else [])
            verification = _verify(picked, rows, tasks, engine, jobs, scheduler, progress)
            notes.append(verification["note"])
    return PlanReport(
        scenario_name=scenario.name, num_sublayers=scenario.model.num_sublayers,
        num_gpus=reference.metrics.num_gpus, reference_label=candidates[0].label,
        reference_step_time_s=ref_step, constraints=constraints, quality_source=quality.source,
        symmetric=symmetric, rows=rows, skipped=skipped, recommended_index=index, reason=reason,
        notes=notes, verification=verification)


def _verify(picked: list[Candidate], rows: list[Any], tasks: list[EvalTask], engine: str,
            jobs: int | None, scheduler: Any, progress: Progress | None) -> dict[str, Any]:
    """Re-simulate the reference and the recommendation with every replica."""
    full_tasks = [replace(tasks[c.index], symmetric=False) for c in picked]
    labels = {c.index: c.label for c in picked}
    done = 0

    def report(outcome: EvalOutcome) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(full_tasks), f"verified {labels[outcome.index]}")

    outcomes = run_tasks(full_tasks, engine=engine, jobs=jobs, scheduler=scheduler,
                         progress=report)
    by_index = {row.candidate.index: row for row in rows}
    entries = []
    for cand, outcome in zip(picked, outcomes):
        assert outcome.metrics is not None, outcome.error
        reduced = by_index[cand.index].metrics.step_time_s
        entries.append({"label": cand.label, "step_time_s": outcome.metrics.step_time_s,
                        "symmetric_step_time_s": reduced,
                        "error_pct": 100 * (reduced / outcome.metrics.step_time_s - 1)})
    out: dict[str, Any] = {"candidates": entries}
    text = "; ".join(f"{e['label']}: {e['error_pct']:+.2f}%" for e in entries)
    if len(entries) == 2:
        full = 100 * (entries[1]["step_time_s"] / entries[0]["step_time_s"] - 1)
        out["recommended_overhead_pct"] = full
        text += f"; the recommendation's overhead with every replica: {full:+.2f}%"
    out["note"] = ("verified with every replica simulated, symmetric step-time error: " + text)
    return out
