"""The measured-run trace format: written by the real runner, read by the simulator (no torch).

A run directory holds manifest.json (a RunManifest; `complete` is true only when every rank
finished) and rank-<r>.jsonl per rank: a `header` line, then `compute`, `p2p`, `memory` and
`step` records, then an `end` line. Times are float seconds since the rank's time origin (the
header gives it as Unix time). Files are written atomically: lines stream into
`rank-<r>.jsonl.partial`, renamed to the final name only after the `end` record. Every field is
described in docs/trace-schema.md.

    run = read_run("runs/measure/fig3_toy")           # raises TraceError if incomplete
    for send, recv in match_transfers(run): ...
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from simulator.errors import UserError

__all__ = [
    "SCHEMA_VERSION", "MANIFEST_NAME", "TraceError", "HeaderRecord", "ComputeRecord",
    "P2PRecord", "MemoryRecord", "StepRecord", "EndRecord", "TraceRecord", "RunFailure",
    "RunManifest", "RankTrace", "MeasuredRun", "TraceWriter", "write_json_atomic",
    "write_manifest", "read_manifest", "read_rank_trace", "read_run", "rank_trace_name",
    "transfer_key", "match_transfers",
]

SCHEMA_VERSION = 1
"""Bumped whenever a field changes meaning or a required field is added."""

MANIFEST_NAME = "manifest.json"
"""File name of a run's manifest inside its run directory."""


class TraceError(UserError):
    """A trace or manifest is missing, malformed, or belongs to a run that did not finish."""


class _Record(BaseModel):
    """Every field is described in docs/trace-schema.md (a test keeps the two in step)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True,
                              use_attribute_docstrings=True)


class HeaderRecord(_Record):
    """First line of every rank file: who wrote it and where its clock starts."""

    type: Literal["header"] = "header"
    schema_version: int
    rank: int
    world_size: int
    backend: str
    device: str
    hostname: str
    pid: int
    time_origin_unix_s: float
    """Unix time of the rank's time origin; every *_s field counts from it."""
    scenario_name: str


class ComputeRecord(_Record):
    """One forward or backward of one chunk for one micro-batch."""

    type: Literal["compute"] = "compute"
    step: int
    action: str
    """The schedule action, PyTorch style: "1F0" is the forward of chunk 1, micro-batch 0."""
    kind: Literal["F", "B"]
    chunk: int
    microbatch: int
    start_s: float
    end_s: float


class P2PRecord(_Record):
    """One point-to-point transfer as seen by one side (a send or a receive)."""

    type: Literal["p2p"] = "p2p"
    step: int
    action: str
    op: Literal["send", "recv"]
    direction: Literal["forward", "backward"]
    peer: int
    src_rank: int
    dst_rank: int
    src_chunk: int
    dst_chunk: int
    microbatch: int
    tensor_names: list[str]
    """Wire order: "hidden", "b0".."bN" (block representations), "partial"."""
    tensor_bytes: list[int]
    """numel x element size of each tensor handed to the communication call."""
    total_bytes: int
    header_bytes: int
    """The int64 header of an AttnRes forward transfer (0 otherwise), not in total_bytes."""
    start_s: float
    """Send: when it was issued. Receive: when the rank started waiting for it."""
    end_s: float
    """Send: when the rank saw it complete. Receive: when the data was in place."""


class MemoryRecord(_Record):
    """Bytes saved for backward on this rank, sampled after each forward and each backward."""

    type: Literal["memory"] = "memory"
    step: int
    t_s: float
    event: Literal["forward", "backward"]
    chunk: int
    microbatch: int
    saved_bytes: int
    """Live bytes saved for backward on the rank, storages counted once."""
    chunk_saved_bytes: int
    device_allocated_bytes: int | None


class StepRecord(_Record):
    """One training step: time and memory peaks."""

    type: Literal["step"] = "step"
    step: int
    warmup: bool
    start_s: float
    end_s: float
    duration_s: float
    loss: float | None
    """Mean loss over the step's micro-batches, on the rank running the last chunk; else null."""
    peak_saved_bytes: int
    peak_saved_bytes_by_chunk: dict[str, int]
    """Chunk index (as a string) -> peak bytes that chunk's micro-batches held at once."""
    device_max_allocated_bytes: int | None


class EndRecord(_Record):
    """Last line of a rank file: whether the rank finished."""

    type: Literal["end"] = "end"
    complete: bool
    status: Literal["ok", "failed", "aborted"]
    """ok; failed (this rank raised); aborted (stopped because another rank failed)."""
    message: str
    failed_rank: int | None
    num_records: int
    """Lines before this one, header included: a reader checks that none went missing."""


TraceRecord = Annotated[
    Union[HeaderRecord, ComputeRecord, P2PRecord, MemoryRecord, StepRecord, EndRecord],
    Field(discriminator="type"),
]
_RECORD_ADAPTER: TypeAdapter[Any] = TypeAdapter(TraceRecord)
_RECORD_TYPES = ("header", "compute", "p2p", "memory", "step", "end")


class RunFailure(_Record):
    """Which rank failed first (None if unknown) and why."""

    rank: int | None
    message: str


class RunManifest(_Record):
    """manifest.json of a measured run."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)
    schema_version: int
    kind: Literal["measured-run"] = "measured-run"
    complete: bool
    """True only when every rank finished and wrote its trace."""
    scenario_name: str
    scenario: dict[str, Any]
    world_size: int
    backend: str
    device: str
    versions: dict[str, str]
    num_steps: int
    num_warmup_steps: int
    started_unix_s: float
    finished_unix_s: float | None
    options: dict[str, Any]
    failure: RunFailure | None
    trace_files: list[str]


def rank_trace_name(rank: int) -> str:
    """File name of a rank's trace: rank-<r>.jsonl."""
    return f"rank-{rank}.jsonl"


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON to a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_manifest(run_dir: str | Path, manifest: RunManifest) -> None:
    """Write (or rewrite) manifest.json atomically."""
    write_json_atomic(Path(run_dir) / MANIFEST_NAME, manifest.model_dump(mode="json"))


class TraceWriter:
    """Streams records to `<path>.partial`, renamed to `<path>` at `close` (not thread-safe)."""

    def __init__(self, path: str | Path, header: HeaderRecord) -> None:
        self.path = Path(path)
        self.partial_path = self.path.with_name(self.path.name + ".partial")
        self._handle = open(self.partial_path, "w", encoding="utf-8")
        self._num_records = 0
        self.closed = False
        self.write(header)

    def write(self, record: _Record) -> None:
        """Append one record (one JSON line)."""
        assert not self.closed, "trace already closed"
        self._handle.write(record.model_dump_json())
        self._handle.write("\n")
        self._num_records += 1

    def flush(self) -> None:
        """Push buffered lines to the OS."""
        self._handle.flush()

    def close(self, *, complete: bool, status: str, message: str = "",
              failed_rank: int | None = None) -> None:
        """Write the end record, fsync, and rename the file to its final name."""
        if self.closed:
            return
        self.write(EndRecord(complete=complete, status=status, message=message,
                             failed_rank=failed_rank, num_records=self._num_records))
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self.partial_path, self.path)
        self.closed = True


@dataclass
class RankTrace:
    """One rank's validated trace, records grouped by type."""

    path: Path
    header: HeaderRecord
    end: EndRecord
    compute: list[ComputeRecord] = field(default_factory=list)
    p2p: list[P2PRecord] = field(default_factory=list)
    memory: list[MemoryRecord] = field(default_factory=list)
    steps: list[StepRecord] = field(default_factory=list)


@dataclass
class MeasuredRun:
    """A measured run: its manifest and one trace per rank (rank order)."""

    run_dir: Path
    manifest: RunManifest
    ranks: list[RankTrace]

    def p2p(self) -> list[P2PRecord]:
        """Every p2p record of every rank."""
        return [rec for rank in self.ranks for rec in rank.p2p]

    def measured_steps(self, rank: int = 0) -> list[StepRecord]:
        """Step records of one rank with warm-up steps left out."""
        return [s for s in self.ranks[rank].steps if not s.warmup]


def _describe(exc: ValidationError, tag: str | None = None) -> str:
    err = exc.errors()[0]
    parts = [str(part) for part in err["loc"]]
    if tag is not None and parts[:1] == [tag]:  # the union's discriminator, not a field
        parts = parts[1:]
    loc = ".".join(parts) or "(record)"
    return f"field '{loc}': {err['msg']} (got {err.get('input')!r})"


def _parse_line(path: Path, lineno: int, line: str) -> Any:
    where = f"{path} line {lineno}"
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TraceError(f"{where}: not valid JSON ({exc.msg}); the file is corrupt, "
                         f"measure the run again") from None
    if not isinstance(data, dict):
        raise TraceError(f"{where}: expected a JSON object per line, got {type(data).__name__}")
    elif data.get("type") not in _RECORD_TYPES:
        raise TraceError(f"{where}: unknown record type {data.get('type')!r}; "
                         f"valid types: {', '.join(_RECORD_TYPES)}")
    try:
        return _RECORD_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise TraceError(f"{where}: {data['type']} record: {_describe(exc, data['type'])}") \
            from None


def read_rank_trace(path: str | Path) -> RankTrace:
    """Read and validate one rank-<r>.jsonl; TraceError names the file and line of a problem."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    records = [_parse_line(path, i + 1, line) for i, line in enumerate(lines) if line.strip()]
    if not records or not isinstance(records[0], HeaderRecord):
        raise TraceError(f"{path} line 1: the first record must be the header")
    if records[0].schema_version != SCHEMA_VERSION:
        raise TraceError(f"{path} line 1: schema_version {records[0].schema_version} is not the "
                         f"version this reader knows ({SCHEMA_VERSION}); use a matching "
                         f"attnres-pipesim or measure the run again")
    if not isinstance(records[-1], EndRecord):
        raise TraceError(f"{path} line {len(lines)}: the last record must be the end record; "
                         f"the trace was cut off, measure the run again")
    end = records[-1]
    if end.num_records != len(records) - 1:
        raise TraceError(f"{path}: the end record counts {end.num_records} records before it but "
                         f"the file has {len(records) - 1}; the file was edited or truncated")
    trace = RankTrace(path=path, header=records[0], end=end)
    groups = {"compute": trace.compute, "p2p": trace.p2p, "memory": trace.memory,
              "step": trace.steps}
    for lineno, rec in enumerate(records[1:-1], start=2):
        if rec.type in ("header", "end"):
            raise TraceError(f"{path} line {lineno}: a {rec.type} record may only appear "
                             f"{'first' if rec.type == 'header' else 'last'}")
        groups[rec.type].append(rec)
    return trace


def read_manifest(run_dir: str | Path) -> RunManifest:
    """Read and validate manifest.json of a run directory."""
    path = Path(run_dir) / MANIFEST_NAME
    if not path.is_file():
        raise TraceError(f"{run_dir}: no {MANIFEST_NAME}; this is not a measured run directory "
                         f"(create one with `pipesim measure SCENARIO --out DIR`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TraceError(f"{path}: not valid JSON ({exc.msg})") from None
    try:
        return RunManifest.model_validate(data)
    except ValidationError as exc:
        raise TraceError(f"{path}: {_describe(exc)}") from None


def read_run(run_dir: str | Path, *, require_complete: bool = True) -> MeasuredRun:
    """The manifest and every rank's trace. An unfinished run raises TraceError naming the
    failed rank, unless `require_complete` is False (then missing ranks are skipped)."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    if require_complete and not manifest.complete:
        why = (f"rank {manifest.failure.rank} failed: {manifest.failure.message}"
               if manifest.failure else "it did not finish")
        raise TraceError(f"{run_dir}: the run is incomplete ({why}); measure it again")
    ranks = []
    for rank in range(manifest.world_size):
        path = run_dir / rank_trace_name(rank)
        if not path.is_file():
            if require_complete:
                raise TraceError(f"{run_dir}: {path.name} is missing although the manifest says "
                                 f"the run is complete")
            continue
        trace = read_rank_trace(path)
        if trace.header.rank != rank:
            raise TraceError(f"{path} line 1: header says rank {trace.header.rank}, the file name "
                             f"says rank {rank}")
        if require_complete and not trace.end.complete:
            raise TraceError(f"{path}: rank {rank} did not finish ({trace.end.message})")
        ranks.append(trace)
    return MeasuredRun(run_dir=run_dir, manifest=manifest, ranks=ranks)


def transfer_key(record: P2PRecord) -> tuple[int, str, int, int]:
    """(step, direction, src_chunk, microbatch): the same for a send and its receive."""
    return (record.step, record.direction, record.src_chunk, record.microbatch)


def match_transfers(run: MeasuredRun) -> list[tuple[P2PRecord, P2PRecord]]:
    """Pair every send with its receive; TraceError if one lacks its partner or repeats."""
    sends: dict[tuple[int, str, int, int], P2PRecord] = {}
    recvs: dict[tuple[int, str, int, int], P2PRecord] = {}
    for rec in run.p2p():
        table = sends if rec.op == "send" else recvs
        key = transfer_key(rec)
        if key in table:
            raise TraceError(f"{run.run_dir}: two {rec.op} records for transfer {key}")
        table[key] = rec
    unmatched = sorted(set(sends) ^ set(recvs))
    if unmatched:
        raise TraceError(f"{run.run_dir}: {len(unmatched)} transfers lack their other side, "
                         f"first (step, direction, src_chunk, microbatch) = {unmatched[0]}")
    return [(sends[key], recvs[key]) for key in sorted(sends)]
