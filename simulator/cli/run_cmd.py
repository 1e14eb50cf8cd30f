"""`pipesim run` and `pipesim compare`: simulate training steps and report them.

    pipesim run scenarios/paper_48b_block.yaml --out runs/paper_48b_block
    pipesim run scenarios/fig3_toy.yaml --hardware h100 --topology ideal
    pipesim compare standard.yaml block_naive.yaml block_cached.yaml --out runs/compare

`run` prints a summary and writes summary.json, ranks.csv, links.csv, spans.csv,
transfers.csv, memory.csv, trace.json (Chrome/Perfetto), sim_run/ (the shared JSONL trace
format) and gantt.png, links.png, memory.png. `compare` prints the scenarios side by side and
writes compare.json, compare.csv and compare.png.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from simulator.units import format_bytes, format_seconds

__all__ = ["run_cmd", "compare_cmd"]

_PROGRESS_MIN_ACTIONS = 20_000


def _common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--hardware", default=None,
                     help="Hardware preset or file, overriding the scenario's `hardware:`."),
        click.option("--topology", default=None,
                     help="Topology preset or file, or 'ideal', overriding `topology:`."),
        click.option("--aggregation", type=click.Choice(["two-phase", "naive"]),
                     default="two-phase", show_default=True,
                     help="How AttnRes aggregation reads its sources (paper Table 1)."),
        click.option("--symmetric", is_flag=True,
                     help="Simulate one replica on links shared by the others (faster, approx.)."),
        click.option("--no-allreduce", is_flag=True, help="Leave out the gradient all-reduce."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _simulate(path: Path, console: Console, *, hardware: str | None, topology: str | None,
              aggregation: str, symmetric: bool, no_allreduce: bool,
              record_link_timeline: bool = True) -> tuple[Any, Any]:
    from rich.progress import Progress  # noqa: PLC0415

    from simulator.plan import simulate  # noqa: PLC0415
    from simulator.scenario import load_scenario  # noqa: PLC0415

    scenario = load_scenario(path)
    p, d = scenario.pipeline, scenario.parallelism.data_parallel
    actions = 2 * p.num_stages * p.num_virtual_stages * p.num_microbatches * (1 if symmetric else d)
    kwargs = dict(hardware=hardware, topology=topology, base_dir=path.parent,
                  aggregation=aggregation, allreduce=not no_allreduce, symmetric=symmetric,
                  record_link_timeline=record_link_timeline)
    if actions < _PROGRESS_MIN_ACTIONS:
        return scenario, simulate(scenario, **kwargs)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"simulating {scenario.name}", total=actions)
        result = simulate(scenario, progress=lambda done, total: progress.update(
            task, completed=done, total=total), **kwargs)
    return scenario, result


@click.command("run")
@click.argument("scenario_path", metavar="SCENARIO", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output directory (default: runs/<scenario name>).")
@_common_options
@click.option("--no-figures", is_flag=True, help="Skip the PNG figures.")
def run_cmd(scenario_path: Path, out_dir: Path | None, hardware: str | None,
            topology: str | None, aggregation: str, symmetric: bool, no_allreduce: bool,
            no_figures: bool) -> None:
    """Simulate one training step event by event and write results."""
    from simulator.chrome_trace import write_chrome_trace  # noqa: PLC0415
    from simulator.sim_trace import write_simulated_run  # noqa: PLC0415

    console = Console()
    scenario, result = _simulate(scenario_path, console, hardware=hardware, topology=topology,
                                 aggregation=aggregation, symmetric=symmetric,
                                 no_allreduce=no_allreduce)
    out = out_dir if out_dir is not None else Path("runs") / scenario.name
    written = result.write(out)
    (out / "result.json").write_text(json.dumps(result.to_json(spans=False)))
    written += [out / "result.json", write_chrome_trace(result, out / "trace.json"),
                write_simulated_run(result, scenario, out / "sim_run",
                                    device=result.options.get("hardware", ""))]
    if not no_figures:
        written += _write_figures(result, out)
    _print_summary(console, result)
    console.print(f"wrote {len(written)} outputs to {out}/: "
                  + ", ".join(p.name for p in written))


def _write_figures(result: Any, out: Path) -> list[Path]:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from simulator.plots import plot_gantt, plot_link_utilization, plot_memory  # noqa: PLC0415

    paths = []
    for name, plot, size in (("gantt.png", plot_gantt, (14, 1.0 + 0.5 * result.num_stages)),
                             ("links.png", plot_link_utilization, (12, 5)),
                             ("memory.png", plot_memory, (12, 5))):
        fig, ax = plt.subplots(figsize=size)
        plot(ax, result)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        paths.append(out / name)
    return paths


def _print_summary(console: Console, result: Any) -> None:
    s = result.summary()
    table = Table(title=f"{result.name}: one training step", show_header=False)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    rows = [("step time", format_seconds(s["step_time_s"])),
            ("pipeline time (to the last backward)", format_seconds(s["pipeline_time_s"])),
            ("bubble fraction", f"{s['bubble_fraction']:.1%}"),
            ("pipeline bytes on links", format_bytes(s["pipeline_bytes"])),
            ("all-reduce bytes on links", format_bytes(s["allreduce_bytes"])),
            ("busiest link (mean utilization)",
             "none: every link is unlimited" if s["busiest_link"] is None
             else f"{s['busiest_link']} ({s['busiest_link_utilization']:.1%})"),
            ("peak memory per GPU", _memory_cell(s["max_peak_memory_bytes"], result.options)),
            ("simulated", f"{result.stats['num_events']:,} events in "
                          f"{result.stats['wall_s']:.2f} s wall")]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    ranks = Table(title="replica 0, per rank")
    for col in ("rank", "busy", "comm wait", "idle", "all-reduce", "peak memory"):
        ranks.add_column(col, justify="right")
    for r in result.ranks:
        if r.dp_index == 0:
            ranks.add_row(str(r.pp_index), format_seconds(r.busy_s),
                          format_seconds(r.comm_wait_s), format_seconds(r.idle_s),
                          format_seconds(r.allreduce_s), format_bytes(r.peak_memory_bytes))
    console.print(ranks)


def _memory_cell(peak_bytes: int, options: dict[str, Any]) -> str:
    capacity = options.get("hbm_capacity_bytes")
    if capacity and peak_bytes > capacity:
        return (f"[red]{format_bytes(peak_bytes)}: exceeds the {options.get('hardware')} "
                f"HBM capacity of {format_bytes(capacity)}[/red]")
    return format_bytes(peak_bytes)


_COMPARE_ROWS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("step_time_s", "step time", format_seconds),
    ("pipeline_time_s", "pipeline time", format_seconds),
    ("bubble_fraction", "bubble fraction", lambda v: f"{v:.1%}"),
    ("pipeline_bytes", "pipeline bytes", format_bytes),
    ("allreduce_bytes", "all-reduce bytes", format_bytes),
    ("busiest_link_utilization", "busiest link utilization", lambda v: f"{v:.1%}"),
    ("max_peak_memory_bytes", "peak memory per GPU", format_bytes),
    ("mean_comm_wait_s", "mean comm wait per rank", format_seconds),
)


@click.command("compare")
@click.argument("scenario_paths", metavar="SCENARIO...", nargs=-1, required=True,
                type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Write compare.json, compare.csv and compare.png here.")
@_common_options
def compare_cmd(scenario_paths: tuple[Path, ...], out_dir: Path | None, hardware: str | None,
                topology: str | None, aggregation: str, symmetric: bool,
                no_allreduce: bool) -> None:
    """Simulate several scenarios and put them side by side."""
    console = Console()
    summaries = []
    for path in scenario_paths:
        _, result = _simulate(path, console, hardware=hardware, topology=topology,
                              aggregation=aggregation, symmetric=symmetric,
                              no_allreduce=no_allreduce, record_link_timeline=False)
        summaries.append(result.summary())
    table = Table(title="pipesim compare (ratios against the first scenario)")
    table.add_column("quantity")
    for summary in summaries:
        table.add_column(summary["name"], justify="right")
    for key, label, fmt in _COMPARE_ROWS:
        base = summaries[0][key]
        cells = [fmt(s[key]) + (f" ({s[key] / base:.2f}x)" if i and base else "")
                 for i, s in enumerate(summaries)]
        table.add_row(label, *cells)
    console.print(table)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "compare.json").write_text(json.dumps(summaries, indent=2))
        with (out_dir / "compare.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(summaries[0]))
            writer.writeheader()
            writer.writerows(summaries)
        _compare_figure(summaries, out_dir / "compare.png")
        console.print(f"wrote compare.json, compare.csv, compare.png to {out_dir}/")


def _compare_figure(summaries: list[dict[str, Any]], path: Path) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = [s["name"] for s in summaries]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, label, scale in ((axes[0], "step_time_s", "step time (s)", 1.0),
                                  (axes[1], "pipeline_bytes", "pipeline bytes (GB)", 1e-9),
                                  (axes[2], "max_peak_memory_bytes", "peak memory (GB)", 1e-9)):
        ax.bar(names, [s[key] * scale for s in summaries], color="#4C72B0")
        ax.set_title(label)
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
