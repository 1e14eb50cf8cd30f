"""The real runner's own run directory (manifest.json + rank-<r>.jsonl, written here with
simulator.trace_schema's writer) read into the internal form."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator import trace_schema as ts
from simulator.ingest import TraceFormatError, load_trace, read_runner_jsonl

ORIGIN_UNIX_S = 1_790_000_000.0
HIDDEN, BLOCK, HEADER = 4096, 2048, 16


def _p2p(rank: int, op: str, step: int, start_s: float, end_s: float) -> ts.P2PRecord:
    src, dst = (rank, 1 - rank) if op == "send" else (1 - rank, rank)
    action = f"{src}SEND_F0" if op == "send" else f"{dst}RECV_F0"
    return ts.P2PRecord(step=step, action=action, op=op, direction="forward", peer=1 - rank,
                        src_rank=src, dst_rank=dst, src_chunk=src, dst_chunk=dst, microbatch=0,
                        tensor_names=["hidden", "b0"], tensor_bytes=[HIDDEN, BLOCK],
                        total_bytes=HIDDEN + BLOCK, header_bytes=HEADER, start_s=start_s,
                        end_s=end_s)


def _write_run(run_dir: Path, *, recv_end_s: float = 0.35, complete: bool = True) -> Path:
    run_dir.mkdir()
    for rank in (0, 1):
        header = ts.HeaderRecord(schema_version=ts.SCHEMA_VERSION, rank=rank, world_size=2,
                                 backend="gloo", device="cpu", hostname="h", pid=100 + rank,
                                 time_origin_unix_s=ORIGIN_UNIX_S + 0.5 * rank,
                                 scenario_name="toy")
        writer = ts.TraceWriter(run_dir / ts.rank_trace_name(rank), header)
        for step in (0, 1):
            writer.write(ts.StepRecord(step=step, warmup=step == 0, start_s=0.0 + step,
                                       end_s=0.9 + step, duration_s=0.9, loss=None,
                                       peak_saved_bytes=0, peak_saved_bytes_by_chunk={},
                                       device_max_allocated_bytes=None))
            if rank == 0:
                writer.write(ts.ComputeRecord(step=step, action="0F0", kind="F", chunk=0,
                                              microbatch=0, start_s=0.1 + step, end_s=0.2 + step))
                writer.write(_p2p(0, "send", step, 0.2 + step, 0.3 + step))
            else:
                writer.write(_p2p(1, "recv", step, 0.0 + step, recv_end_s + step))
        writer.close(complete=complete, status="ok")
    ts.write_manifest(run_dir, ts.RunManifest(
        schema_version=ts.SCHEMA_VERSION, complete=complete, scenario_name="toy", scenario={},
        world_size=2, backend="gloo", device="cpu", versions={}, num_steps=2,
        num_warmup_steps=1, started_unix_s=ORIGIN_UNIX_S, finished_unix_s=ORIGIN_UNIX_S + 3,
        options={}, failure=None, trace_files=[ts.rank_trace_name(r) for r in (0, 1)]))
    return run_dir


def test_runner_run_is_read_with_wire_bytes_names_steps_and_one_clock(tmp_path):
    run_dir = _write_run(tmp_path / "run")
    run = load_trace(run_dir)
    assert run.source_format == "runner_jsonl" and run.world_size == 2
    assert run.bytes_by_pair() == {(0, 1): 2 * (HIDDEN + BLOCK + HEADER)}
    assert run.bytes_by_pair("recv") == run.bytes_by_pair() and run.p2p_mismatches() == []
    send = run.comm_ops(rank=0)[0]
    recv = run.comm_ops(rank=1)[0]
    assert send.tensor_names == ("hidden", "b0", "header")
    assert [o.step_index for o in run.comm_ops(rank=0)] == [0, 1]
    # Rank 1's origin is 0.5 s after rank 0's; time zero is rank 0's compute start (0.1 s).
    assert run.time_origin_epoch_ns == round(ORIGIN_UNIX_S * 1e9) + 100_000_000
    assert send.start_s == pytest.approx(0.1) and send.duration_s == pytest.approx(0.1)
    assert recv.start_s == pytest.approx(0.4) and recv.end_s == pytest.approx(0.75)
    assert [s.action for s in run.compute_spans()] == ["0F0", "0F0"]
    assert any("warm-up" in note for note in run.notes)
    assert send.location.endswith("rank-0.jsonl (step 0, 0SEND_F0)")
    assert read_runner_jsonl(run_dir / "rank-1.jsonl").bytes_by_pair() == run.bytes_by_pair()


def test_record_ending_before_it_starts(tmp_path):
    run_dir = _write_run(tmp_path / "run", recv_end_s=-0.5)
    with pytest.raises(TraceFormatError, match=r"rank-1\.jsonl \(step 0, 1RECV_F0\): p2p record "
                       r"ends \(-0\.5\) before it starts \(0\.0\)"):
        read_runner_jsonl(run_dir)


def test_schema_errors_come_from_trace_schema_with_file_and_line(tmp_path):
    run_dir = _write_run(tmp_path / "run")
    path = run_dir / "rank-0.jsonl"
    lines = path.read_text().splitlines()
    lines[2] = lines[2][: len(lines[2]) // 2]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ts.TraceError, match=r"rank-0\.jsonl line 3: not valid JSON"):
        load_trace(run_dir)


def test_incomplete_run_is_refused_unless_asked(tmp_path):
    run_dir = _write_run(tmp_path / "run", complete=False)
    with pytest.raises(ts.TraceError, match="the run is incomplete"):
        load_trace(run_dir)
    with pytest.raises(ts.TraceError, match="did not finish"):
        read_runner_jsonl(run_dir, require_complete=True)
    assert read_runner_jsonl(run_dir, require_complete=False).op_counts() == {"recv": 2, "send": 2}
