"""`pipesim run` and `pipesim compare` end to end on tiny scenarios."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from simulator.cli.main import cli, main

SCENARIO = {
    "name": "cli_tiny",
    "model": {"num_layers": 2, "hidden_size": 128, "num_heads": 2, "ffn_hidden_size": 256,
              "vocab_size": 500, "seq_len": 64},
    "residual": {"kind": "block", "block_size": 2},
    "pipeline": {"schedule": "1f1b", "num_stages": 2, "num_microbatches": 4,
                 "comm_mode": "naive"},
    "parallelism": {"data_parallel": 2},
    "hardware": "a100",
    "topology": {"builder": "hgx_node", "num_gpus": 4},
}


def _write(tmp_path: Path, name: str, **changes: object) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(SCENARIO | {"name": name} | changes))
    return path


def test_run_prints_a_summary_and_writes_every_output(tmp_path: Path) -> None:
    path = _write(tmp_path, "cli_tiny")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "cli_tiny: one training step" in result.output
    assert "bubble fraction" in result.output
    for name in ("summary.json", "result.json", "ranks.csv", "links.csv", "spans.csv",
                 "transfers.csv", "memory.csv", "trace.json", "gantt.png", "links.png",
                 "memory.png", "sim_run/manifest.json", "sim_run/rank-0.jsonl"):
        assert (out / name).is_file(), name
    trace = json.loads((out / "trace.json").read_text())
    assert trace["traceEvents"]


def test_run_overrides_hardware_and_topology(tmp_path: Path) -> None:
    path = _write(tmp_path, "cli_bare", hardware=None, topology=None)
    out = tmp_path / "bare"
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(out), "--hardware",
                                      "h100", "--topology", "ideal", "--no-figures"])
    assert result.exit_code == 0, result.output
    assert "none: every link is unlimited" in result.output
    assert not (out / "gantt.png").exists()


def test_run_without_hardware_is_one_clear_error(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "cli_bare", hardware=None)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(path), "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the scenario names no hardware: add `hardware: h100`")
    assert "Traceback" not in err


def test_compare_puts_scenarios_side_by_side(tmp_path: Path) -> None:
    naive = _write(tmp_path, "naive")
    cached = _write(tmp_path, "cached", pipeline=SCENARIO["pipeline"] | {
        "schedule": "interleaved-1f1b", "num_virtual_stages": 2, "comm_mode": "cached"},
                    model=SCENARIO["model"] | {"num_layers": 4})
    out = tmp_path / "cmp"
    result = CliRunner().invoke(cli, ["compare", str(naive), str(cached), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "naive" in result.output and "cached" in result.output and "x)" in result.output
    rows = json.loads((out / "compare.json").read_text())
    assert [r["name"] for r in rows] == ["naive", "cached"]
    assert (out / "compare.csv").is_file() and (out / "compare.png").is_file()
