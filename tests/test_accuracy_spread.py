"""benchmarks/accuracy_spread.py: several accuracy passes side by side; bench_accuracy.py's
argument checks (its runs themselves are the benchmark, not a test).

    python -m pytest tests/test_accuracy_spread.py -q
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("accuracy_spread",
                                               ROOT / "benchmarks" / "accuracy_spread.py")
spread = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(spread)


def _pass(directory: Path, errors: dict[str, float], attributed: float = -2.0) -> Path:
    rows = [{"link": "unshaped", "scenario": name, "bytes_exact": True, "step_error_pct": error,
             "run_compute_step_error_pct": attributed} for name, error in errors.items()]
    directory.mkdir()
    (directory / "accuracy.json").write_text(json.dumps({"rows": rows, "summary": []}))
    return directory


def test_per_run_median_range_and_targets(tmp_path):
    first = _pass(tmp_path / "a", {"x": -10.0, "y": 2.0})
    second = _pass(tmp_path / "b", {"x": -4.0, "y": 4.0})
    third = _pass(tmp_path / "c", {"x": -6.0, "y": 30.0})
    table, summary = spread.report(spread.load_passes([first, second, third]))
    assert "| unshaped | x | -10.0% | -4.0% | -6.0% | -6.0% | 6.0 | -2.0% |" in table
    assert "| unshaped | y | +2.0% | +4.0% | +30.0% | +4.0% | 28.0 | -2.0% |" in table
    text = "\n".join(summary)
    # Pooled |errors| 2, 4, 4, 6, 10, 30: median 5.0, worst 30; per-run medians 6 and 4.
    assert "every run of every pass: median |error| 5.0% (met), worst 30.0% (missed)" in text
    assert "per-run median over the passes: median |error| 5.0% (met), worst 6.0% (met)" in text
    # Each pass alone: |errors| (10, 2), (4, 4), (6, 30).
    assert "pass 1 alone: median |error| 6.0% (missed), worst 10.0% (met), 2 values" in text
    assert "pass 2 alone: median |error| 4.0% (met), worst 4.0% (met), 2 values" in text
    assert "pass 3 alone: median |error| 18.0% (missed), worst 30.0% (missed), 2 values" in text
    assert "bias) over every run: +2.7%" in text
    assert "attribution (not a prediction), per-run median: median |error| 2.0%, worst 2.0%" in text


def test_missing_or_foreign_pass_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="accuracy.json: not found"):
        spread.load_passes([tmp_path])
    (tmp_path / "accuracy.json").write_text("[1, 2]")
    with pytest.raises(SystemExit, match="not an accuracy benchmark result"):
        spread.load_passes([tmp_path])


@pytest.mark.parametrize(("argv", "message"), [
    (["--passes", "0"], "--passes must be at least 1"),
    (["--only", "no_such_scenario"], "no scenarios/cpu_\\*.yaml matches"),
])
def test_accuracy_benchmark_rejects_bad_arguments_before_running(tmp_path, argv, message):
    """bench_accuracy.py exits with a usage error, and writes nothing, for a bad --passes or
    --only (a typo would otherwise cost a 70-minute --passes 5 run's first pass)."""
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_accuracy.py"),
                           "--out", str(out), *argv], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2
    assert re.search(message, done.stderr), done.stderr
    assert not out.exists()
