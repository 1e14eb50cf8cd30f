"""Read PyTorch profiler (Kineto) Chrome traces, one JSON file per rank, into a MeasuredRun.

Why: the profiler trace is what users already collect, and it is the only format with sizes,
peers and per-transfer timing in one file. This module loads the files (plain or .gz), checks
them, reads rank, world size, process groups and the time base from the trace's metadata, and
points every error at the file and line; `profiler_events` interprets the events (the gloo path
via `c10d::send`/`c10d::recv_` + nested `gloo:*` spans, the NCCL path via `record_param_comms`
and linked GPU kernels). See shared/reference/trace-formats.md, sections 0.2 and 3.

Time: `ts` is in microseconds from `baseTimeNanoseconds` (absolute microseconds in traces that
lack it); all files of a run are put on one clock through that base.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.ingest.model import (
    MeasuredRun, TraceFormatError, assemble_run, parse_rank_list,
)
from simulator.ingest.profiler_events import read_events

__all__ = ["read_profiler_traces", "TraceFile", "load_trace_file", "DEFAULT_COMPUTE_NAME_RE"]

DEFAULT_COMPUTE_NAME_RE = r"PP:(\d+[FIBW]\d+)"
"""Annotations that become ComputeSpans: torch.distributed.pipelining's `PP:<stage><F|I|B|W><mb>`
record_function labels; group 1 is the action string."""

_RANK_RE = re.compile(r"(\d+)(?:\.[A-Za-z]+)*$")
_WS_RE = re.compile(r"\s*")


@dataclass
class TraceFile:
    """One loaded profiler trace: its events plus what its metadata says about the run."""

    path: Path
    text: str
    events: list[Any]
    rank: int
    world_size: int | None
    backend: str | None
    base_ns: int
    pg_ranks: dict[str, tuple[int, ...]] = field(default_factory=dict)
    default_pg: str | None = None
    _offsets: list[int] | None = None

    def line_of(self, index: int) -> int | None:
        """Line (from 1) where traceEvents[index] starts; found only when an error needs it."""
        if self._offsets is None:
            self._offsets = _event_offsets(self.text)
        if index >= len(self._offsets):
            return None
        return self.text.count("\n", 0, self._offsets[index]) + 1

    def error(self, index: int, problem: str) -> TraceFormatError:
        """A TraceFormatError pointing at traceEvents[index]."""
        line = self.line_of(index)
        return TraceFormatError(self.path, line if line else f"traceEvents[{index}]", problem)

    def location(self, index: int) -> str:
        """Provenance string of an event, `path (traceEvents[i])`: cheap for every op, whereas a
        line number needs a scan of the file (done only for errors)."""
        return f"{self.path} (traceEvents[{index}])"


def _event_offsets(text: str) -> list[int]:
    """Character offsets where each element of the top-level "traceEvents" array starts."""
    decoder = json.JSONDecoder()
    pos = _WS_RE.match(text, 0).end() + 1  # past "{"
    offsets: list[int] = []
    while True:
        pos = _WS_RE.match(text, pos).end()
        if pos >= len(text) or text[pos] == "}":
            return offsets
        key, pos = decoder.raw_decode(text, pos)
        pos = _WS_RE.match(text, pos).end() + 1  # past ":"
        pos = _WS_RE.match(text, pos).end()
        if key == "traceEvents" and text.startswith("[", pos):
            pos += 1
            while True:
                pos = _WS_RE.match(text, pos).end()
                if text.startswith("]", pos):
                    pos += 1
                    break
                offsets.append(pos)
                _, pos = decoder.raw_decode(text, pos)
                pos = _WS_RE.match(text, pos).end()
                if text.startswith(",", pos):
                    pos += 1
        else:
            _, pos = decoder.raw_decode(text, pos)
        pos = _WS_RE.match(text, pos).end()
        if text.startswith(",", pos):
            pos += 1


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TraceFormatError(path, None, f"cannot read the trace: {exc.strerror}") from None
    if data[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(data)
        except zlib.error as exc:
            raise TraceFormatError(path, None, f"corrupted gzip data ({exc}); export the trace "
                                   "again") from None
        if not inflater.eof:
            raise TraceFormatError(
                path, raw.count(b"\n") + 1, "the gzip stream ends early here: the file was cut "
                "short while being written; export the trace again")
        data = raw
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TraceFormatError(path, data.count(b"\n", 0, exc.start) + 1,
                               "not UTF-8 text, so not a profiler trace") from None


def load_trace_file(path: str | Path) -> TraceFile:
    """Load and check one profiler trace file (.json or .json.gz).

    Raises:
        TraceFormatError: not JSON (cut short or corrupted), no traceEvents list, malformed
            distributedInfo, or no way to tell the rank.
    """
    path = Path(path)
    text = _read_text(path)
    try:
        trace = json.loads(text)
    except json.JSONDecodeError as exc:
        cut = not text.rstrip().endswith("}")
        raise TraceFormatError(
            path, exc.lineno, f"invalid JSON at column {exc.colno} ({exc.msg}); "
            + ("the file ends early: it was cut short while being written; export it again "
               "with prof.export_chrome_trace(path)" if cut else
               "the file is corrupted; export it again with prof.export_chrome_trace(path)")
        ) from None
    if not isinstance(trace, dict) or not isinstance(trace.get("traceEvents"), list):
        raise TraceFormatError(path, 1, "a profiler trace is a JSON object with a "
                               "'traceEvents' list; this file has none")
    info = trace.get("distributedInfo")
    info_line = text.count("\n", 0, max(text.find('"distributedInfo"'), 0)) + 1
    if info is not None and (not isinstance(info, dict) or not isinstance(info.get("rank"), int)):
        raise TraceFormatError(path, info_line, "'distributedInfo' must be an object with an "
                               "integer 'rank'; the trace is corrupted")
    if info is None:
        match = _RANK_RE.search(path.name)
        if match is None:
            raise TraceFormatError(
                path, 1, "cannot tell which rank wrote this trace: it has no "
                "'distributedInfo' (profile inside an initialised process group) and the file "
                "name does not end with a rank number (name it like trace_rank0.json)")
        info = {"rank": int(match[1])}
    pg_ranks: dict[str, tuple[int, ...]] = {}
    default_pg = None
    for config in info.get("pg_config") or []:
        ranks = parse_rank_list(config.get("ranks")) if isinstance(config, dict) else None
        if ranks is None:
            raise TraceFormatError(path, info_line, f"distributedInfo.pg_config entry {config!r}"
                                   " has no list of 'ranks'; the trace is corrupted")
        name = str(config.get("pg_name", len(pg_ranks)))
        pg_ranks[name] = ranks
        if config.get("pg_desc") == "default_pg" or (default_pg is None and name == "0"):
            default_pg = name
    world = info.get("world_size")
    if isinstance(world, int) and not 0 <= info["rank"] < world:
        raise TraceFormatError(path, info_line, f"distributedInfo says rank {info['rank']} of a "
                               f"world of {world}; the trace is corrupted")
    base = trace.get("baseTimeNanoseconds", 0)
    return TraceFile(
        path=path, text=text, events=trace["traceEvents"], rank=info["rank"],
        world_size=world if isinstance(world, int) else None,
        backend=info.get("backend") if isinstance(info.get("backend"), str) else None,
        base_ns=base if isinstance(base, int) else 0, pg_ranks=pg_ranks, default_pg=default_pg)


def read_profiler_traces(paths: Sequence[str | Path], *,
                         compute_name_re: str = DEFAULT_COMPUTE_NAME_RE) -> MeasuredRun:
    """Read one profiler Chrome trace per rank into a MeasuredRun.

    gloo traces must be recorded with `record_shapes=True` (sizes, dtypes and peers exist only
    then); NCCL traces need no shapes. Annotations matching `compute_name_re` become
    ComputeSpans (group 1 is the action); `ProfilerStep#N` spans give each op its step_index.

    Raises:
        TraceFormatError: a file is malformed or cut short, lacks what its backend needs, or
            two files claim one rank.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise ValueError("read_profiler_traces: no trace files given; pass one per rank")
    name_re = re.compile(compute_name_re)
    sources: dict[int, Path] = {}
    worlds: set[int] = set()
    ops, spans, notes = [], [], []
    origin_ns: int | None = None
    batch_offset = 0
    for path in files:  # one file at a time: only one trace's text is held in memory
        trace = load_trace_file(path)
        if trace.rank in sources:
            raise TraceFormatError(path, None, f"rank {trace.rank} was already read from "
                                   f"{sources[trace.rank]}; give one trace per rank")
        sources[trace.rank] = path
        if trace.world_size is not None:
            worlds.add(trace.world_size)
        if origin_ns is None:
            origin_ns = trace.base_ns  # any shared reference; assemble_run moves time zero
        rank_ops, rank_spans, rank_notes, num_batches = read_events(
            trace, origin_ns, name_re, batch_offset)
        batch_offset += num_batches
        ops += rank_ops
        spans += rank_spans
        notes += rank_notes
    if len(worlds) > 1:
        raise TraceFormatError(", ".join(map(str, files)), None, f"the traces disagree on "
                               f"world_size ({sorted(worlds)}); they come from different runs")
    world = worlds.pop() if worlds else max(
        [max(sources) + 1] + [o.peer_rank + 1 for o in ops if o.peer_rank is not None])
    return assemble_run("torch_profiler", world, ops, spans, origin_epoch_ns=origin_ns,
                        sources=[str(sources[r]) for r in sorted(sources)], notes=notes)
