"""PyTorch profiler Chrome traces, NCCL path: hand-built fixture traces and every error message.

The NCCL fixture (tests/fixtures/traces/profiler_nccl_pp2) follows trace-formats.md section 3:
rank 0 has 2024+ args ("In msg nelems", "Dst Rank"/"Src Rank"), rank 1 the older spelling ("In
msg size", peer only as group "Rank"); both have a batch whose SendRecv kernel is not linked to
its ops. Times in the fixture are microseconds; base time is shared. The gloo path is tested on
traces produced during the test run (test_ingest_gloo_live.py).
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from simulator.ingest import TraceFormatError, load_trace, read_profiler_traces

TRACES = Path(__file__).parent / "fixtures" / "traces"
NCCL = TRACES / "profiler_nccl_pp2"
US = 1e-6


def test_nccl_fixture_bytes_peers_and_kernel_timing():
    run = load_trace(NCCL)
    assert run.source_format == "torch_profiler" and run.world_size == 2
    expected = {(0, 1): 4096 * 2 + 1024 * 4, (1, 0): 2048 * 4}
    assert run.bytes_by_pair() == expected and run.bytes_by_pair("recv") == expected
    assert run.p2p_mismatches() == []
    assert run.op_counts() == {"all_reduce": 2, "recv": 3, "send": 3}  # "wait" is not an op
    send, batch_send, batch_recv, all_reduce = run.comm_ops(rank=0)
    # Time zero is the earliest event kept: rank 0's PP:0F0 at ts 1010 us.
    assert run.time_origin_epoch_ns == 1_790_000_000_000_000_000 + 1010 * 1000
    assert send.issue_s == pytest.approx((1605 - 1010) * US)
    assert send.start_s == pytest.approx((1700 - 1010) * US)
    assert send.duration_s == pytest.approx(80 * US)
    # Unlinked batch kernel (ts 2500, 120 us) is shared by both ops of the batch.
    assert batch_send.batch_index == batch_recv.batch_index is not None
    assert batch_send.start_s == batch_recv.start_s == pytest.approx((2500 - 1010) * US)
    assert batch_recv.duration_s == pytest.approx(120 * US)
    assert all_reduce.num_bytes == 4000 and all_reduce.duration_s == pytest.approx(200 * US)
    assert all(o.step_index == 3 for o in run.comm_ops())
    assert [s.action for s in run.compute_spans()] == ["0F0", "0B0", "1F0", "1B0"]
    assert run.compute_spans(rank=1)[0].duration_s == pytest.approx(400 * US)
    assert any("pytorch#194693" in note for note in run.notes)


def _edit(tmp_path: Path, rank: int, edit) -> Path:
    """Copy the NCCL fixture into tmp_path with rank `rank`'s text passed through `edit`."""
    out = tmp_path / "run"
    out.mkdir(exist_ok=True)
    for r in (0, 1):
        text = (NCCL / f"rank{r}.json").read_text()
        (out / f"rank{r}.json").write_text(edit(text) if r == rank else text)
    return out


def test_cpu_only_nccl_trace_has_sizes_but_no_timing(tmp_path):
    def drop_kernels(text: str) -> str:
        kept = "\n".join(line for line in text.splitlines() if '"cat": "kernel"' not in line)
        return re.sub(r",(\s*)\]", r"\1]", kept)  # no comma after the last event

    run_dir = _edit(tmp_path, 0, drop_kernels)
    run = load_trace(run_dir)
    assert run.bytes_by_pair()[(0, 1)] == 4096 * 2 + 1024 * 4
    assert all(o.start_s is None for o in run.comm_ops(rank=0))
    assert any("no GPU kernels" in note for note in run.notes)


def test_peer_from_enclosing_c10d_op_when_args_lack_it(tmp_path):
    def strip_peer(text: str) -> str:
        text = text.replace('"Rank": 1, "Dst Rank": 1, "Seq": 1', '"Seq": 1')
        return text.replace('"name": "c10d::send", "pid": 100, "tid": 100, "ts": 1600.0, '
                            '"dur": 50.0, "args": {', '"name": "c10d::send", "pid": 100, "tid": '
                            '100, "ts": 1600.0, "dur": 50.0, "args": {"Concrete Inputs": ["", '
                            '"", "1", "0"], ')
    run = load_trace(_edit(tmp_path, 0, strip_peer))
    assert run.comm_ops(rank=0)[0].peer_rank == 1


def _line_of(path: Path, needle: str) -> int:
    text = path.read_text()
    return text[: text.index(needle)].count("\n") + 1


def test_peer_unknown_names_the_event_line(tmp_path):
    run_dir = _edit(tmp_path, 0,
                    lambda t: t.replace('"Rank": 1, "Dst Rank": 1, "Seq": 1', '"Seq": 1'))
    line = _line_of(run_dir / "rank0.json", '"Collective name": "send", "dtype": "BFloat16"')
    with pytest.raises(TraceFormatError, match=rf"rank0\.json:{line}: cannot tell the peer of "
                       r"this send: .*record_shapes=True"):
        load_trace(run_dir)


def test_truncated_trace_names_the_last_line(tmp_path):
    text = (NCCL / "rank0.json").read_text()
    cut = text[: len(text) * 2 // 3]
    path = tmp_path / "rank0.json"
    path.write_text(cut)
    with pytest.raises(TraceFormatError, match=rf"rank0\.json:{cut.count(chr(10)) + 1}: invalid "
                       r"JSON .*the file ends early"):
        read_profiler_traces([path])


def test_truncated_gzip_names_the_line_where_it_stops(tmp_path):
    data = gzip.compress((NCCL / "rank0.json").read_bytes())
    path = tmp_path / "rank0.json.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TraceFormatError, match=r"rank0\.json\.gz:\d+: the gzip stream ends early"):
        read_profiler_traces([path])
    whole = tmp_path / "rank1.json.gz"
    whole.write_bytes(data.replace(b"rank0.json", b"rank1.json"))
    assert read_profiler_traces([whole]).comm_ops(rank=0)[0].num_bytes == 8192


def test_corrupted_json_is_not_called_truncated(tmp_path):
    path = tmp_path / "rank0.json"
    path.write_text((NCCL / "rank0.json").read_text().replace('"ts": 1600.0,', '"ts": 1600.0,,'))
    line = _line_of(path, ",,")
    with pytest.raises(TraceFormatError, match=rf"rank0\.json:{line}: invalid JSON .*corrupted"):
        read_profiler_traces([path])


EVENT_ERRORS = [
    ("bad_dur", '"ts": 1600.0, "dur": 50.0', '"ts": 1600.0, "dur": "50"',
     r"complete event 'c10d::send' needs a string 'name', numeric 'ts' and 'dur' >= 0"),
    ("bad_dtype", '"dtype": "BFloat16", "In msg nelems": 4096, "Out msg nelems": 4096, "Group '
     'size": 2, "In split', '"dtype": "bf16", "In msg nelems": 4096, "Out msg nelems": 4096, '
     '"Group size": 2, "In split',
     r"record_param_comms 'send' needs an integer 'In msg nelems' and a c10 'dtype'"),
    ("peer_out_of_world", '"Dst Rank": 1', '"Dst Rank": 5',
     r"'record_param_comms' names peer 5, which is not another rank of a world of 2"),
]


@pytest.mark.parametrize("label,old,new,message", EVENT_ERRORS, ids=[e[0] for e in EVENT_ERRORS])
def test_event_errors_name_file_and_line(tmp_path, label, old, new, message):
    run_dir = _edit(tmp_path, 0, lambda t: t.replace(old, new, 1))
    line = _line_of(run_dir / "rank0.json", new)
    with pytest.raises(TraceFormatError, match=rf"rank0\.json:{line}: {message}"):
        load_trace(run_dir)


def _gloo_trace(events: list[dict], **top) -> dict:
    info = {"backend": "gloo", "rank": 0, "world_size": 2, "pg_count": 1,
            "pg_config": [{"pg_name": "0", "pg_desc": "default_pg", "pg_size": 2, "ranks": [0, 1]}]}
    return {"schemaVersion": 1, "distributedInfo": info, "baseTimeNanoseconds": 0,
            "traceEvents": events, **top}


def _write_events(path: Path, trace: dict) -> Path:
    events = ",\n".join(json.dumps(e) for e in trace.pop("traceEvents"))
    head = json.dumps(trace)[:-1]
    path.write_text(f'{head}, "traceEvents": [\n{events}\n]}}\n')
    return path


def test_gloo_without_record_shapes_is_an_error_naming_the_line(tmp_path):
    send = {"ph": "X", "cat": "cpu_op", "name": "c10d::send", "pid": 1, "tid": 1, "ts": 10.0,
            "dur": 5.0, "args": {"External id": 6, "Record function id": 0, "Ev Idx": 6}}
    span = {"ph": "X", "cat": "user_annotation", "name": "gloo:send", "pid": 1, "tid": 1,
            "ts": 11.0, "dur": 2.0, "args": {"External id": 7}}
    path = _write_events(tmp_path / "trace_rank0.json", _gloo_trace([span, send]))
    with pytest.raises(TraceFormatError, match=r"trace_rank0\.json:3: 'c10d::send' has no "
                       r"'Concrete Inputs', so its peer is unknown; gloo traces need "
                       r"torch\.profiler\.profile\(\.\.\., record_shapes=True\)"):
        read_profiler_traces([path])
    send["args"].update({"Concrete Inputs": ["", "", "1", "0"]})
    path = _write_events(tmp_path / "trace_rank0.json", _gloo_trace([span, send]))
    with pytest.raises(TraceFormatError, match=r"trace_rank0\.json:2: the backend span of "
                       r"'gloo:send' has no 'Input Dims'/'Input type'"):
        read_profiler_traces([path])
    span["args"].update({"Input Dims": [[2, 3]], "Input type": ["c10::Float9"]})
    path = _write_events(tmp_path / "trace_rank0.json", _gloo_trace([span, send]))
    with pytest.raises(TraceFormatError, match=r"trace_rank0\.json:2: 'gloo:send' has a tensor of "
                       r"unknown element type 'c10::Float9'"):
        read_profiler_traces([path])
    span["args"]["Input type"] = ["c10::Half"]
    path = _write_events(tmp_path / "trace_rank0.json", _gloo_trace([span, send]))
    assert read_profiler_traces([path]).bytes_by_pair() == {(0, 1): 2 * 3 * 2}


def test_gloo_send_without_backend_span(tmp_path):
    send = {"ph": "X", "cat": "cpu_op", "name": "c10d::send", "pid": 1, "tid": 1, "ts": 10.0,
            "dur": 5.0, "args": {"Concrete Inputs": ["", "", "1", "0"]}}
    path = _write_events(tmp_path / "trace_rank0.json", _gloo_trace([send]))
    with pytest.raises(TraceFormatError, match=r"trace_rank0\.json:2: 'c10d::send' holds no "
                       r"nested gloo:send"):
        read_profiler_traces([path])


def test_file_level_errors(tmp_path):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps({"traceEvents": []}))
    with pytest.raises(TraceFormatError, match=r"trace\.json:1: cannot tell which rank wrote this "
                       r"trace"):
        read_profiler_traces([path])
    path.write_text(json.dumps({"schemaVersion": 1}))
    with pytest.raises(TraceFormatError, match=r"trace\.json:1: a profiler trace is a JSON object "
                       r"with a 'traceEvents' list"):
        read_profiler_traces([path])
    path.write_text('{"distributedInfo": {"rank": "zero"},\n "traceEvents": []}')
    with pytest.raises(TraceFormatError, match=r"trace\.json:1: 'distributedInfo' must be an "
                       r"object with an integer 'rank'"):
        read_profiler_traces([path])
    outside = _gloo_trace([])
    outside["distributedInfo"]["rank"] = 3
    with pytest.raises(TraceFormatError, match=r"z\.json:1: distributedInfo says rank 3 of a "
                       r"world of 2"):
        read_profiler_traces([_write_events(tmp_path / "z.json", outside)])
    first = _write_events(tmp_path / "a.json", _gloo_trace([]))
    second = _write_events(tmp_path / "b.json", _gloo_trace([]))
    with pytest.raises(TraceFormatError, match=r"b\.json: rank 0 was already read from .*a\.json"):
        read_profiler_traces([first, second])
    other = _gloo_trace([])
    other["distributedInfo"].update(rank=1, world_size=4)
    with pytest.raises(TraceFormatError, match=r"disagree on world_size \(\[2, 4\]\)"):
        read_profiler_traces([first, _write_events(tmp_path / "c.json", other)])


def test_rank_from_file_name_without_distributed_info(tmp_path):
    path = tmp_path / "worker_rank3.json"
    path.write_text(json.dumps({"traceEvents": []}))
    run = read_profiler_traces([path])
    assert run.world_size == 4 and run.comm_ops() == []
    assert re.search(r"worker_rank3\.json", run.sources[0])


def test_bytes_level_errors(tmp_path):
    path = tmp_path / "rank0.json"
    path.write_bytes(b"\x1f\x8bnot gzip at all")
    with pytest.raises(TraceFormatError, match=r"rank0\.json: corrupted gzip data"):
        read_profiler_traces([path])
    path.write_bytes(b'{"traceEvents": [\n\n"\xff"]}')
    with pytest.raises(TraceFormatError, match=r"rank0\.json:3: not UTF-8 text"):
        read_profiler_traces([path])
    with pytest.raises(TraceFormatError, match=r": cannot read the trace: Is a directory"):
        read_profiler_traces([tmp_path])
    bad_group = _gloo_trace([])
    bad_group["distributedInfo"]["pg_config"][0]["ranks"] = "0 and 1"
    path = _write_events(tmp_path / "rank0.json", bad_group)
    with pytest.raises(TraceFormatError, match=r"rank0\.json:1: distributedInfo\.pg_config entry "
                       r".* has no list of 'ranks'"):
        read_profiler_traces([path])


GLOO_EVENT_ERRORS = [
    ("not_an_object", [3], r"trace_rank0\.json:2: event is int, not a JSON object"),
    ("peer_not_a_rank", [{"Concrete Inputs": ["", "", "one", "0"]}, {}],
     r"trace_rank0\.json:3: 'c10d::send' peer 'one' \(Concrete Inputs\[2\]\) is not a rank"),
    ("bad_shape", [{}, {"Input Dims": [[2, -3]]}],
     r"trace_rank0\.json:2: 'gloo:send' has a malformed shape \[2, -3\] in 'Input Dims'"),
    ("peer_is_self", [{"Concrete Inputs": ["", "", "0", "0"]}, {}],
     r"trace_rank0\.json:3: 'c10d::send' names peer 0, which is not another rank of group"),
]


@pytest.mark.parametrize("label,changes,message", GLOO_EVENT_ERRORS,
                         ids=[e[0] for e in GLOO_EVENT_ERRORS])
def test_gloo_event_errors_name_the_line(tmp_path, label, changes, message):
    send = {"ph": "X", "cat": "cpu_op", "name": "c10d::send", "pid": 1, "tid": 1, "ts": 10.0,
            "dur": 5.0, "args": {"Concrete Inputs": ["", "", "1", "0"]}}
    span = {"ph": "X", "cat": "user_annotation", "name": "gloo:send", "pid": 1, "tid": 1,
            "ts": 11.0, "dur": 2.0, "args": {"Input Dims": [[4]], "Input type": ["float"]}}
    if changes == [3]:
        events = [3, send, span]
    else:
        send["args"].update(changes[0])
        span["args"].update(changes[1])
        events = [span, send]
    path = _write_events(tmp_path / "trace_rank0.json", _gloo_trace(events))
    with pytest.raises(TraceFormatError, match=message):
        read_profiler_traces([path])
