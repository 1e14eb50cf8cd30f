"""`pipesim measure`: run the real pipelined model on local CPU processes and record traces.

    pipesim measure scenarios/fig3_toy.yaml --nproc 4 --out runs/measure/fig3 --steps 5

Starts one process per pipeline stage (gloo on the CPU; NCCL where each local rank has a GPU),
shows progress, and prints the median step time, the bytes crossing each boundary and the peak
bytes saved for backward per rank. The run directory holds manifest.json, rank-<r>.jsonl
(docs/trace-schema.md), rank-<r>.log and summary.json. For several machines use torchrun
directly: `torchrun ... -m real_runner SCENARIO --out DIR`.

real_runner (and so torch) is imported inside the command only, so `pipesim --help` and the
simulator's own commands never load torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from simulator.errors import UserError
from simulator.units import format_bytes, format_seconds

__all__ = ["measure_cmd", "MeasureFailed"]


class MeasureFailed(click.ClickException):
    """A measured run did not complete (a rank failed); exit status 1."""


@click.command("measure")
@click.argument("scenario", type=click.Path(dir_okay=False))
@click.option("--nproc", type=int, default=None,
              help="Processes to start; must equal pipeline.num_stages (default: that).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: runs/measure/<scenario name>).")
@click.option("--steps", type=int, default=None,
              help="Measured steps (default: run.num_steps of the scenario).")
@click.option("--warmup", type=int, default=None,
              help="Warm-up steps left out of the figures (default: run.num_warmup_steps).")
@click.option("--profile", is_flag=True, help="Also write PyTorch profiler traces per rank.")
@click.option("--timeout", "timeout_s", type=float, default=60.0, show_default=True,
              help="Seconds a rank waits for another, and outlives a failed one.")
def measure_cmd(scenario: str, nproc: int | None, out_dir: str | None, steps: int | None,
                warmup: int | None, profile: bool, timeout_s: float) -> None:
    """Run the real pipelined model on local processes and record its traces."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from real_runner.launch import launch_local
    from real_runner.summary import summarize_run
    from simulator.scenario import load_scenario
    from simulator.trace_schema import read_run, write_json_atomic

    for name, value in (("--steps", steps), ("--nproc", nproc)):
        if value is not None and value < 1:
            raise UserError(f"{name} = {value}: must be at least 1")
    if warmup is not None and warmup < 0:
        raise UserError(f"--warmup = {warmup}: must be 0 or more")
    if timeout_s <= 0:
        raise UserError(f"--timeout = {timeout_s}: must be positive, e.g. 60")
    loaded = load_scenario(scenario)
    nproc = nproc or loaded.pipeline.num_stages
    run_dir = Path(out_dir or f"runs/measure/{loaded.name}")
    total = (steps or loaded.run.num_steps) + (loaded.run.num_warmup_steps
                                                if warmup is None else warmup)
    console = Console()
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total} steps"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"{loaded.name} on {nproc} processes", total=total)
        result = launch_local(scenario, nproc, run_dir, num_steps=steps, num_warmup_steps=warmup,
                              profile=profile, timeout_s=timeout_s,
                              on_progress=lambda done: progress.update(task, completed=done))
    if not result.ok:
        assert result.failure is not None
        who = result.failure.rank
        log = f"; see {result.logs[who]}" if who is not None else ""
        raise MeasureFailed(f"the run did not complete: {result.failure.describe()}{log} "
                            f"(traces in {run_dir} are marked incomplete)")
    summary = summarize_run(read_run(run_dir))
    write_json_atomic(run_dir / "summary.json", summary.to_dict())
    _print_summary(console, summary, run_dir)


def _print_summary(console: Any, summary: Any, run_dir: Path) -> None:
    from rich.table import Table

    console.print(f"[bold]{summary.scenario_name}[/]: median step time "
                  f"{format_seconds(summary.median_step_time_s)} over "
                  f"{summary.num_measured_steps} steps ({summary.backend}, "
                  f"{summary.world_size} ranks); loss {summary.loss:.4f}"
                  if summary.loss is not None else f"{summary.scenario_name}")
    table = Table(title="Bytes per boundary per step (payload; header separately)")
    for column in ("boundary", "ranks", "direction", "tensors (micro-batch 0)", "payload",
                   "header", "mean transfer"):
        table.add_column(column)
    for b in summary.boundaries:
        table.add_row(f"{b.src_chunk}->{b.dst_chunk}", f"{b.src_rank}->{b.dst_rank}",
                      b.direction, " ".join(b.tensor_names),
                      format_bytes(b.payload_bytes_per_step), format_bytes(b.header_bytes_per_step),
                      format_seconds(b.mean_transfer_s))
    console.print(table)
    peaks = ", ".join(f"rank {r}: {format_bytes(v)}"
                      for r, v in enumerate(summary.peak_saved_bytes_by_rank))
    console.print(f"Peak bytes saved for backward: {peaks}")
    console.print(f"Total payload per step: {format_bytes(summary.total_bytes_per_step())}. "
                  f"Traces: {run_dir}")
