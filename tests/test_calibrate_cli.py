"""User mistakes on `pipesim calibrate` end in one message and exit status 2 (no processes run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.cli.main import main

SCENARIO = str(Path(__file__).resolve().parent.parent / "scenarios" / "cpu_standard_1f1b.yaml")


@pytest.mark.parametrize("args, message", [
    (["--nproc", "1"], "--nproc = 1: point-to-point calibration needs at least 2 processes"),
    (["--sizes", "1024"], "--sizes = '1024': give at least two distinct sizes"),
    (["--sizes", "1k,2k"], "--sizes = '1k,2k': give comma-separated byte counts"),
    (["--repeats", "2"], "--repeats = 2: use at least 3"),
    (["--gpu-name", "gpu"], "--gpu-name = 'gpu': must contain {rank}"),
    (["--backend", "nccl"], "--backend nccl needs one GPU per process"),
    (["--average", "runs/a", "--average", "runs/b"], "--average averages calibrations already "
                                                     "measured; give no scenario with it"),
])
def test_bad_options_are_one_message(args, message, capsys, tmp_path):
    if args[0] == "--backend":
        torch = pytest.importorskip("torch")
        if torch.cuda.device_count() >= 2:
            pytest.skip("this machine has the GPUs nccl needs")
    with pytest.raises(SystemExit) as exit_info:
        main(["calibrate", SCENARIO, "--out", str(tmp_path), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_no_scenario_is_one_message(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["calibrate", "--out", str(tmp_path)])
    assert "calibrate: no scenario given" in capsys.readouterr().err


def test_averaging_one_or_missing_calibrations_is_one_message(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["calibrate", "--average", str(tmp_path), "--out", str(tmp_path / "avg")])
    assert exit_info.value.code == 2
    assert "give at least two calibration directories, got 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["calibrate", "--average", str(tmp_path), "--average", str(tmp_path), "--out",
              str(tmp_path / "avg")])
    assert "plan.json: not found" in capsys.readouterr().err
