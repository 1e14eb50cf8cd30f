"""Format detection from content, and load_trace's dispatch and argument errors."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from simulator.ingest import TraceFormatError, detect_format, load_trace
from simulator.ingest.detect import trace_files

TRACES = Path(__file__).parent / "fixtures" / "traces"


@pytest.mark.parametrize("relative,expected", [
    ("nccl_v2.18", "nccl_log"),
    ("nccl_v2.21_merged.log", "nccl_log"),
    ("nccl_v2.29_ts/nccl.gpu-node-1.5001.log", "nccl_log"),
    ("fr_nccl_pp2dp2", "flight_recorder"),
    ("fr_nccl_pp2dp2/nccl_trace_rank_0", "flight_recorder"),
    ("fr_json_pp2/rank_0.json", "flight_recorder"),
    ("profiler_nccl_pp2", "torch_profiler"),
    ("profiler_nccl_pp2/rank1.json", "torch_profiler"),
])
def test_detects_each_fixture(relative, expected):
    assert detect_format(TRACES / relative) == expected


def test_detects_gzip_profiler_trace_and_runner_directory(tmp_path):
    gz = tmp_path / "rank0.json.gz"
    gz.write_bytes(gzip.compress((TRACES / "profiler_nccl_pp2" / "rank0.json").read_bytes()))
    assert detect_format(gz) == "torch_profiler"
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "manifest.json").write_text("{}")
    assert detect_format(tmp_path / "run") == "runner_jsonl"


def test_explicit_format_skips_detection_and_must_be_known(tmp_path):
    path = tmp_path / "no_hint.txt"
    shutil.copy(TRACES / "nccl_v2.21_merged.log", path)
    assert load_trace([path], format="nccl_log").world_size == 4
    with pytest.raises(ValueError, match=r"format='nccl' is not a trace format; choose one of "
                       r"runner_jsonl, torch_profiler, nccl_log, flight_recorder"):
        load_trace(path, format="nccl")
    with pytest.raises(ValueError, match="no paths given"):
        load_trace([])


def test_unknown_and_mixed_content(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(TraceFormatError, match=r"notes\.txt: cannot tell the trace format"):
        detect_format(tmp_path / "notes.txt")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(TRACES / "nccl_v2.21_merged.log", mixed / "a.log")
    shutil.copy(TRACES / "fr_nccl_pp2dp2" / "nccl_trace_rank_0", mixed / "rank_0")
    with pytest.raises(TraceFormatError, match=r"mixed: the directory mixes trace formats "
                       r"\(a\.log: nccl_log, rank_0: flight_recorder\)"):
        load_trace(mixed)
    with pytest.raises(TraceFormatError, match="the paths hold different trace formats"):
        load_trace([mixed / "a.log", mixed / "rank_0"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(TraceFormatError, match=r"empty: the directory holds no trace files"):
        detect_format(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        detect_format(tmp_path / "missing")


def test_trace_files_natural_order_skips_hidden(tmp_path):
    for name in ("rank10", "rank2", ".hidden", "rank1"):
        (tmp_path / name).write_text("x")
    assert [p.name for p in trace_files(tmp_path)] == ["rank1", "rank2", "rank10"]


def test_ingest_never_imports_torch():
    code = ("import sys, simulator.ingest as i; i.load_trace(sys.argv[1]); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(TRACES / "profiler_nccl_pp2")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
