"""`pipesim topology`: summarise a cluster topology, report a placement, draw it to PNG.

    pipesim topology list
    pipesim topology show h100-superpod
    pipesim topology show two-rack-h100 --placement spread-racks --dp 2 --pp 4 --tp 8 \\
        --virtual-stages 2 --png out/two-rack.png --json out/two-rack.json
    pipesim topology show my_cluster.yaml --level server --png my_cluster.png

SPEC is a preset name or a .yaml / .json (node-link) / .graphml file. `--placement` is
packed, spread-racks, or a YAML/JSON file mapping "dp_index,pp_index,tp_index" to a GPU name;
giving --dp/--pp/--tp alone means packed. User mistakes raise ValueErrors, which
`pipesim` prints as one line (exit status 2).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import networkx as nx
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from simulator.units import format_bytes, format_seconds
from topologies import (
    Placement, PlacementError, Router, TopologySummary, list_presets, load_topology, place,
    summarize,
)

__all__ = ["topology_group", "summary_table", "boundary_table"]


@click.group("topology")
def topology_group() -> None:
    """Summarise and draw cluster topologies."""


@topology_group.command("list")
def list_cmd() -> None:
    """List the shipped topology presets."""
    table = Table(title="topology presets")
    table.add_column("preset")
    table.add_column("description")
    for name, description in list_presets().items():
        table.add_row(name, escape(description))
    _console().print(table)


def _console() -> Console:
    """A console 120 columns wide when writing to a pipe or file (rich would use 80)."""
    console = Console()
    return console if console.is_terminal else Console(width=120)


def _rate(bytes_per_s: float | None) -> str:
    return "-" if bytes_per_s is None else f"{format_bytes(bytes_per_s)}/s"


def summary_table(summary: TopologySummary) -> Table:
    """The counts, bandwidths, bisection and oversubscription of one topology."""
    table = Table(title=f"topology {escape(summary.name)}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    if summary.description:
        table.add_row("description", escape(summary.description))
    table.add_row("builder", summary.builder or "custom")
    racks = "-" if summary.num_racks is None else str(summary.num_racks)
    table.add_row("GPUs / servers / racks", f"{summary.num_gpus} / {summary.num_servers} / {racks}")
    table.add_row("nodes", ", ".join(f"{k} {v}" for k, v in summary.node_counts.items()))
    for kind, count in summary.link_counts.items():
        low, high = summary.link_bandwidth_range[kind]
        span = _rate(low) if low == high else f"{_rate(low)} .. {_rate(high)}"
        table.add_row(f"{kind} links", f"{count} directed edges, {span} per direction")
    table.add_row("bisection", f"{_rate(summary.bisection_bytes_per_s)} per direction "
                  f"({escape(summary.bisection_method)})")
    over = summary.oversubscription
    table.add_row("leaf oversubscription", "-" if over is None else (
        f"{over[0]:.3g}:1" if over[0] == over[1] else f"{over[0]:.3g}:1 .. {over[1]:.3g}:1"))
    if summary.gpu_transit:
        table.add_row("gpu transit", "routes may pass through GPUs")
    return table


def boundary_table(placement: Placement, router: Router) -> Table:
    """One row per pipeline boundary: what its dp*tp GPU pairs cross."""
    table = Table(title=(f"placement {placement.policy}: dp={placement.dp} pp={placement.pp} "
                         f"tp={placement.tp} V={placement.num_virtual_stages}"))
    for column in ("boundary", "scope", "link kinds", "via", "pairs", "bottleneck",
                   "latency", "hops"):
        table.add_column(column)
    for report in placement.boundary_report(router):
        name = f"{report.src_stage} -> {report.dst_stage}" + (" (wrap)" if report.is_wrap else "")
        table.add_row(name, report.scope, ", ".join(report.link_kinds),
                      ", ".join(report.transit_kinds) or "-", str(report.num_pairs),
                      _rate(report.min_bottleneck_bytes_per_s),
                      format_seconds(report.max_latency_s), str(report.max_hops))
    if not placement.boundaries():
        table.add_row("(pp = 1: no boundaries)", "", "", "", "", "", "", "")
    return table


def _policy(policy: str | None) -> str | dict[str, str]:
    if policy is None:
        return "packed"
    if policy.endswith((".yaml", ".yml", ".json")):
        path = Path(policy)
        if not path.is_file():
            raise PlacementError(f"--placement {policy!r}: no such file. Fix: give packed, "
                                 f"spread-racks, or an existing YAML/JSON map.")
        data = yaml.safe_load(path.read_text())  # JSON is YAML too
        if not isinstance(data, dict):
            raise PlacementError(f"--placement {policy!r}: expected a mapping 'd,p,t': GPU name. "
                                 f"Fix: write one line per rank, e.g. \"0,0,0\": n0/gpu0.")
        return {str(k): str(v) for k, v in data.items()}
    return policy


@topology_group.command("show")
@click.argument("spec")
@click.option("--png", "png_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Draw the topology to this PNG file.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the summary (and placement report) as JSON.")
@click.option("--placement", "policy", default=None,
              help="packed, spread-racks, or a YAML/JSON file mapping 'd,p,t' to GPU names.")
@click.option("--dp", type=click.IntRange(min=1), default=None, help="Data-parallel replicas.")
@click.option("--pp", type=click.IntRange(min=1), default=None, help="Pipeline stages.")
@click.option("--tp", type=click.IntRange(min=1), default=None, help="Tensor-parallel size.")
@click.option("--virtual-stages", type=click.IntRange(min=1), default=1, show_default=True,
              help="Chunks per pipeline rank (V > 1 adds the wrap-around boundary).")
@click.option("--level", type=click.Choice(["auto", "device", "server", "rack"]),
              default="auto", show_default=True, help="Drawing detail.")
def show_cmd(spec: str, png_path: Path | None, json_path: Path | None, policy: str | None,
             dp: int | None, pp: int | None, tp: int | None, virtual_stages: int,
             level: str) -> None:
    """Summarise topology SPEC (preset or file); optionally place ranks and draw it."""
    G = load_topology(spec)
    summary = summarize(G)
    console = _console()
    console.print(summary_table(summary))
    placement, router = None, None
    if policy is not None or dp is not None or pp is not None or tp is not None:
        router = Router(G)
        placement = place(G, dp=dp or 1, pp=pp or 1, tp=tp or 1, policy=_policy(policy),
                          num_virtual_stages=virtual_stages)
        console.print(boundary_table(placement, router))
    if json_path is not None:
        out: dict[str, object] = {"summary": summary.to_dict()}
        if placement is not None and router is not None:
            out["placement"] = placement.to_dict()
            out["boundaries"] = [r.to_dict() for r in placement.boundary_report(router)]
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(out, indent=1) + "\n")
        console.print(f"wrote {json_path}")
    if png_path is not None:
        _draw(G, placement, router, level, png_path)
        console.print(f"wrote {png_path}")


def _draw(G: nx.DiGraph, placement: Placement | None, router: Router | None, level: str,
          png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from simulator.plot_topology import draw_topology

    highlight = (placement.pipeline_links(router)
                 if placement is not None and router is not None else None)
    fig, ax = plt.subplots(figsize=(13, 5.5))
    try:
        draw_topology(ax, G, highlight, level=level)
        png_path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png_path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
