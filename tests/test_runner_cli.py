"""The two ways to start a measured run: `pipesim measure` and torchrun, plus their user errors.

    python -m pytest tests/test_runner_cli.py -q
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from simulator.cli.main import main
from simulator.manifest import build_manifest
from simulator.scenario import load_scenario
from simulator.trace_schema import read_run


def _scenario(tmp_path, name: str = "cli-toy", **overrides: dict) -> str:
    data = {
        "name": name,
        "model": {"num_layers": 2, "hidden_size": 32, "num_heads": 2, "ffn_hidden_size": 64,
                  "vocab_size": 64, "seq_len": 16, "dtype": "fp32"},
        "residual": {"kind": "block", "block_size": 3},
        "pipeline": {"schedule": "interleaved-1f1b", "num_stages": 2, "num_virtual_stages": 2,
                     "num_microbatches": 2, "comm_mode": "cached"},
    }
    for section, values in overrides.items():
        data[section] = {**data.get(section, {}), **values}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _pipesim(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_pipesim_measure_runs_profiles_and_summarises(tmp_path, capsys):
    path = _scenario(tmp_path)
    out_dir = tmp_path / "run"
    code, out, err = _pipesim(["measure", path, "--nproc", "2", "--out", str(out_dir),
                               "--steps", "2", "--warmup", "1", "--profile"], capsys)
    assert code == 0, err
    assert "median step time" in out and "over 2 steps (gloo, 2 ranks)" in out
    run = read_run(out_dir)
    assert run.manifest.complete and run.manifest.num_warmup_steps == 1
    assert [s.warmup for s in run.ranks[0].steps] == [True, False, False]
    summary = json.loads((out_dir / "summary.json").read_text())
    scenario = load_scenario(path)
    manifest = build_manifest(scenario)
    forward = [b for b in summary["boundaries"] if b["direction"] == "forward"]
    assert [b["payload_bytes_per_step"] for b in forward] == [
        manifest.transition("forward", c).num_bytes("cached") * 2 for c in range(3)]
    profile = json.loads((out_dir / "profile-rank-0.json").read_text())
    assert any("Input Dims" in e.get("args", {}) for e in profile["traceEvents"])


def test_torchrun_launch_writes_a_complete_run(tmp_path):
    path = _scenario(tmp_path, "torchrun-toy")
    out_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "real_runner", path, "--out", str(out_dir), "--steps", "1", "--timeout", "30"],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = read_run(out_dir)
    assert run.manifest.backend == "gloo" and [t.header.rank for t in run.ranks] == [0, 1]


@pytest.mark.parametrize("overrides, args, message", [
    ({}, ["--nproc", "3"], r"pipeline\.num_stages = 2 but 3 processes were started; the runner "
                           r"uses one process per pipeline stage: start 2 processes"),
    ({"training": {"recompute": "full"}}, [], r"training\.recompute = 'full': the real runner "
                                              r"keeps all activations"),
    ({"parallelism": {"data_parallel": 2}}, [], r"parallelism = data_parallel 2, tensor_parallel "
                                                r"1: the real runner implements pipeline "
                                                r"parallelism only"),
    ({"model": {"moe": {"num_experts": 4, "experts_per_token": 2}}}, [],
     r"model\.moe is set: the real runner has dense MLPs only"),
    ({}, ["--steps", "0"], r"--steps = 0: must be at least 1"),
    ({}, ["--timeout", "0"], r"--timeout = 0\.0: must be positive"),
])
def test_user_errors_are_one_line_before_any_process_starts(tmp_path, capsys, overrides, args,
                                                            message):
    path = _scenario(tmp_path, **overrides)
    code, _, err = _pipesim(["measure", path, "--out", str(tmp_path / "run"), *args], capsys)
    assert code == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_python_m_real_runner_reports_a_missing_scenario(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "real_runner", str(tmp_path / "nope.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: scenario file not found: {tmp_path / 'nope.yaml'}"
