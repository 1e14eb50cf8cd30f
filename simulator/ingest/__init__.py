"""Trace ingestion: read measured runs in several formats into one internal form.

    from simulator.ingest import load_trace
    run = load_trace("traces/")            # format detected from content
    run.bytes_by_pair()                    # {(src_rank, dst_rank): bytes}
    run.comm_ops(rank=0, op="send")        # CommOp records in issue order

Formats: the real runner's JSONL (`runner_jsonl`), PyTorch profiler Chrome traces
(`torch_profiler`; NCCL and gloo), NCCL `NCCL_DEBUG=INFO` logs (`nccl_log`) and PyTorch Flight
Recorder dumps (`flight_recorder`). docs/traces.md says how to record each and what each lacks.
Pure Python: no torch import.
"""

from __future__ import annotations

from simulator.ingest.detect import FORMATS, detect_format, load_trace
from simulator.ingest.flight_recorder import read_flight_recorder_dumps
from simulator.ingest.model import (
    P2P_OPS, CommOp, ComputeSpan, MeasuredRun, TraceFormatError, canonical_op_name,
)
from simulator.ingest.nccl_log import read_nccl_logs
from simulator.ingest.runner_jsonl import read_runner_jsonl
from simulator.ingest.torch_profiler import read_profiler_traces

__all__ = [
    "FORMATS",
    "P2P_OPS",
    "CommOp",
    "ComputeSpan",
    "MeasuredRun",
    "TraceFormatError",
    "canonical_op_name",
    "detect_format",
    "load_trace",
    "read_flight_recorder_dumps",
    "read_nccl_logs",
    "read_profiler_traces",
    "read_runner_jsonl",
]
