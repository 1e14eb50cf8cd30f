"""Tell which trace format a file or directory holds, and read it with the matching reader.

Why: users point `pipesim validate` at whatever their cluster produced; the format should not
be one more thing they must name. Detection looks at content, not names: the first bytes of a
file (a pickle, a JSON object with "traceEvents" or with "entries"/"pg_config", NCCL's
`host:pid:tid [dev] NCCL INFO` prefix) or a run directory's manifest.json. A directory of
several files must hold one format.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from pathlib import Path

from simulator.ingest.flight_recorder import read_flight_recorder_dumps
from simulator.ingest.model import MeasuredRun, TraceFormatError
from simulator.ingest.nccl_log import looks_like_nccl_log, read_nccl_logs
from simulator.ingest.runner_jsonl import looks_like_runner_run, read_runner_jsonl
from simulator.ingest.torch_profiler import read_profiler_traces

__all__ = ["FORMATS", "detect_format", "trace_files", "load_trace"]

FORMATS: tuple[str, ...] = ("runner_jsonl", "torch_profiler", "nccl_log", "flight_recorder")
_HEAD_BYTES = 1 << 16
_FORMAT_HELP = (
    "expected a profiler trace (JSON with 'traceEvents', may be .gz), a Flight Recorder dump "
    "(pickle, or JSON with 'entries'), an NCCL log (lines with 'host:pid:tid [dev] NCCL INFO') "
    "or a runner run directory (with manifest.json)")


def _head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(_HEAD_BYTES)
    if data[:2] == b"\x1f\x8b":
        try:
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, _HEAD_BYTES)
        except zlib.error:
            return b""
    return data


def detect_format(path: str | Path) -> str:
    """The format of one file or directory: one of `FORMATS`.

    Raises:
        FileNotFoundError: the path does not exist.
        TraceFormatError: the content matches no format, or a directory mixes formats.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory")
    if looks_like_runner_run(path):
        return "runner_jsonl"
    if path.is_dir():
        files = trace_files(path)
        if not files:
            raise TraceFormatError(path, None,
                                   f"the directory holds no trace files; {_FORMAT_HELP}")
        found = {f: detect_format(f) for f in files}
        kinds = sorted(set(found.values()))
        if len(kinds) > 1:
            listing = ", ".join(f"{f.name}: {k}" for f, k in found.items())
            raise TraceFormatError(path, None, f"the directory mixes trace formats ({listing}); "
                                   "put each run's files in a directory of their own")
        return kinds[0]
    head = _head(path)
    stripped = head.lstrip()
    if head[:1] == b"\x80":
        return "flight_recorder"
    if stripped[:1] == b"{":
        if b'"traceEvents"' in head or b'"schemaVersion"' in head:
            return "torch_profiler"
        if b'"entries"' in head or b'"pg_config"' in head:
            return "flight_recorder"
    text = head.decode("utf-8", errors="replace")
    if looks_like_nccl_log(text):
        return "nccl_log"
    raise TraceFormatError(path, None, f"cannot tell the trace format; {_FORMAT_HELP}; or pass "
                           "the format explicitly")


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def trace_files(directory: str | Path) -> list[Path]:
    """The regular, non-hidden files of a directory, in natural order (rank2 before rank10)."""
    return sorted((p for p in Path(directory).iterdir()
                   if p.is_file() and not p.name.startswith(".")), key=_natural_key)


def load_trace(paths: str | Path | Sequence[str | Path], format: str | None = None
               ) -> MeasuredRun:
    """Read a measured run in any supported format into a MeasuredRun.

    `paths` is one directory (all its files are one run), one file, or a list of files (one per
    rank or process). `format` (one of `FORMATS`) skips detection.

    Raises:
        TraceFormatError (or trace_schema.TraceError for runner runs): as the readers do.
        ValueError: an unknown `format`.
    """
    items = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not items:
        raise ValueError("load_trace: no paths given; pass a directory or the trace files")
    if format is not None and format not in FORMATS:
        raise ValueError(f"format={format!r} is not a trace format; choose one of "
                         f"{', '.join(FORMATS)}")
    kind = format
    if kind is None:
        kinds = {p: detect_format(p) for p in items}
        if len(set(kinds.values())) > 1:
            listing = ", ".join(f"{p}: {k}" for p, k in kinds.items())
            raise TraceFormatError(listing, None, "the paths hold different trace formats; "
                                   "read each run on its own")
        kind = next(iter(kinds.values()))
    if kind == "runner_jsonl":
        if len(items) != 1:
            raise ValueError("a runner run is read from its directory; pass that one directory")
        return read_runner_jsonl(items[0])
    files = [f for p in items for f in (trace_files(p) if p.is_dir() else [p])]
    if kind == "torch_profiler":
        return read_profiler_traces(files)
    if kind == "nccl_log":
        return read_nccl_logs(files)
    return read_flight_recorder_dumps(files)
