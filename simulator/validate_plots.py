"""Figures of a validation: simulated and measured Gantt charts, bytes per boundary.

Plot functions take a matplotlib Axes plus data and return the artists they drew; the CLI
(simulator/cli/validate_cmd.py) makes the figures and saves them. matplotlib is imported only
inside the functions, so importing this module stays cheap.

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True)
    plot_gantt(top, simulated_bars(report.simulated), num_ranks=2, title="simulated")
    plot_gantt(bottom, report.measured_gantt, num_ranks=2, title="measured")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from simulator.results import SimulationResult
from simulator.validate_compare import TransitionBytes

__all__ = ["GanttBar", "simulated_bars", "plot_gantt", "plot_boundary_bytes"]

GanttBar = tuple[int, str, int, int, float, float]
"""(rank, "F" or "B", chunk, micro-batch, start_s, end_s)."""

_FORWARD_COLORS = ("#9ecae1", "#a1d99b", "#fdae6b", "#bcbddc")
_BACKWARD_COLORS = ("#3182bd", "#31a354", "#e6550d", "#756bb1")


def simulated_bars(result: SimulationResult) -> list[GanttBar]:
    """The simulated compute spans of replica 0 as Gantt bars."""
    return [(s.pp_index, s.kind, s.chunk_index, s.microbatch_index, s.start_s, s.end_s)
            for s in result.spans if s.dp_index == 0]


def plot_gantt(ax: Any, bars: Sequence[GanttBar], *, num_ranks: int, title: str) -> list[Any]:
    """One row per rank; forwards light, backwards dark, one hue per chunk; micro-batch labels.

    Times are shown in milliseconds from the step's start.
    """
    artists = []
    span_ms = max((end for *_, end in bars), default=0.0) * 1e3
    for rank, kind, chunk, microbatch, start_s, end_s in bars:
        colors = _FORWARD_COLORS if kind == "F" else _BACKWARD_COLORS
        width_ms = (end_s - start_s) * 1e3
        artists.append(ax.barh(rank, width_ms, left=start_s * 1e3, height=0.8,
                               color=colors[chunk % len(colors)], edgecolor="white",
                               linewidth=0.5))
        if span_ms and width_ms > span_ms / 60:
            artists.append(ax.text(start_s * 1e3 + width_ms / 2, rank, str(microbatch),
                                   ha="center", va="center", fontsize=6))
    ax.set_yticks(range(num_ranks))
    ax.set_yticklabels([f"rank {r}" for r in range(num_ranks)])
    ax.invert_yaxis()
    ax.set_xlabel("time from step start (ms)")
    ax.set_title(title, fontsize=9)
    return artists


def plot_boundary_bytes(ax: Any, transitions: Sequence[TransitionBytes]) -> list[Any]:
    """Bytes per message on each transition: simulated and measured side by side (kB)."""
    labels = [f"{'F' if t.direction == 'forward' else 'B'} {t.src_chunk}->"
              f"{t.src_chunk + 1 if t.direction == 'forward' else t.src_chunk - 1}"
              for t in transitions]
    xs = list(range(len(transitions)))
    simulated = [t.simulated_bytes / 1e3 for t in transitions]
    measured = [max(t.measured_bytes, default=0) / 1e3 for t in transitions]
    artists = [ax.bar([x - 0.2 for x in xs], simulated, width=0.4, label="simulated",
                      color="#3182bd"),
               ax.bar([x + 0.2 for x in xs], measured, width=0.4, label="measured (payload)",
                      color="#e6550d")]
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("kB per message")
    ax.set_title("bytes per boundary transition", fontsize=9)
    artists.append(ax.legend(fontsize=7))
    return artists
