"""When a rank raises or dies mid-step, the others stop in bounded time and say which rank failed.

Failures are injected with PIPESIM_INJECT_FAILURE (test-only) into real local runs started by
`real_runner.launch.launch_local`, with a short timeout. The watchdog's heartbeat rule is tested
in-process against a real TCPStore.

    python -m pytest tests/test_runner_faults.py -q
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import torch.distributed as dist
import yaml

from real_runner.launch import launch_local
from real_runner.watchdog import ABORT_EXIT_CODE, FAILED_EXIT_CODE, Failure, Watchdog
from simulator.trace_schema import TraceError, read_manifest, read_rank_trace, read_run

TIMEOUT_S = 10.0


def _scenario_file(tmp_path, world_size: int) -> str:
    data = {
        "name": f"fault-p{world_size}",
        "model": {"num_layers": world_size, "hidden_size": 32, "num_heads": 2,
                  "ffn_hidden_size": 64, "vocab_size": 64, "seq_len": 16, "dtype": "fp32"},
        "residual": {"kind": "block", "block_size": 2},
        "pipeline": {"schedule": "1f1b", "num_stages": world_size, "num_microbatches": 4,
                     "comm_mode": "cached"},
        "run": {"num_steps": 3},
    }
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _launch(tmp_path, world_size: int, inject: str):
    return launch_local(_scenario_file(tmp_path, world_size), world_size, tmp_path / "run",
                        timeout_s=TIMEOUT_S, extra_env={"PIPESIM_INJECT_FAILURE": inject})


def test_a_rank_that_raises_stops_the_others_who_name_it(tmp_path):
    result = _launch(tmp_path, 2, "1:1:raise")
    assert not result.ok
    assert result.failure.rank == 1 and "injected failure at step 1" in result.failure.message
    assert result.exit_codes == {0: ABORT_EXIT_CODE, 1: FAILED_EXIT_CODE}
    assert max(result.exit_times_s.values()) - result.failure_seen_s < TIMEOUT_S
    survivor = read_rank_trace(tmp_path / "run" / "rank-0.jsonl")
    assert (survivor.end.complete, survivor.end.status, survivor.end.failed_rank) == \
        (False, "aborted", 1)
    assert survivor.end.message.startswith("stopped because rank 1 failed: RuntimeError: "
                                           "injected failure")
    assert [s.step for s in survivor.steps] == [0]  # step 1 was cut short, never recorded
    failed = read_rank_trace(tmp_path / "run" / "rank-1.jsonl")
    assert (failed.end.complete, failed.end.status) == (False, "failed")
    assert "[rank 0] stopped because rank 1 failed" in (tmp_path / "run" / "rank-0.log").read_text()
    manifest = read_manifest(tmp_path / "run")
    assert not manifest.complete and manifest.failure.rank == 1
    with pytest.raises(TraceError, match=r"the run is incomplete \(rank 1 failed: RuntimeError: "
                                         r"injected failure"):
        read_run(tmp_path / "run")


def test_a_rank_that_dies_is_named_and_leaves_no_half_written_trace(tmp_path):
    result = _launch(tmp_path, 4, "2:1:exit")
    assert result.failure.rank == 2 and "exited with status 17" in result.failure.message
    assert result.exit_codes == {0: ABORT_EXIT_CODE, 1: ABORT_EXIT_CODE, 2: 17,
                                 3: ABORT_EXIT_CODE}
    assert max(result.exit_times_s.values()) - result.failure_seen_s < TIMEOUT_S
    run_dir = tmp_path / "run"
    assert not (run_dir / "rank-2.jsonl").exists() and (run_dir / "rank-2.jsonl.partial").exists()
    for rank in (0, 1, 3):
        end = read_rank_trace(run_dir / f"rank-{rank}.jsonl").end
        assert (end.complete, end.failed_rank) == (False, 2)
    assert read_manifest(run_dir).failure.rank == 2
    partial = read_run(run_dir, require_complete=False)
    assert [t.header.rank for t in partial.ranks] == [0, 1, 3]


def test_a_rank_stopped_by_sigterm_closes_its_trace_and_is_named(tmp_path):
    result = _launch(tmp_path, 2, "0:1:term")
    assert result.failure == Failure(0, "terminated by SIGTERM")
    assert result.exit_codes == {0: FAILED_EXIT_CODE, 1: ABORT_EXIT_CODE}
    ends = [read_rank_trace(tmp_path / "run" / f"rank-{r}.jsonl").end for r in (0, 1)]
    assert [(e.complete, e.status, e.failed_rank) for e in ends] == [(False, "failed", 0),
                                                                     (False, "aborted", 0)]


def _store() -> dist.TCPStore:
    return dist.TCPStore("127.0.0.1", 0, 2, is_master=True, wait_for_workers=False,
                         timeout=timedelta(seconds=5))


def test_watchdog_declares_a_silent_rank_dead_after_its_heartbeats_stop():
    store = _store()
    aborted: list[Failure] = []
    event = threading.Event()

    def on_abort(failure: Failure) -> None:
        aborted.append(failure)
        event.set()

    quiet = Watchdog(host="127.0.0.1", port=store.port, world_size=2, rank=1, run_id="t1",
                     timeout_s=2.0, on_abort=lambda f: None)
    quiet._beat()  # rank 1 beats once, then falls silent (as a killed process would)
    watcher = Watchdog(host="127.0.0.1", port=store.port, world_size=2, rank=0, run_id="t1",
                       timeout_s=2.0, on_abort=on_abort)
    start = time.monotonic()
    watcher.start()
    assert event.wait(timeout=5.0), "the watchdog never declared rank 1 dead"
    assert 0.9 <= time.monotonic() - start <= 3.0  # stale_s = timeout_s / 2 = 1 s
    assert aborted[0].rank == 1 and aborted[0].message.startswith("no heartbeat for")
    watcher.stop()


def test_the_first_recorded_failure_stands_and_reaches_the_other_rank():
    store = _store()
    seen: list[Failure] = []
    event = threading.Event()
    watcher = Watchdog(host="127.0.0.1", port=store.port, world_size=2, rank=0, run_id="t2",
                       timeout_s=4.0, on_abort=lambda f: (seen.append(f), event.set()))
    failing = Watchdog(host="127.0.0.1", port=store.port, world_size=2, rank=1, run_id="t2",
                       timeout_s=4.0, on_abort=lambda f: None)
    failing._beat()
    watcher.start()
    first = failing.report("ValueError: boom")
    second = watcher.report("RuntimeError: later", rank=0)
    assert first == second == Failure(1, "ValueError: boom")
    assert event.wait(timeout=2.0) and seen == [Failure(1, "ValueError: boom")]
    assert seen[0].describe() == "rank 1 failed: ValueError: boom"
    watcher.stop()
