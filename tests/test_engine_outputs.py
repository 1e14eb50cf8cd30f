"""What a simulated step writes: JSON, CSVs, the Chrome trace, the shared JSONL trace, figures;
and the symmetry reduction against the full simulation."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import matplotlib
import pytest

from simulator.chrome_trace import chrome_trace
from simulator.plan import simulate
from simulator.plots import plot_gantt, plot_link_utilization, plot_memory
from simulator.results import SimulationResult
from simulator.scenario import Scenario, load_scenario
from simulator.sim_trace import write_simulated_run
from simulator.trace_schema import match_transfers, read_run

matplotlib.use("Agg")

TOPOLOGY = {"builder": "multi_rack", "num_racks": 2, "nodes_per_rack": 2, "gpus_per_node": 4,
            "nics_per_node": 4}


def _scenario(**changes: Any) -> Scenario:
    data: dict[str, Any] = {
        "name": "outputs",
        "model": {"num_layers": 4, "hidden_size": 256, "num_heads": 4, "ffn_hidden_size": 1024,
                  "vocab_size": 1000, "seq_len": 128},
        "residual": {"kind": "block", "block_size": 2},
        "pipeline": {"schedule": "interleaved-1f1b", "num_stages": 2, "num_virtual_stages": 2,
                     "num_microbatches": 4, "comm_mode": "cached"},
        "parallelism": {"data_parallel": 2},
        "hardware": "h100", "topology": TOPOLOGY, "placement": "spread-racks",
    }
    data.update(changes)
    return load_scenario(data)


@pytest.fixture(scope="module")
def result() -> SimulationResult:
    return simulate(_scenario())


def test_json_and_csv_outputs_hold_every_rank_and_link(result: SimulationResult,
                                                      tmp_path: Path) -> None:
    written = {p.name for p in result.write(tmp_path)}
    assert written == {"summary.json", "ranks.csv", "links.csv", "spans.csv", "transfers.csv",
                       "memory.csv"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["summary"]["step_time_s"] == result.step_time_s
    with (tmp_path / "ranks.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 2 * 2
    with (tmp_path / "links.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sum(int(r["pipeline_bytes"]) for r in rows) == sum(l.pipeline_bytes
                                                              for l in result.links)
    with (tmp_path / "spans.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == 2 * 2 * 2 * 2 * 4  # dp x P x V x F/B x M
    json.dumps(result.to_json())  # everything is plain data


def test_chrome_trace_has_tracks_flow_arrows_and_counters(result: SimulationResult) -> None:
    trace = json.loads(json.dumps(chrome_trace(result)))
    events = trace["traceEvents"]
    threads = {(e["pid"], e["args"]["name"]) for e in events
               if e["ph"] == "M" and e["name"] == "thread_name"}
    assert threads == {(1, "compute"), (1, "comm"), (2, "compute"), (2, "comm")}
    spans = [e for e in events if e["ph"] == "X" and e["cat"] == "compute"]
    assert len(spans) == 2 * 2 * 2 * 4  # replica 0 only
    starts = {e["id"]: e for e in events if e["ph"] == "s"}
    ends = {e["id"]: e for e in events if e["ph"] == "f"}
    assert starts and set(starts) == set(ends)
    for flow_id, start in starts.items():
        assert ends[flow_id]["ts"] >= start["ts"]
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert "memory" in counters and any("->" in name for name in counters)


def test_simulated_run_reads_back_in_the_shared_trace_schema(result: SimulationResult,
                                                             tmp_path: Path) -> None:
    run = read_run(write_simulated_run(result, _scenario(), tmp_path / "sim_run"))
    assert run.manifest.backend == "simulated" and run.manifest.world_size == 2
    pairs = match_transfers(run)
    assert len(pairs) == (2 * 2 - 1) * 2 * 4  # (C - 1) hops x 2 directions x M
    for send, recv in pairs:
        assert send.total_bytes == recv.total_bytes and recv.end_s >= send.start_s
    peaks = [rank.steps[0].peak_saved_bytes for rank in run.ranks]
    assert all(p > 0 for p in peaks)


def test_figures_draw_on_the_given_axes(result: SimulationResult) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3)
    for plot, ax in zip((plot_gantt, plot_link_utilization, plot_memory), axes):
        artists = plot(ax, result)
        assert artists and all(a is not None for a in artists)
    assert len(axes[2].get_lines()) == 2  # one memory line per rank of replica 0
    plt.close(fig)


def test_symmetry_reduction_matches_the_full_simulation_on_a_symmetric_cluster() -> None:
    """Packed replicas on identical servers see identical links: one replica is exact."""
    scenario = _scenario(placement="packed",
                         parallelism={"data_parallel": 4, "tensor_parallel": 2})
    full, reduced = simulate(scenario), simulate(scenario, symmetric=True)
    assert reduced.num_replicas == 1 and full.num_replicas == 4
    assert reduced.step_time_s == pytest.approx(full.step_time_s, rel=1e-9)
    assert reduced.pipeline_time_s == pytest.approx(full.pipeline_time_s, rel=1e-9)


def test_written_results_are_byte_identical_across_processes(tmp_path: Path) -> None:
    """Same scenario, same files, whatever Python's hash seed (no set-order dependence)."""
    import os
    import subprocess
    import sys

    import yaml

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_scenario().model_dump(mode="json", exclude_none=True)))
    outputs = []
    for seed in ("1", "2"):
        out = tmp_path / f"out{seed}"
        env = os.environ | {"PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-m", "simulator.cli.main", "run", str(path), "--out",
                        str(out), "--no-figures"], check=True, env=env, capture_output=True)
        outputs.append({name: (out / name).read_bytes() for name in
                        ("summary.json", "result.json", "links.csv", "transfers.csv",
                         "trace.json")})
    assert outputs[0] == outputs[1]
