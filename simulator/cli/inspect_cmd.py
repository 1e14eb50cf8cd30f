"""`pipesim inspect SCENARIO`: the schedule, the boundary manifest and the memory model.

    pipesim inspect scenarios/fig3_toy.yaml
    pipesim inspect scenarios/paper_48b_block.yaml --json > inspect.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from simulator.units import format_bytes

__all__ = ["inspect_cmd"]


@click.command("inspect")
@click.argument("scenario_path", metavar="SCENARIO", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead.")
@click.option("--grid/--no-grid", default=None,
              help="Show the unit-time schedule grid (default: when it is small).")
def inspect_cmd(scenario_path: Path, as_json: bool, grid: bool | None) -> None:
    """Schedule summary, per-transition tensors and bytes, per-rank memory and totals."""
    from simulator.inspect_report import inspect_scenario
    from simulator.scenario import load_scenario

    scenario = load_scenario(scenario_path)
    report = inspect_scenario(scenario)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    console = Console()
    _print_header(console, report)
    if grid or (grid is None and scenario.pipeline.num_stages * scenario.pipeline.num_microbatches
                * scenario.pipeline.num_virtual_stages <= 128):
        from simulator.schedule import build_schedule, format_grid

        p = scenario.pipeline
        console.print(format_grid(build_schedule(p.schedule, p.num_stages, p.num_virtual_stages,
                                                 p.num_microbatches)), markup=False, highlight=False)
    console.print(_transition_table(report))
    console.print(_totals_table(report))
    console.print(_memory_table(report))


def _print_header(console: Console, report: dict[str, Any]) -> None:
    p, r, m = report["pipeline"], report["residual"], report["model"]
    residual = r["kind"] if r["kind"] == "standard" else (
        f"{r['kind']} AttnRes, N = {r['num_blocks']} blocks of S = {r['block_size']} sublayers")
    console.print(f"[bold]{report['scenario']}[/bold]  {report['description']}")
    console.print(f"model: {m['num_layers']} layers = {m['num_sublayers']} sublayers, "
                  f"d = {m['hidden_size']}, {m['dtype']};  residual: {residual}")
    console.print(f"pipeline: {p['schedule']}, P = {p['num_stages']}, V = {p['num_virtual_stages']}, "
                  f"M = {p['num_microbatches']}, C = {p['num_chunks']} chunks; boundary mode: "
                  f"{p['comm_mode']};  one plane U = {format_bytes(report['plane_bytes'])}")
    warm = ", ".join(str(x["warmup_forwards"]) for x in report["schedule"]["ranks"])
    console.print(f"schedule: forwards before the first backward per rank: {warm}")


def _transition_table(report: dict[str, Any]) -> Table:
    from simulator.inspect_report import compact_names

    modes = list(report["transitions"][0]["bytes"]) if report["transitions"] else []
    table = Table(title="Forward transitions of one micro-batch (backward: the same tensors' "
                        "gradients, reversed)")
    for col in ("hop", "chunks", "ranks", *modes):
        table.add_column(col, justify="left" if col in ("hop", "chunks", "ranks") else "right")
    for i, hop in enumerate(t for t in report["transitions"] if t["direction"] == "forward"):
        cells = [f"{compact_names([x['name'] for x in hop['tensors'][mode]])}\n"
                 f"{format_bytes(hop['bytes'][mode])}" for mode in modes]
        table.add_row(str(i), f"{hop['src_chunk']}->{hop['dst_chunk']}",
                      f"{hop['src_rank']}->{hop['dst_rank']}", *cells)
    return table


def _totals_table(report: dict[str, Any]) -> Table:
    table = Table(title="Boundary traffic totals")
    for col in ("mode", "fwd / micro-batch", "fwd+bwd / micro-batch", "per step", "peak hop",
                "fwd blocks per hop"):
        table.add_column(col, justify="right" if col != "mode" else "left")
    for mode, t in report["totals"]["modes"].items():
        counts = t["forward_blocks_per_transition"]
        table.add_row(mode, format_bytes(t["forward_bytes_per_microbatch"]),
                      format_bytes(t["bytes_per_microbatch"]), format_bytes(t["bytes_per_step"]),
                      format_bytes(t["peak_transition_bytes"]),
                      "-" if counts is None else str(counts))
    paper = report["totals"].get("paper")
    if paper:
        table.caption = (
            f"paper Eq. 7 naive {paper['eq7_naive_planes']:.2f} planes "
            f"({format_bytes(paper['eq7_naive_bytes'])}), Eq. 8 cached "
            f"{paper['eq8_cached_planes']:.2f} planes ({format_bytes(paper['eq8_cached_bytes'])}); "
            f"exact block planes: " + ", ".join(
                f"{m} {n}" for m, n in paper["exact_forward_blocks"].items()))
    return table


def _memory_table(report: dict[str, Any]) -> Table:
    table = Table(title="Memory per GPU of each pipeline rank")
    for col in ("rank", "chunks", "params", "weights", "grads", "optimizer", "in flight",
                "activations", "peak"):
        table.add_column(col, justify="right")
    chunks = {r["rank"]: r["chunks"] for r in report["schedule"]["ranks"]}
    for r in report["memory"]:
        table.add_row(str(r["rank"]), ",".join(map(str, chunks[r["rank"]])),
                      f"{r['parameter_count'] / 1e6:.1f}M", format_bytes(r["weights_bytes"]),
                      format_bytes(r["gradients_bytes"]), format_bytes(r["optimizer_bytes"]),
                      str(r["peak_in_flight"]),
                      format_bytes(r["peak_activation_bytes"] + r["recompute_working_bytes"]),
                      format_bytes(r["peak_bytes"]))
    return table
