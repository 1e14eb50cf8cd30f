"""`pipesim plan SCENARIO`: sweep block counts, modes, V and placements; recommend one.

    pipesim plan scenarios/paper_48b_block.yaml
    pipesim plan scenarios/paper_48b_block.yaml --blocks all --modes cached,cached-own \\
        --virtual-stages 1,2 --max-step-overhead 3 --max-memory-fraction 0.85 --out plan48b
    pipesim plan big.yaml --engine dask --scheduler tcp://10.0.0.5:8786

Prints a table (one row per candidate), the recommendation with its reason, and writes
plan.json, plan.csv, pareto.png and overhead_vs_n.png into --out. docs/planning.md explains
every column and the recommendation rule.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from simulator.units import format_bytes, format_seconds

__all__ = ["plan_cmd", "plan_table", "parse_int_list", "parse_name_list"]


def parse_int_list(value: str | None, option: str) -> list[int] | None:
    """"1,2,4" -> [1, 2, 4]; None stays None."""
    if value is None:
        return None
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated integers, e.g. 1,2,4,8",
                                 param_hint=option) from None
    if not numbers:
        raise click.BadParameter(f"{value!r}: give at least one integer", param_hint=option)
    return numbers


def parse_name_list(value: str | None) -> list[str] | None:
    """"naive,cached" -> ["naive", "cached"]; None stays None."""
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()] or None


def _console(stderr: bool = False) -> Console:
    """180 columns when writing to a pipe or file (rich would use 80)."""
    console = Console(stderr=stderr)
    return console if console.is_terminal else Console(stderr=stderr, width=180)


def plan_table(report: Any) -> Table:
    """One row per simulated candidate: time, overhead, memory, busiest link, gain, flags."""
    table = Table(title=f"plan for {escape(report.scenario_name)}: {report.num_gpus} GPUs, "
                        f"L = {report.num_sublayers} sublayers; overhead against "
                        f"{escape(report.reference_label)}",
                  caption="* recommended   + on the Pareto front (overhead vs gain, fitting "
                          "memory)")
    for col in ("", "candidate", "step", "overhead", "vs layout", "exposed comm",
                "peak mem/GPU", "fits",
                "busiest pipeline link", "bytes", "util", "gain"):
        table.add_column(col, justify="left" if col in ("", "candidate", "busiest pipeline link")
                         else "right", no_wrap=col in ("candidate", "busiest pipeline link"))
    for row in report.rows:
        m = row.metrics
        flag = ("*" if row.recommended else "") + ("+" if row.on_pareto_front else "")
        table.add_row(
            flag, escape(row.candidate.label), format_seconds(m.step_time_s),
            f"{row.overhead_pct:+.2f}%",
            "-" if row.layout_overhead_pct is None else f"{row.layout_overhead_pct:+.2f}%",
            format_seconds(m.exposed_comm_s),
            f"{format_bytes(m.max_peak_memory_bytes)} ({row.memory_fraction:.0%})",
            "yes" if row.fits_memory else "NO", escape(m.busiest_link or "-"),
            format_bytes(m.busiest_link_pipeline_bytes), f"{m.busiest_link_utilization:.1%}",
            f"{row.gain_fraction:.0%}")
    return table


def _print_report(console: Console, report: Any) -> None:
    console.print(plan_table(report))
    for note in report.notes:
        console.print(f"note: {escape(note)}")
    rec = report.recommended
    head = "recommendation: " + ("none" if rec is None else f"[bold]{escape(rec.candidate.label)}"
                                 "[/bold]")
    console.print(head)
    console.print(f"reason: {escape(report.reason)}")
    by_reason: dict[str, list[str]] = {}
    for skipped in report.skipped:
        by_reason.setdefault(skipped.reason, []).append(skipped.label)
    for reason, labels in by_reason.items():
        console.print(f"skipped {len(labels)}: {escape('; '.join(labels))}: {escape(reason)}")


def _save_plots(report: Any, out: Path) -> list[Path]:
    from matplotlib.figure import Figure  # noqa: PLC0415 (plots only when asked)

    from simulator.plot_plan import plot_overhead_vs_blocks, plot_pareto  # noqa: PLC0415

    written = []
    for name, plot in (("pareto.png", plot_pareto), ("overhead_vs_n.png", plot_overhead_vs_blocks)):
        fig = Figure(figsize=(8, 5.5), layout="constrained")
        plot(fig.add_subplot(), report)
        path = out / name
        fig.savefig(path, dpi=120)
        written.append(path)
    return written


def _progress_printer(console: Console, enabled: bool) -> tuple[Any, Callable[..., None] | None]:
    if not enabled:
        return None, None
    from rich.progress import (  # noqa: PLC0415
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
    )

    bar = Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("{task.description}"), console=console,
                   transient=True)
    task_id = bar.add_task("", total=None)

    def update(done: int, total: int, label: str) -> None:
        bar.update(task_id, completed=done, total=total, description=escape(label))

    return bar, update


@click.command("plan")
@click.argument("scenario_path", metavar="SCENARIO", type=click.Path(path_type=Path))
@click.option("--blocks", default=None, metavar="LIST|all",
              help="Block counts N, e.g. 1,2,4,8, or 'all' valid N (default: powers of two, "
                   "the scenario's N and L).")
@click.option("--modes", default=None, metavar="LIST",
              help="Boundary modes: naive,cached,cached-own (default: all three).")
@click.option("--virtual-stages", default=None, metavar="LIST",
              help="Virtual stages V per rank, e.g. 1,2 (default: the scenario's).")
@click.option("--placements", default=None, metavar="LIST",
              help="Placement policies, e.g. packed,spread-racks (default: the scenario's).")
@click.option("--max-step-overhead", type=float, default=5.0, show_default=True, metavar="PCT",
              help="Accepted step-time overhead against the baseline, in percent.")
@click.option("--max-memory-fraction", type=float, default=0.9, show_default=True, metavar="F",
              help="Accepted share of each GPU's memory.")
@click.option("--quality", "quality_path", type=click.Path(path_type=Path), default=None,
              help="Quality model YAML (default: the paper's 436M block-size ablation).")
@click.option("--hardware", default=None, help="Override the scenario's hardware.")
@click.option("--topology", default=None, help="Override the scenario's topology.")
@click.option("--symmetry", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True, help="Simulate one representative pipeline replica "
                                      "(auto: from 512 GPUs on).")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="After a symmetry-reduced sweep, re-simulate the baseline and the "
                   "recommendation with every replica.")
@click.option("--engine", type=click.Choice(["local", "dask"]), default="local",
              show_default=True, help="Run candidates in local processes or on Dask.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Dask scheduler address (with --engine dask).")
@click.option("--jobs", type=click.IntRange(min=1), default=None,
              help="Local worker processes (default: CPU count).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output directory (default: plan-<scenario name>).")
@click.option("--plots/--no-plots", default=True, show_default=True,
              help="Write pareto.png and overhead_vs_n.png.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print plan.json to stdout, no table.")
def plan_cmd(scenario_path: Path, blocks: str | None, modes: str | None,
             virtual_stages: str | None, placements: str | None, max_step_overhead: float,
             max_memory_fraction: float, quality_path: Path | None, hardware: str | None,
             topology: str | None, symmetry: str, verify: bool, engine: str, scheduler: str | None,
             jobs: int | None, out_dir: Path | None, plots: bool, progress: bool,
             as_json: bool) -> None:
    """Simulate the standard baseline and every candidate; recommend one under constraints."""
    from simulator.planner import run_plan  # noqa: PLC0415
    from simulator.planner_report import PlanConstraints  # noqa: PLC0415
    from simulator.quality import DEFAULT_QUALITY, load_quality_model  # noqa: PLC0415
    from simulator.scenario import load_scenario  # noqa: PLC0415

    scenario = load_scenario(scenario_path)
    block_arg: list[int] | str | None = (
        "all" if blocks is not None and blocks.strip() == "all"
        else parse_int_list(blocks, "--blocks"))
    constraints = PlanConstraints(max_step_overhead, max_memory_fraction)
    quality = load_quality_model(quality_path) if quality_path else DEFAULT_QUALITY
    console = _console(stderr=as_json)
    bar, update = _progress_printer(_console(stderr=True), progress)
    if bar is not None:
        bar.start()
    try:
        report = run_plan(
            scenario, blocks=block_arg, modes=parse_name_list(modes),
            virtual_stages=parse_int_list(virtual_stages, "--virtual-stages"),
            placements=parse_name_list(placements), constraints=constraints, quality=quality,
            engine=engine, jobs=jobs if jobs is not None else (os.cpu_count() or 1),
            scheduler=scheduler, symmetry=symmetry, hardware=hardware, topology=topology,
            scenario_path=scenario_path, progress=update, verify=verify)
    finally:
        if bar is not None:
            bar.stop()
    out = out_dir if out_dir is not None else Path(f"plan-{scenario.name}")
    written = report.write(out)
    if plots:
        written += _save_plots(report, out)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return
    _print_report(console, report)
    console.print("wrote " + ", ".join(str(p) for p in written))
