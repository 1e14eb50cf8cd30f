"""Figures of a simulated step: pipeline Gantt, link utilization, memory over time.

Each function draws on a matplotlib Axes the caller owns and returns the artists it added;
nothing here creates figures or saves files (the CLI does). matplotlib is imported inside the
functions, so importing this module costs nothing.

    fig, ax = plt.subplots(); plot_gantt(ax, result); fig.savefig("gantt.png")
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from simulator.results import SimulationResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["COLORS", "plot_gantt", "plot_link_utilization", "plot_memory"]

COLORS: dict[str, str] = {"F": "#4C72B0", "B": "#DD8452", "pipeline": "#55A868",
                          "allreduce": "#8172B2"}
"""One colour per span kind, shared by every figure."""


def plot_gantt(ax: Axes, result: SimulationResult, *, dp_index: int = 0) -> list[Any]:
    """Compute spans per rank (one row each, rank 0 on top), with each rank's sends drawn as a
    thin bar under its row from posting to delivery. Darker shades mark later virtual stages."""
    from matplotlib.patches import Patch  # noqa: PLC0415

    P = result.num_stages
    artists: list[Any] = []
    # One pass over spans and transfers (a large step has ~10^6 of each), bucketed by row.
    compute: dict[tuple[str, int, int], list[tuple[float, float]]] = {}
    for span in result.spans:
        if span.dp_index == dp_index:
            compute.setdefault((span.kind, span.chunk_index // P, span.pp_index), []).append(
                (span.start_s, span.end_s - span.start_s))
    for kind in ("F", "B"):
        for virtual in range(max(1, _num_virtual(result))):
            for pp in range(P):
                row = compute.get((kind, virtual, pp))
                if row:
                    artists.append(ax.broken_barh(row, (pp - 0.4, 0.6),
                                                  facecolors=COLORS[kind],
                                                  alpha=1.0 - 0.35 * virtual))
    sends: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for t in result.transfers:
        if t.src_dp == dp_index:
            sends.setdefault((t.kind, t.src_pp), []).append((t.posted_s,
                                                             t.delivered_s - t.posted_s))
    for kind in ("pipeline", "allreduce"):
        for pp in range(P):
            row = sends.get((kind, pp))
            if row:
                artists.append(ax.broken_barh(row, (pp + 0.22, 0.14), facecolors=COLORS[kind]))
    ax.set_yticks(range(P), [f"rank {pp}" for pp in range(P)])
    ax.set_ylim(P - 0.5, -0.5)
    ax.set_xlabel("time (s)")
    ax.set_title(f"{result.name}: replica {dp_index}, step {result.step_time_s:.4g} s, "
                 f"bubble {result.bubble_fraction:.1%}")
    handles = [Patch(color=COLORS[k], label=label) for k, label in
               (("F", "forward"), ("B", "backward"), ("pipeline", "send (posted -> delivered)"),
                ("allreduce", "gradient all-reduce step"))]
    artists.append(ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                             fontsize="small"))
    return artists


def _num_virtual(result: SimulationResult) -> int:
    chunks = {s.chunk_index for s in result.spans}
    return (max(chunks) // result.num_stages + 1) if chunks else 1


def plot_link_utilization(ax: Axes, result: SimulationResult, *, max_links: int = 8
                          ) -> list[Any]:
    """Utilization (rate / capacity) over time of the links that carried the most bytes; with
    no recorded timelines, a bar per link of its mean utilization over the step."""
    links = sorted((l for l in result.links if l.total_bytes and
                    l.capacity_bytes_per_s != math.inf),
                   key=lambda l: (-l.total_bytes, l.src, l.dst))[:max_links]
    artists: list[Any] = []
    timelines = bool(links) and all(l.rate_timeline for l in links)
    if timelines:
        for link in links:
            times = [t for t, _ in link.rate_timeline] + [result.step_time_s]
            values = [r / link.capacity_bytes_per_s for _, r in link.rate_timeline]
            values.append(values[-1])
            (line,) = ax.step(times, values, where="post", label=f"{link.src} -> {link.dst}")
            artists.append(line)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("utilization (rate / capacity)")
        ax.set_ylim(0, 1.05)
        artists.append(ax.legend(fontsize="x-small", loc="upper right"))
    elif not links:
        artists.append(ax.text(0.5, 0.5, "no link with a finite capacity carried traffic",
                               ha="center", va="center", transform=ax.transAxes))
    else:
        names = [f"{l.src} -> {l.dst}" for l in links]
        artists.append(ax.barh(names, [l.utilization for l in links], color=COLORS["pipeline"]))
        ax.invert_yaxis()
        ax.set_xlabel("mean utilization over the step")
    ax.set_title(f"{result.name}: busiest links")
    return artists


def plot_memory(ax: Axes, result: SimulationResult, *, dp_index: int = 0) -> list[Any]:
    """Memory per GPU of each rank over the step (GB), model states included."""
    artists: list[Any] = []
    for rank in result.ranks:
        if rank.dp_index != dp_index or not rank.memory_timeline:
            continue
        times = [t for t, _ in rank.memory_timeline] + [result.step_time_s]
        values = [b / 1e9 for _, b in rank.memory_timeline]
        values.append(values[-1])
        label = f"rank {rank.pp_index} (peak {rank.peak_memory_bytes / 1e9:.2f} GB)"
        (line,) = ax.step(times, values, where="post", label=label)
        artists.append(line)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("memory per GPU (GB)")
    ax.set_title(f"{result.name}: memory, replica {dp_index}")
    if artists:
        artists.append(ax.legend(fontsize="x-small", loc="upper right"))
    return artists
