"""Golden summaries of the shipped scenarios: what each predicts, pinned so changes are reviewed.

A golden summary holds the boundary traffic totals per mode, the analytic memory peak per rank
and, when the scenario names hardware and a topology, the simulated step (symmetry-reduced from
512 GPUs up, as `pipesim plan` does, and marked so). Regenerate after an intended change and
review the diff:

    python -m simulator.golden --write        # rewrite scenarios/expected/*.json
    python -m simulator.golden                # check, exit 1 on any difference
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from simulator.inspect_report import inspect_scenario
from simulator.scenario import Scenario, load_scenario

__all__ = ["SYMMETRY_FROM_GPUS", "golden_summary", "golden_path", "main"]

SYMMETRY_FROM_GPUS = 512
"""Scenarios with at least this many GPUs are simulated with the symmetry reduction."""

_SIGNIFICANT_DIGITS = 10


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{_SIGNIFICANT_DIGITS}g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def golden_summary(scenario: Scenario) -> dict[str, Any]:
    """The pinned predictions of one scenario, JSON-ready, floats to 10 significant digits."""
    report = inspect_scenario(scenario)
    par = scenario.parallelism
    num_gpus = par.data_parallel * par.tensor_parallel * scenario.pipeline.num_stages
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "num_gpus": num_gpus,
        "plane_bytes": report["plane_bytes"],
        "boundary_traffic": report["totals"],
        "memory_peak_bytes_per_rank": [r["peak_bytes"] for r in report["memory"]],
    }
    if scenario.hardware is not None and scenario.topology is not None:
        from simulator.plan import simulate

        symmetric = num_gpus >= SYMMETRY_FROM_GPUS
        result = simulate(scenario, symmetric=symmetric, record_link_timeline=False)
        summary["simulation"] = {"symmetry_reduced": symmetric, **result.summary()}
    return _rounded(summary)


def golden_path(scenario_path: Path) -> Path:
    """scenarios/x.yaml -> scenarios/expected/x.json."""
    return scenario_path.parent / "expected" / f"{scenario_path.stem}.json"


def main(argv: list[str] | None = None) -> int:
    """Check (default) or rewrite the golden summaries of every scenario in a folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite instead of checking")
    parser.add_argument("--scenarios", type=Path, default=Path("scenarios"))
    args = parser.parse_args(argv)
    differ = []
    for path in sorted(args.scenarios.glob("*.yaml")):
        text = json.dumps(golden_summary(load_scenario(path)), indent=2, sort_keys=True) + "\n"
        target = golden_path(path)
        if args.write:
            target.parent.mkdir(exist_ok=True)
            target.write_text(text)
            print(f"wrote {target}")
        elif not target.is_file() or target.read_text() != text:
            differ.append(path.name)
            print(f"DIFFERS: {path.name} (run python -m simulator.golden --write and review)")
        else:
            print(f"ok: {path.name}")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
