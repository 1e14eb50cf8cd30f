"""Several passes of the accuracy benchmark side by side: how far one run's error moves.

On the shared 2-vCPU validation host a single run's step-time error moves by several points
from one pass to the next with the host's speed (docs/accuracy-report.md). This script reads
the accuracy.json of each pass (benchmarks/bench_accuracy.py --out DIR), prints per run (link,
scenario) each pass's step-time error, their median and their range, and the issue's targets
over every run of every pass, over each pass alone and over the per-run medians; the same for
the attribution (the step simulated with the run's own compute). Writes spread.md when --out
is given. `bench_accuracy.py --passes N` ends with this for its own N passes.

    python benchmarks/accuracy_spread.py runs/acc1 runs/acc2 runs/acc3 --out runs/spread
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

TARGET_MEDIAN_PCT, TARGET_WORST_PCT = 5.0, 15.0

Key = tuple[str, str]


def load_passes(dirs: list[Path]) -> list[list[dict[str, object]]]:
    """The rows of each pass's accuracy.json; a clear error for a missing or foreign file."""
    passes = []
    for directory in dirs:
        path = directory / "accuracy.json"
        if not path.is_file():
            raise SystemExit(f"{path}: not found (run benchmarks/bench_accuracy.py --out "
                             f"{directory} first)")
        try:
            rows = json.loads(path.read_text())["rows"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise SystemExit(f"{path}: not an accuracy benchmark result ({exc})") from exc
        passes.append(rows)
    return passes


def by_run(passes: list[list[dict[str, object]]], field: str) -> dict[Key, list[float]]:
    """(link, scenario) -> the field's value in each pass that has it, in pass order."""
    values: dict[Key, list[float]] = {}
    for rows in passes:
        for row in rows:
            value = row.get(field)
            if value is not None:
                values.setdefault((str(row["link"]), str(row["scenario"])), []).append(
                    float(value))
    return values


def targets(label: str, errors: list[float], judged: bool = True) -> str:
    """One summary line: median and worst |error|, against the targets when `judged`."""
    if not errors:
        return f"{label}: n/a"
    median, worst = statistics.median(map(abs, errors)), max(map(abs, errors))
    verdict = lambda ok: (" (met)" if ok else " (missed)") if judged else ""  # noqa: E731
    return (f"{label}: median |error| {median:.1f}%{verdict(median <= TARGET_MEDIAN_PCT)}, "
            f"worst {worst:.1f}%{verdict(worst <= TARGET_WORST_PCT)}, {len(errors)} values")


def report(passes: list[list[dict[str, object]]]) -> tuple[list[str], list[str]]:
    """The table's lines and the summary lines."""
    steps = by_run(passes, "step_error_pct")
    attributed = by_run(passes, "run_compute_step_error_pct")
    n = len(passes)
    head = ("| link | scenario | " + " | ".join(f"pass {i + 1}" for i in range(n))
            + " | median | range | attribution, median |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for key, errors in steps.items():
        cells = [f"{e:+.1f}%" for e in errors] + [""] * (n - len(errors))
        attr = attributed.get(key, [])
        attr_cell = f"{statistics.median(attr):+.1f}%" if attr else "n/a"
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells)
                     + f" | {statistics.median(errors):+.1f}% | {max(errors) - min(errors):.1f} "
                     f"| {attr_cell} |")
    exact = all(bool(row["bytes_exact"]) for rows in passes for row in rows)
    pooled = [e for errors in steps.values() for e in errors]
    medians = [statistics.median(errors) for errors in steps.values()]
    spreads = [max(errors) - min(errors) for errors in steps.values()]
    summary = [
        f"passes: {n}; runs per pass: {', '.join(str(len(rows)) for rows in passes)}",
        f"bytes exact in every run of every pass: {exact}",
        targets("every run of every pass", pooled),
        *(targets(f"pass {i + 1} alone", [float(row["step_error_pct"]) for row in rows
                                          if row.get("step_error_pct") is not None])
          for i, rows in enumerate(passes)),
        targets("per-run median over the passes", medians),
        targets("attribution (not a prediction), per-run median",
                [statistics.median(a) for a in attributed.values()], judged=False),
        f"range of one run's error over the passes: median {statistics.median(spreads):.1f} "
        f"points, largest {max(spreads):.1f}" if spreads else "range: n/a",
        f"mean signed error (bias) over every run: {statistics.mean(pooled):+.1f}%"
        if pooled else "bias: n/a",
    ]
    return lines, summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="+", type=Path, help="--out directories of passes")
    parser.add_argument("--out", type=Path, default=None, help="write spread.md here")
    args = parser.parse_args(argv)
    if len(args.dirs) < 2:
        parser.error("give at least two passes")
    table, summary = report(load_passes(args.dirs))
    print("\n".join(table + [""] + summary))
    if args.out is not None:
        write_spread(args.out, table, summary)


def write_spread(out: Path, table: list[str], summary: list[str]) -> Path:
    """`report`'s table and summary as out/spread.md (markdown); returns the file."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "spread.md"
    path.write_text("\n".join(table + [""] + [f"- {line}" for line in summary]) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
