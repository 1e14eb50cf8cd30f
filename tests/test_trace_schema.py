"""The measured-run trace schema: atomic writing, strict reading, clear errors, documentation.

    python -m pytest tests/test_trace_schema.py -q
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from simulator import trace_schema as ts

DOC = Path(__file__).resolve().parents[1] / "docs" / "trace-schema.md"


def _header(rank: int = 0, world_size: int = 2) -> ts.HeaderRecord:
    return ts.HeaderRecord(schema_version=ts.SCHEMA_VERSION, rank=rank, world_size=world_size,
                           backend="gloo", device="cpu", hostname="h", pid=1,
                           time_origin_unix_s=1.0e9, scenario_name="toy")


def _p2p(op: str, rank: int, step: int = 0, nbytes: int = 64) -> ts.P2PRecord:
    return ts.P2PRecord(step=step, action="0SEND_F0" if op == "send" else "1RECV_F0", op=op,
                        direction="forward", peer=1 - rank, src_rank=0, dst_rank=1, src_chunk=0,
                        dst_chunk=1, microbatch=0, tensor_names=["b0", "partial"],
                        tensor_bytes=[nbytes // 2, nbytes // 2], total_bytes=nbytes,
                        header_bytes=56, start_s=0.1, end_s=0.2)


def _step(step: int, warmup: bool = False) -> ts.StepRecord:
    return ts.StepRecord(step=step, warmup=warmup, start_s=0.0, end_s=1.0, duration_s=1.0,
                         loss=None, peak_saved_bytes=10, peak_saved_bytes_by_chunk={"0": 10},
                         device_max_allocated_bytes=None)


def _manifest(complete: bool = True, failure: ts.RunFailure | None = None) -> ts.RunManifest:
    return ts.RunManifest(schema_version=ts.SCHEMA_VERSION, complete=complete,
                          scenario_name="toy", scenario={}, world_size=2, backend="gloo",
                          device="cpu", versions={}, num_steps=1, num_warmup_steps=0,
                          started_unix_s=0.0, finished_unix_s=1.0, options={}, failure=failure,
                          trace_files=["rank-0.jsonl", "rank-1.jsonl"])


def _write_run(run_dir: Path, *, recv_bytes: int = 64, complete: bool = True) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    for rank in (0, 1):
        writer = ts.TraceWriter(run_dir / ts.rank_trace_name(rank), _header(rank))
        writer.write(_step(0))
        writer.write(_p2p("send", 0) if rank == 0 else _p2p("recv", 1, nbytes=recv_bytes))
        writer.close(complete=complete, status="ok" if complete else "aborted")
    ts.write_manifest(run_dir, _manifest(complete))
    return run_dir


def test_writer_streams_to_partial_and_renames_only_at_close(tmp_path):
    path = tmp_path / "rank-0.jsonl"
    writer = ts.TraceWriter(path, _header())
    writer.write(_step(0))
    writer.flush()
    assert not path.exists() and writer.partial_path.exists()
    writer.close(complete=True, status="ok")
    assert path.exists() and not writer.partial_path.exists()
    trace = ts.read_rank_trace(path)
    assert trace.end.complete and trace.end.num_records == 2 and trace.steps == [_step(0)]


def test_round_trip_of_a_run_and_transfer_matching(tmp_path):
    run = ts.read_run(_write_run(tmp_path / "run"))
    assert [r.header.rank for r in run.ranks] == [0, 1]
    pairs = ts.match_transfers(run)
    assert len(pairs) == 1 and pairs[0][0].op == "send" and pairs[0][1].op == "recv"
    assert ts.transfer_key(pairs[0][0]) == ts.transfer_key(pairs[0][1]) == (0, "forward", 0, 0)


def test_unmatched_transfer_is_reported(tmp_path):
    run_dir = _write_run(tmp_path / "run")
    (run_dir / "rank-1.jsonl").unlink()
    writer = ts.TraceWriter(run_dir / "rank-1.jsonl", _header(1))
    writer.close(complete=True, status="ok")
    with pytest.raises(ts.TraceError, match=r"1 transfers lack their other side, first "
                                            r"\(step, direction, src_chunk, microbatch\) = "
                                            r"\(0, 'forward', 0, 0\)"):
        ts.match_transfers(ts.read_run(run_dir))


def _corrupt(path: Path, lineno: int, replacement: str) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = replacement
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("line, pattern", [
    ("{not json", r"rank-0\.jsonl line 2: not valid JSON"),
    ("[1, 2]", r"rank-0\.jsonl line 2: expected a JSON object per line, got list"),
    ('{"type": "bogus"}', r"rank-0\.jsonl line 2: unknown record type 'bogus'; valid types: "
                          r"header, compute, p2p, memory, step, end"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, pattern):
    run_dir = _write_run(tmp_path / "run")
    _corrupt(run_dir / "rank-0.jsonl", 2, line)
    with pytest.raises(ts.TraceError, match=pattern):
        ts.read_rank_trace(run_dir / "rank-0.jsonl")


def test_wrong_field_type_and_unknown_field_name_the_field(tmp_path):
    run_dir = _write_run(tmp_path / "run")
    path = run_dir / "rank-0.jsonl"
    record = json.loads(path.read_text().splitlines()[2])
    record["total_bytes"] = "64"
    _corrupt(path, 3, json.dumps(record))
    with pytest.raises(ts.TraceError, match=r"rank-0\.jsonl line 3: p2p record: field "
                                            r"'total_bytes': .*valid integer.*got '64'"):
        ts.read_rank_trace(path)
    del record["total_bytes"]
    record["bytes"] = 64
    _corrupt(path, 3, json.dumps(record))
    with pytest.raises(ts.TraceError, match=r"line 3: p2p record: field '(total_bytes|bytes)'"):
        ts.read_rank_trace(path)


def test_truncated_trace_and_edited_trace_are_refused(tmp_path):
    run_dir = _write_run(tmp_path / "run")
    path = run_dir / "rank-0.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ts.TraceError, match=r"the last record must be the end record; the trace "
                                            r"was cut off"):
        ts.read_rank_trace(path)
    path.write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    with pytest.raises(ts.TraceError, match=r"end record counts 3 records before it but the file "
                                            r"has 2"):
        ts.read_rank_trace(path)
    path.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(ts.TraceError, match=r"line 1: the first record must be the header"):
        ts.read_rank_trace(path)


def test_incomplete_run_is_refused_naming_the_failed_rank(tmp_path):
    run_dir = _write_run(tmp_path / "run", complete=False)
    ts.write_manifest(run_dir, _manifest(False, ts.RunFailure(rank=1, message="RuntimeError: x")))
    with pytest.raises(ts.TraceError, match=r"the run is incomplete \(rank 1 failed: "
                                            r"RuntimeError: x\); measure it again"):
        ts.read_run(run_dir)
    partial = ts.read_run(run_dir, require_complete=False)
    assert [r.end.complete for r in partial.ranks] == [False, False]


def test_missing_manifest_and_missing_rank_file(tmp_path):
    with pytest.raises(ts.TraceError, match=r"no manifest\.json; this is not a measured run"):
        ts.read_run(tmp_path)
    run_dir = _write_run(tmp_path / "run")
    (run_dir / "rank-1.jsonl").unlink()
    with pytest.raises(ts.TraceError, match=r"rank-1\.jsonl is missing although the manifest says "
                                            r"the run is complete"):
        ts.read_run(run_dir)
    assert len(ts.read_run(run_dir, require_complete=False).ranks) == 1


def test_manifest_is_written_atomically_and_validated(tmp_path):
    ts.write_manifest(tmp_path, _manifest())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["world_size"] = "two"
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ts.TraceError, match=r"manifest\.json: field 'world_size'"):
        ts.read_manifest(tmp_path)


RECORD_MODELS = [ts.HeaderRecord, ts.ComputeRecord, ts.P2PRecord, ts.MemoryRecord,
                 ts.StepRecord, ts.EndRecord, ts.RunManifest]


@pytest.mark.parametrize("model", RECORD_MODELS, ids=lambda m: m.__name__)
def test_every_field_is_documented(model):
    documented = set(re.findall(r"`([a-z_0-9]+)`", DOC.read_text()))
    missing = sorted(set(model.model_fields) - documented)
    assert missing == [], f"{model.__name__} fields missing from docs/trace-schema.md: {missing}"


def test_field_lists_are_pinned():
    # A change here is a schema change: bump SCHEMA_VERSION and update docs/trace-schema.md.
    assert list(ts.P2PRecord.model_fields) == [
        "type", "step", "action", "op", "direction", "peer", "src_rank", "dst_rank", "src_chunk",
        "dst_chunk", "microbatch", "tensor_names", "tensor_bytes", "total_bytes", "header_bytes",
        "start_s", "end_s"]
    assert list(ts.ComputeRecord.model_fields) == [
        "type", "step", "action", "kind", "chunk", "microbatch", "start_s", "end_s"]
    assert list(ts.StepRecord.model_fields) == [
        "type", "step", "warmup", "start_s", "end_s", "duration_s", "loss", "peak_saved_bytes",
        "peak_saved_bytes_by_chunk", "device_max_allocated_bytes"]
    assert ts.SCHEMA_VERSION == 1
