"""`pipesim plan`: table, files, JSON, user errors as one message; the plot functions."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
import yaml

from simulator.cli.main import main

SCENARIO = {
    "name": "tiny", "hardware": "h100", "topology": "ideal",
    "model": {"num_layers": 4, "hidden_size": 64, "num_heads": 4, "ffn_hidden_size": 128,
              "vocab_size": 128, "seq_len": 64},
    "pipeline": {"schedule": "interleaved-1f1b", "num_stages": 2, "num_virtual_stages": 2,
                 "num_microbatches": 2},
}


@pytest.fixture()
def scenario_file(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(SCENARIO))
    return path


def _run(argv, capsys):
    code = 0
    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_plan_writes_table_json_csv_and_plots(scenario_file, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = _run(["plan", scenario_file, "--blocks", "1,2,3", "--modes",
                            "naive,cached", "--virtual-stages", "1,2", "--jobs", "1",
                            "--max-step-overhead", "50", "--no-progress", "--out", out], capsys)
    assert code == 0
    assert "recommendation: block N=" in stdout and "reason: " in stdout
    # N = 3 on L = 8 over 2 x 1 or 2 x 2 chunks is valid; every layout has its baseline.
    data = json.loads((out / "plan.json").read_text())
    labels = [c["label"] for c in data["candidates"]]
    assert labels[0] == "standard, V=2, packed"
    assert "standard, V=1, packed" in labels and "block N=3 cached, V=1, packed" in labels
    assert len(labels) == 2 + 2 * 3 * 2
    assert data["recommendation"]["label"] in labels
    # Overheads: against the reference (V=2 standard) and against the own layout's standard.
    step = {c["label"]: c["step_time_s"] for c in data["candidates"]}
    row = next(c for c in data["candidates"] if c["label"] == "block N=2 cached, V=1, packed")
    assert row["overhead_pct"] == pytest.approx(
        100 * (step[row["label"]] / step["standard, V=2, packed"] - 1))
    assert row["layout_overhead_pct"] == pytest.approx(
        100 * (step[row["label"]] / step["standard, V=1, packed"] - 1))
    assert data["quality_source"].startswith("Kimi Team")
    with (out / "plan.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["label"] for r in rows] == labels
    assert sum(r["recommended"] == "True" for r in rows) == 1
    for name in ("pareto.png", "overhead_vs_n.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plan_json_to_stdout_is_deterministic(scenario_file, tmp_path, capsys):
    args = ["plan", scenario_file, "--blocks", "2", "--jobs", "1", "--no-progress",
            "--no-plots", "--json"]
    code, first, _ = _run(args + ["--out", tmp_path / "a"], capsys)
    assert code == 0
    _, second, _ = _run(args + ["--out", tmp_path / "b"], capsys)
    assert json.loads(first)["scenario"] == "tiny"
    assert first == second
    first_file, second_file = (tmp_path / d / "plan.json" for d in ("a", "b"))
    assert first_file.read_bytes() == second_file.read_bytes()


@pytest.mark.parametrize("extra, message", [
    (["--blocks", "1,x"], "'1,x': give comma-separated integers, e.g. 1,2,4,8"),
    (["--max-memory-fraction", "2"], "error: max_memory_fraction = 2.0: must be in (0, 1]"),
    (["--modes", "fast"], "error: modes: 'fast' is not a boundary mode"),
    (["--engine", "dask"], "error: engine dask: give the scheduler address"),
    (["--hardware", "h999"], "error: the reference baseline (standard, V=2, packed) cannot "
                             "be simulated: hardware = 'h999': not a preset"),
])
def test_plan_user_errors_are_one_message(scenario_file, tmp_path, capsys, extra, message):
    code, _, err = _run(["plan", scenario_file, "--jobs", "1", "--no-progress", "--no-plots",
                         "--out", tmp_path / "o", *extra], capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_plot_functions_return_artists():
    from matplotlib.figure import Figure

    from simulator.planner import run_plan
    from simulator.plot_plan import plot_overhead_vs_blocks, plot_pareto
    from simulator.scenario import load_scenario

    report = run_plan(load_scenario(SCENARIO), blocks=[1, 2], modes=["naive", "cached"], jobs=1)
    fig = Figure()
    pareto = plot_pareto(fig.add_subplot(1, 2, 1), report)
    lines = plot_overhead_vs_blocks(fig.add_subplot(1, 2, 2), report)
    assert pareto and lines
    # One line per mode (naive, cached) plus the budget line.
    assert len([a for a in lines if a.get_label() in ("naive", "cached")]) == 2


def test_planner_modules_import_without_matplotlib():
    code = ("import sys, simulator.planner, simulator.plot_plan, simulator.cli.plan_cmd; "
            "print('matplotlib' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
