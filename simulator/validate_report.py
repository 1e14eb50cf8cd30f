"""Rendering a validation: the rich tables `pipesim validate` prints, JSON, and a markdown report.

Every table a person sees is also in validation.json (`ValidationReport.to_json`). The markdown
report links the figures the CLI saved next to it.

    print_report(Console(), report)
    write_report(report, "runs/validate/x", figures={"gantt": "gantt.png"})
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from simulator.units import format_bytes, format_seconds
from simulator.validate import ValidationReport

__all__ = ["headline_rows", "print_report", "markdown_report", "write_report"]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def _ok(flag: bool) -> str:
    return "exact" if flag else "MISMATCH"


def headline_rows(report: ValidationReport) -> list[tuple[str, str, str, str]]:
    """(what, simulated, measured, error) for the headline table."""
    rows = []
    for t in report.transitions:
        dst = t.src_chunk + 1 if t.direction == "forward" else t.src_chunk - 1
        rows.append((f"bytes/message {t.direction} {t.src_chunk}->{dst} "
                     f"({' '.join(t.simulated_names)})", format_bytes(t.simulated_bytes),
                     ", ".join(format_bytes(b) for b in t.measured_bytes)
                     + f" x{t.num_messages}", _ok(t.exact)))
    for p in report.pairs:
        rows.append((f"bytes/step rank {p.src_rank}->{p.dst_rank}",
                     format_bytes(p.simulated_bytes_per_step),
                     ", ".join(format_bytes(b) for b in p.measured_bytes_per_step)
                     + (f" (+{format_bytes(p.header_bytes_per_step)} header)"
                        if p.header_bytes_per_step else ""), _ok(p.exact)))
    if report.counts:
        rows.append(("operation counts per rank and step",
                     str(sum(c.simulated for c in report.counts)),
                     str(sum(max(c.measured, default=0) for c in report.counts)),
                     _ok(report.counts_exact)))
    if report.step is not None:
        rows.append(("step time", format_seconds(report.step.simulated_s),
                     format_seconds(report.step.measured_s), _pct(report.step.error_pct)))
        if report.step.with_run_compute_s is not None:
            rows.append(("step time with the run's own compute (attribution)",
                         format_seconds(report.step.with_run_compute_s),
                         format_seconds(report.step.measured_s),
                         _pct(report.step.with_run_compute_error_pct)))
    for m in report.memory:
        rows.append((f"peak saved bytes rank {m.rank} (calibrated)",
                     "n/a" if m.calibrated_bytes is None else format_bytes(m.calibrated_bytes),
                     format_bytes(m.measured_bytes), _pct(m.calibrated_error_pct)))
        rows.append((f"peak saved bytes rank {m.rank} (analytic)", format_bytes(m.analytic_bytes),
                     format_bytes(m.measured_bytes), _pct(m.analytic_error_pct)))
    return rows


def print_report(console: Any, report: ValidationReport) -> None:
    """The headline table and the per-operation durations, with rich."""
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"{report.scenario_name}: simulated vs measured "
                        f"({report.trace_format}, {report.backend}, {report.protocol})")
    for column in ("what", "simulated", "measured", "error"):
        table.add_column(column)
    for row in headline_rows(report):
        table.add_row(*row)
    console.print(table)
    if report.durations:
        durations = Table(title="Median durations per operation")
        for column in ("operation", "rank", "simulated", "measured", "n", "error"):
            durations.add_column(column)
        for d in report.durations:
            durations.add_row(d.what, str(d.rank), format_seconds(d.simulated_s),
                              format_seconds(d.measured_s), str(d.num_measured),
                              _pct(d.error_pct))
        console.print(durations)
    for note in report.notes:
        console.print(f"note: {note}")


def markdown_report(report: ValidationReport, figures: dict[str, str] | None = None) -> str:
    """The report as markdown; `figures` maps "gantt"/"bytes" to image file names."""
    figures = figures or {}
    lines = [f"# Validation: {report.scenario_name}", "",
             f"- trace: `{report.trace}` ({report.trace_format}, backend {report.backend})",
             f"- simulated on: hardware `{report.hardware}`, topology `{report.topology}`, "
             f"protocol `{report.protocol}`",
             f"- bytes: **{_ok(report.bytes_exact)}**; operation counts: "
             f"**{_ok(report.counts_exact)}**",
             f"- step time error: **{_pct(report.step_time_error_pct)}**; worst peak-memory "
             f"error (calibrated): **{_pct(report.worst_memory_error_pct)}**", "",
             "| what | simulated | measured | error |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in headline_rows(report)]
    if report.durations:
        lines += ["", "## Median durations per operation", "",
                  "| operation | rank | simulated | measured | n | error |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {d.what} | {d.rank} | {format_seconds(d.simulated_s)} | "
                  f"{format_seconds(d.measured_s)} | {d.num_measured} | {_pct(d.error_pct)} |"
                  for d in report.durations]
    if "gantt" in figures:
        lines += ["", "## Gantt charts (simulated above, measured below)", "",
                  f"![gantt]({figures['gantt']})"]
    if "bytes" in figures:
        lines += ["", "## Bytes per boundary", "", f"![bytes per boundary]({figures['bytes']})"]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def write_report(report: ValidationReport, out_dir: str | Path,
                 figures: dict[str, str] | None = None) -> list[Path]:
    """validation.json and report.md in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "validation.json", out / "report.md"
    json_path.write_text(json.dumps(report.to_json(), indent=1, default=str) + "\n")
    md_path.write_text(markdown_report(report, figures))
    return [json_path, md_path]
