"""End to end on gloo: `pipesim calibrate`, `pipesim measure` and `pipesim validate`, P = 2.

The calibration and the measured run are separate processes; the runner is never told what
the simulator predicts. Bytes and counts must be exact; the calibrated memory model follows
the runner's own storage accounting, so its peak must match within a percent. Step-time
accuracy is not judged here (2 shared cores are noisy): benchmarks/bench_accuracy.py measures it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.slow

SCENARIO = {"name": "e2e_block_cached", "model": {"num_layers": 4, "hidden_size": 64,
                                                  "num_heads": 4, "ffn_hidden_size": 128,
                                                  "vocab_size": 64, "seq_len": 32,
                                                  "dtype": "fp32"},
            "residual": {"kind": "block", "block_size": 3},
            "pipeline": {"schedule": "interleaved-1f1b", "num_stages": 2,
                         "num_virtual_stages": 2, "num_microbatches": 4, "comm_mode": "cached"},
            "run": {"num_steps": 2, "num_warmup_steps": 1}}


def _pipesim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "simulator.cli.main", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    scenario = root / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    calib = _pipesim("calibrate", str(scenario), "--nproc", "2", "--out", str(root / "calib"),
                     "--sizes", "1024,4194304", "--repeats", "5", "--max-seconds-per-point", "0.2")
    assert calib.returncode == 0, calib.stderr[-2000:]
    measure = _pipesim("measure", str(scenario), "--out", str(root / "run"))
    assert measure.returncode == 0, measure.stderr[-2000:]
    done = _pipesim("validate", "--trace", str(root / "run"), "--calibration",
                    str(root / "calib"), str(scenario), "--out", str(root / "validate"))
    return root, done


def test_validate_succeeds_and_writes_its_outputs(validated):
    root, done = validated
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    for name in ("validation.json", "report.md", "gantt.png", "boundary_bytes.png"):
        assert (root / "validate" / name).is_file(), name
    assert "step time" in done.stdout and "exact" in done.stdout
    report = (root / "validate" / "report.md").read_text()
    assert "![gantt](gantt.png)" in report


def test_bytes_and_counts_are_exact_and_memory_matches(validated):
    root, _ = validated
    data = json.loads((root / "validate" / "validation.json").read_text())
    assert data["bytes_exact"] and data["counts_exact"]
    assert data["protocol"] == "eager" and data["backend"] == "gloo"  # the runner posts ahead
    assert len(data["transitions"]) == 6  # 3 forward and 3 backward transitions, C = 4
    assert abs(data["worst_memory_error_pct"]) < 1.0
    assert data["step"]["simulated_s"] > 0 and data["step"]["measured_s"] > 0


def test_a_mismatched_scenario_is_one_clear_error(validated, tmp_path):
    root, _ = validated
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**SCENARIO, "residual": {"kind": "block",
                                                              "block_size": 2}}))
    done = _pipesim("validate", "--trace", str(root / "run"), "--calibration",
                    str(root / "calib"), str(other), "--out", str(tmp_path / "v"))
    assert done.returncode == 2
    assert "residual.block_size = 3 but the scenario says 2" in done.stderr
    assert "Traceback" not in done.stderr
