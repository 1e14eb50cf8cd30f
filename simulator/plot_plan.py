"""Plots of a block-size plan: the Pareto front, and step-time overhead against N per mode.

Each function draws on a matplotlib `Axes` it is given and returns the artists it made; only
the CLI saves figures. matplotlib is never imported here at module level (the simulator must
import without it); these functions only call methods of the Axes they receive.

    fig = Figure(); plot_pareto(fig.add_subplot(), report); fig.savefig("pareto.png")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulator.planner_report import PlanReport, PlanRow

__all__ = ["plot_pareto", "plot_overhead_vs_blocks"]

_MODE_STYLE = {"standard": ("s", "tab:gray"), "naive": ("o", "tab:red"),
               "cached": ("^", "tab:blue"), "cached-own": ("v", "tab:green")}


def _mode(row: PlanRow) -> str:
    return row.candidate.comm_mode or "standard"


def plot_pareto(ax: Any, report: PlanReport) -> list[Any]:
    """Expected gain (% of Full AttnRes's) against step-time overhead (%), one point per
    candidate; the Pareto front as a step line, the recommendation starred, candidates that do
    not fit in memory as grey crosses, the overhead budget as a dashed line."""
    artists: list[Any] = []
    fitting = [r for r in report.rows if r.fits_memory]
    for mode, (marker, color) in _MODE_STYLE.items():
        group = [r for r in fitting if _mode(r) == mode]
        if group:
            artists.append(ax.scatter([r.overhead_pct for r in group],
                                      [100 * r.gain_fraction for r in group], marker=marker,
                                      color=color, label=mode, zorder=3))
    misfits = [r for r in report.rows if not r.fits_memory]
    if misfits:
        artists.append(ax.scatter([r.overhead_pct for r in misfits],
                                  [100 * r.gain_fraction for r in misfits], marker="x",
                                  color="0.6", label="exceeds memory limit", zorder=2))
    front = sorted((r for r in report.rows if r.on_pareto_front),
                   key=lambda r: (r.overhead_pct, r.gain_fraction))
    if front:
        artists.extend(ax.step([r.overhead_pct for r in front],
                               [100 * r.gain_fraction for r in front], where="post",
                               color="black", linewidth=1, label="Pareto front", zorder=1))
        labelled: set[tuple[float, float, str]] = set()
        for r in front:
            text = "std" if r.candidate.kind == "standard" else f"N={r.candidate.num_blocks}"
            key = (round(r.overhead_pct, 3), round(100 * r.gain_fraction, 3), text)
            if key in labelled:  # modes that tie share one label
                continue
            labelled.add(key)
            artists.append(ax.annotate(text, (r.overhead_pct, 100 * r.gain_fraction),
                                       textcoords="offset points", xytext=(4, -10), fontsize=7))
    rec = report.recommended
    if rec is not None:
        artists.append(ax.scatter([rec.overhead_pct], [100 * rec.gain_fraction], marker="*",
                                  s=260, facecolor="gold", edgecolor="black", zorder=4,
                                  label=f"recommended: {rec.candidate.residual_label}"))
    artists.append(ax.axvline(report.constraints.max_step_overhead_pct, linestyle="--",
                              color="tab:purple", linewidth=1,
                              label=f"budget +{report.constraints.max_step_overhead_pct:g}%"))
    ax.set_xlabel(f"step-time overhead vs {report.reference_label} (%)")
    ax.set_ylabel("expected gain (% of Full AttnRes's)")
    ax.set_title(f"{report.scenario_name}: overhead against expected gain")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return artists


def plot_overhead_vs_blocks(ax: Any, report: PlanReport) -> list[Any]:
    """Step-time overhead (%) against N (log2 axis), one line per (mode, V, placement); Full
    AttnRes is the point at N = L. The overhead budget as a dashed line."""
    artists: list[Any] = []
    series: dict[tuple[str, int, str], list[PlanRow]] = {}
    for row in report.rows:
        if row.candidate.kind != "standard":
            c = row.candidate
            series.setdefault((_mode(row), c.num_virtual_stages, c.placement), []).append(row)
    layouts = {(v, placement) for _, v, placement in series}
    placements = sorted({placement for _, _, placement in series})
    for (mode, v, placement), rows in series.items():
        rows = sorted(rows, key=lambda r: r.candidate.num_blocks or 0)
        marker, color = _MODE_STYLE[mode]
        label = mode if len(layouts) == 1 else f"{mode}, V={v}, {placement}"
        # V picks the line style, the placement whether markers are filled, the mode the colour.
        filled = placements.index(placement) % 2 == 0
        artists.extend(ax.plot([r.candidate.num_blocks for r in rows],
                               [r.overhead_pct for r in rows], marker=marker, color=color,
                               markerfacecolor=color if filled else "white",
                               label=label, linestyle="-" if v == 1 else "--" if v == 2 else ":"))
    artists.append(ax.axhline(report.constraints.max_step_overhead_pct, linestyle="--",
                              color="tab:purple", linewidth=1,
                              label=f"budget +{report.constraints.max_step_overhead_pct:g}%"))
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"number of blocks N (N = L = {report.num_sublayers} is Full AttnRes)")
    ax.set_ylabel(f"step-time overhead vs {report.reference_label} (%)")
    ax.set_title(f"{report.scenario_name}: overhead against N per boundary mode")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return artists
