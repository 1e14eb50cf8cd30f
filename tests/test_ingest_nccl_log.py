"""NCCL INFO logs: fixture logs built from NCCL 2.18/2.21/2.29 line formats read into a MeasuredRun.

The expected numbers are count x sizeof(datatype) of the COLL lines in the fixture files (NCCL's
datatype enum: 6 = fp16, 7 = fp32, 9 = bf16, 10 = fp8e4m3); peers and global ranks follow from
the INIT lines as trace-formats.md section 1.6 describes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.ingest import TraceFormatError, load_trace, read_nccl_logs

TRACES = Path(__file__).parent / "fixtures" / "traces"
FP32, FP16, BF16, FP8 = 4, 2, 2, 1


def test_v2_18_two_processes_ranks_come_from_init_lines_not_file_order():
    run = load_trace(TRACES / "nccl_v2.18")
    assert run.source_format == "nccl_log" and run.world_size == 2
    # pid 1002 logs "rank 0" in the world communicator, pid 1001 "rank 1".
    assert run.comm_ops(rank=0)[0].location.endswith("nccl.node1.1002.log:5")
    expected = {(0, 1): 2420736 * FP32 + 257536 * FP16, (1, 0): 2420736 * FP32}
    assert run.bytes_by_pair() == expected
    assert run.bytes_by_pair("recv") == expected
    assert run.p2p_mismatches() == []
    assert run.op_counts() == {"all_reduce": 2, "recv": 3, "send": 3}
    assert [o.op for o in run.comm_ops(rank=1)] == ["all_reduce", "recv", "send", "recv"]
    assert all(o.group_ranks == (0, 1) for o in run.comm_ops())
    assert not run.has_timing and all(o.issue_s is None for o in run.comm_ops())
    assert any("2.18.3" in note for note in run.notes)


def test_v2_21_merged_file_with_launcher_prefixes_batches_and_split_comms():
    run = read_nccl_logs([TRACES / "nccl_v2.21_merged.log"])
    assert run.world_size == 4
    hop = 1048576 * BF16
    assert run.bytes_by_pair() == {(0, 1): hop, (1, 2): hop, (2, 3): hop}
    assert run.p2p_mismatches() == []
    # The same comm address in four processes is four views of one communicator.
    assert {o.group_ranks for o in run.comm_ops(op="send")} == {(0, 1, 2, 3)}
    # Recv+Send sharing an opCount on one process are one NCCL group (a batch).
    middle = [o for r in (1, 2) for o in run.comm_ops(rank=r) if o.is_p2p]
    assert len({o.batch_index for o in middle[:2]}) == 1
    assert middle[0].batch_index is not None and middle[0].batch_index != middle[2].batch_index
    assert all(o.batch_index is None for r in (0, 3) for o in run.comm_ops(rank=r))
    # ncclCommSplit with colors 0/1: data-parallel groups {0,2} and {1,3}.
    big = {o.rank: o for o in run.comm_ops(op="all_reduce") if o.num_bytes == 4096 * FP32}
    assert {r: o.group_ranks for r, o in big.items()} == {0: (0, 2), 1: (1, 3), 2: (0, 2),
                                                          3: (1, 3)}


def test_v2_29_split_without_comm_id_and_timestamps():
    run = load_trace(sorted((TRACES / "nccl_v2.29_ts").iterdir()))
    # Split communicators {0,1} (color 0) and {2,3} (color 1): root 1 is global 1 or 3.
    assert run.bytes_by_pair() == {(0, 1): 2097152 * FP8, (1, 0): 1024 * BF16,
                                   (2, 3): 2097152 * FP8, (3, 2): 1024 * BF16}
    send0, recv0 = run.comm_ops(rank=0)
    recv1, send1 = run.comm_ops(rank=1)
    assert send0.group_ranks == (0, 1) and run.comm_ops(rank=3)[0].group_ranks == (2, 3)
    # Stamps 18:37:02.100000 / .100250 / .300000 / .350000 (issue times, not transfer times).
    assert send0.issue_s == 0.0
    assert recv1.issue_s == pytest.approx(250e-6, abs=1e-12)
    assert send1.issue_s == pytest.approx(0.2, abs=1e-12)
    assert recv0.issue_s == pytest.approx(0.25, abs=1e-12)
    assert send0.start_s is None and send0.duration_s is None
    assert run.time_origin_epoch_ns is None


def test_truncated_last_line_names_file_and_line():
    with pytest.raises(TraceFormatError) as info:
        load_trace(TRACES / "nccl_truncated")
    message = str(info.value)
    assert "nccl_truncated/nccl.node1.1001.log:10:" in message
    assert "ends in the middle of this line" in message


def test_malformed_line_names_file_and_line():
    with pytest.raises(TraceFormatError, match=r"nccl_malformed\.log:22: COLL line 'Send: "
                       r"opCount 1.*the line is malformed or edited"):
        load_trace(TRACES / "nccl_malformed.log")


def _line(host: str, pid: int, body: str) -> str:
    return f"{host}:{pid}:{pid} [0] NCCL INFO {body}"


def _init(pid: int, comm: str, rank: int, nranks: int, comm_id: str) -> str:
    return _line("h", pid, f"comm {comm} rank {rank} nranks {nranks} cudaDev 0 busId 1000 "
                           f"commId {comm_id} - Init COMPLETE")


def _coll(pid: int, name: str, comm: str, nranks: int, root: int = 0, datatype: int = 7,
          op_count: str = "0") -> str:
    return _line("h", pid, f"{name}: opCount {op_count} sendbuff (nil) recvbuff 0x7f00 count 16 "
                           f"datatype {datatype} op 0 root {root} comm {comm} [nranks={nranks}] "
                           "stream 0x9")


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def _pair(tmp_path: Path, extra0: list[str], extra1: list[str]) -> list[Path]:
    """Two processes sharing world comm 0xa (commId 0x1), plus extra lines each."""
    return [_write(tmp_path, "p10.log", [_init(10, "0xa", 0, 2, "0x1"), *extra0]),
            _write(tmp_path, "p11.log", [_init(11, "0xa", 1, 2, "0x1"), *extra1])]


ERRORS = [
    ("coll_before_init",
     lambda t: [_write(t, "a.log", [_coll(10, "AllReduce", "0xa", 1),
                                    _init(10, "0xa", 0, 1, "0x1")])],
     r"a\.log:1: AllReduce on comm 0xa comes before any INIT line"),
    ("unknown_datatype",
     lambda t: _pair(t, [_coll(10, "Send", "0xa", 2, root=1, datatype=12)],
                     [_coll(11, "Recv", "0xa", 2, root=0)]),
     r"p10\.log:2: datatype 12 is not an ncclDataType_t"),
    ("nranks_mismatch",
     lambda t: _pair(t, [_coll(10, "AllReduce", "0xa", 4)], []),
     r"p10\.log:2: \[nranks=4\] disagrees with the INIT line of comm 0xa"),
    ("malformed_init",
     lambda t: [_write(t, "a.log", [_line("h", 10, "comm 0xa rank x nranks 2 cudaDev 0 busId 1 "
                                                   "commId 0x1 - Init COMPLETE")])],
     r"a\.log:1: INIT line .* the line is malformed or edited"),
    ("split_parent_unknown",
     lambda t: [_write(t, "a.log", [_line("h", 10, "ncclCommSplit comm 0xb rank 0 nranks 1 "
                                                   "cudaDev 0 nvmlDev 0 busId 1 parent 0xa "
                                                   "splitCount 1 color 0 key 0 - Init COMPLETE")])],
     r"a\.log:1: comm 0xb was split from 0xa, which has no INIT line"),
    ("no_init_lines",
     lambda t: [_write(t, "a.log", [_line("h", 10, "Bootstrap : Using eth0")])],
     r"a\.log: no NCCL INIT lines"),
    ("missing_rank_log",
     lambda t: [_write(t, "a.log", [_init(10, "0xa", 0, 2, "0x1")])],
     r"a\.log: a communicator has 2 ranks but the logs come from only 1 processes"),
    ("no_world_comm",
     lambda t: [_write(t, "a.log", [_init(10, "0xa", 0, 2, "0x1"), _init(11, "0xa", 1, 2, "0x1"),
                                    _init(11, "0xb", 0, 2, "0x2"), _init(12, "0xb", 1, 2, "0x2")])],
     r"a\.log: no communicator spans all 3 processes"),
    ("two_jobs",
     lambda t: [_write(t, "a.log", [_init(10, "0xa", 0, 2, "0x1"), _init(11, "0xa", 0, 2, "0x1")])],
     r"a\.log:2: process h:11 claims rank 0 of a communicator that .*a\.log:1"),
    ("init_without_comm_id",
     lambda t: [_write(t, "a.log", [_line("h", 10, "comm 0xa rank 0 nranks 1 cudaDev 0 busId 1 "
                                                   "- Init COMPLETE")])],
     r"a\.log:1: INIT line has neither 'commId' nor 'parent'"),
    ("rank_not_below_nranks",
     lambda t: [_write(t, "a.log", [_init(10, "0xa", 2, 2, "0x1")])],
     r"a\.log:1: rank 2 is not below nranks 2"),
    ("peer_without_init",
     lambda t: _pair(t, [_init(10, "0xc", 0, 2, "0x7"), _coll(10, "Send", "0xc", 2, root=1)], []),
     r"p10\.log:3: Send peer is rank 1 of comm 0xc, but no log has an INIT line"),
]


@pytest.mark.parametrize("label,make,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_name_file_and_line(tmp_path, label, make, message):
    with pytest.raises(TraceFormatError, match=message):
        read_nccl_logs(make(tmp_path))


def test_no_files_is_a_value_error():
    with pytest.raises(ValueError, match="no log files given"):
        read_nccl_logs([])


def test_unreadable_path(tmp_path):
    with pytest.raises(TraceFormatError, match=r": cannot read the NCCL log: Is a directory"):
        read_nccl_logs([tmp_path])
