"""The internal trace form: canonical op names, run assembly (ranks, order, time zero) and the
helpers validation uses (bytes per pair, op counts, durations, send/recv consistency)."""

from __future__ import annotations

import json

import pytest

from simulator.errors import UserError
from simulator.ingest import CommOp, ComputeSpan, TraceFormatError, canonical_op_name
from simulator.ingest.model import assemble_run


@pytest.mark.parametrize("name,canonical", [
    ("AllReduce", "all_reduce"), ("allreduce", "all_reduce"), ("all_reduce", "all_reduce"),
    ("_allgather_base", "all_gather"), ("all_gather_into_tensor_coalesced", "all_gather"),
    ("ALLGATHER_coalesced", "all_gather"), ("reduce_scatter_tensor_coalesced", "reduce_scatter"),
    ("_reduce_scatter_base", "reduce_scatter"), ("ReduceScatter", "reduce_scatter"),
    ("AlltoAll", "all_to_all"), ("all_to_all_single", "all_to_all"), ("Broadcast", "broadcast"),
    ("Send", "send"), ("recv_", "recv"), ("Recv", "recv"), ("barrier", "barrier"),
    ("Reduce", "reduce"), ("PutSignal", "putsignal"), ("weird op!", "weird_op"),
])
def test_canonical_op_name(name, canonical):
    assert canonical_op_name(name) == canonical


def _op(rank: int, op: str, peer: int | None, num_bytes: int, order: int, **kw) -> CommOp:
    return CommOp(rank=rank, op=op, num_bytes=num_bytes, order_index=order, peer_rank=peer, **kw)


def _run(ops, spans=(), origin=None):
    return assemble_run("test", 3, ops, spans, origin_epoch_ns=origin, sources=["x"],
                        notes=["a", "a", "b"])


def test_assemble_orders_ops_and_moves_time_zero_to_the_earliest_time():
    ops = [_op(1, "recv", 0, 10, 1, start_s=5.0, end_s=6.0),
           _op(1, "send", 2, 7, 0, issue_s=4.5),
           _op(0, "send", 1, 10, 0, start_s=4.0, end_s=4.25, issue_s=3.5)]
    spans = [ComputeSpan(rank=2, action="2F0", start_s=4.0, end_s=4.5)]
    run = _run(ops, spans, origin=1_000_000_000)
    assert run.time_origin_epoch_ns == 1_000_000_000 + 3_500_000_000
    assert [o.op for o in run.comm_ops(rank=1)] == ["send", "recv"]
    assert run.comm_ops(rank=0)[0].issue_s == 0.0 and run.comm_ops(rank=0)[0].start_s == 0.5
    assert run.comm_ops(rank=1)[1].start_s == 1.5 and run.comm_ops(rank=1)[1].duration_s == 1.0
    assert run.compute_spans(rank=2)[0].start_s == 0.5
    assert run.comm_ops_by_rank[2] == () and run.notes == ("a", "b")
    assert run.has_timing


def test_bytes_by_pair_op_counts_and_durations():
    ops = [_op(0, "send", 1, 10, 0, start_s=0.0, end_s=2.0), _op(0, "send", 1, 5, 1),
           _op(1, "recv", 0, 10, 0), _op(1, "recv", 0, 5, 1, duration_s=0.5),
           _op(1, "send", 2, 3, 2), _op(2, "recv", 1, 3, 0),
           _op(2, "all_reduce", None, 100, 1, group_ranks=(0, 1, 2))]
    run = _run(ops)
    assert run.bytes_by_pair() == {(0, 1): 15, (1, 2): 3}
    assert run.bytes_by_pair("recv") == run.bytes_by_pair()
    assert run.op_counts() == {"all_reduce": 1, "recv": 3, "send": 3}
    assert run.op_counts(rank=1) == {"recv": 2, "send": 1}
    assert run.durations_s() == [2.0, 0.5]
    assert run.durations_s(op="recv") == [0.5]
    assert run.p2p_mismatches() == []
    with pytest.raises(ValueError, match="side='both': choose 'send' or 'recv'"):
        run.bytes_by_pair("both")
    data = run.to_json_dict()
    assert json.loads(json.dumps(data)) == data
    assert len(data["comm_ops"]) == len(ops) and data["comm_ops"][0]["peer_rank"] == 1


def test_p2p_mismatches_find_missing_and_resized_messages():
    ops = [_op(0, "send", 1, 10, 0, location="a:1"), _op(0, "send", 1, 6, 1, location="a:2"),
           _op(1, "recv", 0, 10, 0, location="b:1"), _op(1, "recv", 0, 5, 1, location="b:2"),
           _op(1, "send", 2, 3, 2)]
    problems = _run(ops).p2p_mismatches()
    assert problems == [
        "0->1: message 1 is 6 bytes at the sender (a:2) but 5 at the receiver (b:2)",
        "1->2: 1 sends but 0 receives"]


def test_trace_format_error_places():
    assert str(TraceFormatError("f.log", 12, "bad")) == "f.log:12: bad"
    assert str(TraceFormatError("f.pkl", "entries[3]", "bad")) == "f.pkl (entries[3]): bad"
    assert str(TraceFormatError("f", None, "bad")) == "f: bad"
    assert issubclass(TraceFormatError, UserError) and issubclass(TraceFormatError, ValueError)
