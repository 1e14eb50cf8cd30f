"""Flight Recorder dumps: hand-built NCCL fixtures (pickle and JSON) read into a MeasuredRun.

The fixtures come from tests/fixtures/traces/make_flight_recorder_fixtures.py; expected bytes
are numel x c10 dtype size of the entries written there (BFloat16 = 2, Float = 4, Long = 8,
Half = 2 bytes).
"""

from __future__ import annotations

import importlib.util
import json
import pickle
from pathlib import Path

import pytest

from simulator.ingest import TraceFormatError, load_trace, read_flight_recorder_dumps

TRACES = Path(__file__).parent / "fixtures" / "traces"


def _generator():
    spec = importlib.util.spec_from_file_location(
        "make_flight_recorder_fixtures", TRACES / "make_flight_recorder_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fixture_files_match_their_generator(tmp_path, monkeypatch):
    generator = _generator()
    monkeypatch.setattr(generator, "HERE", tmp_path)
    for path in generator.write_all():
        relative = path.relative_to(tmp_path)
        assert (TRACES / relative).read_bytes() == path.read_bytes(), relative


def test_pickle_dumps_pp2_dp2_peers_map_through_group_ranks():
    run = load_trace(TRACES / "fr_nccl_pp2dp2")
    assert run.source_format == "flight_recorder" and run.world_size == 4
    act, grad = 4 * 1024 * 2, 2 * 512 * 4
    # Pipeline groups {0,2} and {1,3}: "send 0->1" on rank 0 goes to global rank 2.
    expected = {(0, 2): 2 * act, (2, 0): act + grad, (1, 3): 2 * act, (3, 1): act + grad}
    assert run.bytes_by_pair() == expected
    assert run.bytes_by_pair("recv") == expected
    assert run.p2p_mismatches() == []
    assert run.op_counts() == {"all_reduce": 4, "recv": 8, "send": 8}
    ops = run.comm_ops(rank=0)
    assert [o.op for o in ops] == ["send", "recv", "send", "recv", "all_reduce"]
    assert ops[0].duration_s == pytest.approx(0.5e-3)
    assert ops[1].duration_s == pytest.approx(0.25e-3)
    # The coalesced batch: both ops share the "nccl:coalesced" entry's timing.
    assert ops[2].batch_index == ops[3].batch_index is not None
    assert ops[2].duration_s == ops[3].duration_s == pytest.approx(1.25e-3)
    assert ops[4].group_ranks == (0, 1) and run.comm_ops(rank=3)[4].group_ranks == (2, 3)
    assert ops[4].num_bytes == 1000 * 4 and ops[4].duration_s == pytest.approx(2e-3)
    # Issue times from time_created_ns; rank r's entries were created r microseconds later.
    assert run.time_origin_epoch_ns == 1_795_460_000_000_000_000
    assert run.comm_ops(rank=3)[0].issue_s == pytest.approx(3e-6, abs=1e-15)
    assert ops[1].issue_s == pytest.approx(1e-3)
    assert ops[0].location.endswith("nccl_trace_rank_0 (entries[0])")


def test_json_dumps_zero_times_are_missing():
    run = read_flight_recorder_dumps(sorted((TRACES / "fr_json_pp2").iterdir()))
    assert run.bytes_by_pair() == {(0, 1): 8 * 8}
    assert run.comm_ops(op="all_reduce")[0].num_bytes == 3 * 5 * 2
    assert not run.has_timing
    assert [o.issue_s for o in run.comm_ops(rank=1)] == pytest.approx([300e-9, 1300e-9])


def test_gloo_pg_config_key_mismatch_uses_the_only_group_with_a_warning(tmp_path):
    # torch 2.13 gloo dumps: pg_config keyed "" but entries say process_group ("0", ...).
    dump = {"version": "2.10", "comm_lib_version": "", "pg_status": {},
            "pg_config": {"": {"name": "", "desc": "", "ranks": "[0, 1]"}},
            "entries": [{"profiling_name": "gloo:all_reduce", "process_group": ("0", "default_pg"),
                         "input_sizes": [[256]], "input_dtypes": ["Float"], "is_p2p": False,
                         "collective_seq_id": 1, "p2p_seq_id": 0, "time_created_ns": 5,
                         "time_discovered_started_ns": None}]}
    (tmp_path / "rank_1").write_bytes(pickle.dumps(dump, protocol=2))
    with pytest.warns(UserWarning, match="missing from pg_config"):
        run = read_flight_recorder_dumps([tmp_path / "rank_1"])
    assert run.world_size == 2 and run.comm_ops(rank=1)[0].num_bytes == 1024
    assert any("collectives only" in note for note in run.notes)


def test_truncated_pickle():
    with pytest.raises(TraceFormatError, match=r"fr_truncated/nccl_trace_rank_0 \(byte \d+\): the "
                       r"pickle is cut short or corrupted"):
        load_trace(TRACES / "fr_truncated")


def test_forbidden_global_is_refused_without_running_it():
    with pytest.raises(TraceFormatError, match=r"nccl_trace_rank_0 \(byte \d+\): the pickle "
                       r"refers to os\.system; .* \(refused"):
        read_flight_recorder_dumps([TRACES / "fr_forbidden_global" / "nccl_trace_rank_0"])


def test_truncated_json_dump_names_the_line():
    with pytest.raises(TraceFormatError, match=r"fr_json_truncated/rank_0\.json:\d+: invalid JSON "
                       r".*the file ends early"):
        load_trace(TRACES / "fr_json_truncated")


def _dump_with(entry_changes: dict, pg_ranks: str = "[0, 1]") -> dict:
    entry = {"profiling_name": "nccl:send 0->1", "process_group": ["0", "default_pg"],
             "input_sizes": [[4]], "input_dtypes": ["Float"], "is_p2p": True,
             "collective_seq_id": 0, "p2p_seq_id": 1, "time_created_ns": 10}
    entry.update(entry_changes)
    return {"version": "2.10", "pg_config": {"0": {"name": "0", "desc": "default_pg",
                                                   "ranks": pg_ranks}}, "entries": [entry]}


ENTRY_ERRORS = [
    ("bad_name", {"profiling_name": "send0->1"}, "[0, 1]", "rank_0",
     r"rank_0 \(entries\[0\]\): profiling_name 'send0->1' is not '<backend>:<op>"),
    ("no_peers", {"profiling_name": "nccl:send"}, "[0, 1]", "rank_0",
     r"rank_0 \(entries\[0\]\): profiling_name 'nccl:send' lacks the peers"),
    ("wrong_file_rank", {}, "[0, 1]", "rank_1",
     r"rank_1 \(entries\[0\]\): profiling_name 'nccl:send 0->1' does not fit this file"),
    ("rank_outside_group", {}, "[2, 3]", "rank_0",
     r"rank_0 \(entries\[0\]\): the file name says rank 0, but process group '0' holds ranks "
     r"\[2, 3\]"),
    ("bad_dtype", {"input_dtypes": ["float32"]}, "[0, 1]", "rank_0",
     r"rank_0 \(entries\[0\]\): input dtype 'float32' is not a c10 ScalarType name"),
    ("missing_sizes", {"input_sizes": None}, "[0, 1]", "rank_0",
     r"rank_0 \(entries\[0\]\): 'input_sizes' is None; a Flight Recorder entry needs it"),
    ("unknown_group", {"process_group": ["9", "x"]}, "[0, 1]", "rank_0",
     r"rank_0 \(entries\[0\]\): process group '9' has no 'ranks' in pg_config \(groups: "
     r"\['0', '1'\]\)"),
    ("sizes_dtypes_length", {"input_dtypes": ["Float", "Float"]}, "[0, 1]", "rank_0",
     r"rank_0 \(entries\[0\]\): 1 input_sizes but 2 input_dtypes"),
    ("bad_ranks_string", {}, "0,1", "rank_0",
     r"rank_0 \(entries\[0\]\): pg_config\['0'\]\['ranks'\] is '0,1', not a list of ranks"),
]


@pytest.mark.parametrize("label,changes,ranks,name,message", ENTRY_ERRORS,
                         ids=[e[0] for e in ENTRY_ERRORS])
def test_entry_errors_name_file_and_entry(tmp_path, label, changes, ranks, name, message):
    path = tmp_path / name
    dump = _dump_with(changes, ranks)
    if label == "unknown_group":
        dump["pg_config"]["1"] = {"name": "1", "desc": "other", "ranks": "[0]"}
    path.write_text(json.dumps(dump))
    with pytest.raises(TraceFormatError, match=message):
        read_flight_recorder_dumps([path])


def test_file_level_errors(tmp_path):
    (tmp_path / "dump").write_bytes(pickle.dumps(_dump_with({}), protocol=2))
    with pytest.raises(TraceFormatError, match=r"dump: the file name does not end with the rank"):
        read_flight_recorder_dumps([tmp_path / "dump"])
    (tmp_path / "a_rank_0").write_bytes(pickle.dumps(_dump_with({}), protocol=2))
    (tmp_path / "b_rank_0").write_bytes(pickle.dumps(_dump_with({}), protocol=2))
    with pytest.raises(TraceFormatError, match=r"b_rank_0: rank 0 was already read from"):
        read_flight_recorder_dumps([tmp_path / "a_rank_0", tmp_path / "b_rank_0"])
    (tmp_path / "rank_5").write_bytes(pickle.dumps({"entries": []}, protocol=2))
    with pytest.raises(TraceFormatError, match=r"rank_5: a Flight Recorder dump is a dict with "
                       r"'entries' \(a list\) and 'pg_config'"):
        read_flight_recorder_dumps([tmp_path / "rank_5"])
    (tmp_path / "rank_6").write_text("hello")
    with pytest.raises(TraceFormatError, match=r"rank_6: neither a pickle nor a JSON object"):
        read_flight_recorder_dumps([tmp_path / "rank_6"])
    (tmp_path / "rank_7").write_bytes(b'{"entries": [\xff]}')
    with pytest.raises(TraceFormatError, match=r"rank_7 \(byte 13\): not UTF-8 text"):
        read_flight_recorder_dumps([tmp_path / "rank_7"])
    (tmp_path / "rank_8").write_text('{"entries": [}, "pg_config": {}}')
    with pytest.raises(TraceFormatError, match=r"rank_8:1: invalid JSON at column 14 .*the file is "
                       r"corrupted"):
        read_flight_recorder_dumps([tmp_path / "rank_8"])
    (tmp_path / "rank_9").write_text('{"entries": [3], "pg_config": {}}')
    with pytest.raises(TraceFormatError,
                       match=r"rank_9 \(entries\[0\]\): entry is int, not a dict"):
        read_flight_recorder_dumps([tmp_path / "rank_9"])
    (tmp_path / "rank_10").mkdir()
    with pytest.raises(TraceFormatError, match=r"rank_10: cannot read the dump: Is a directory"):
        read_flight_recorder_dumps([tmp_path / "rank_10"])
