"""Read a run measured by our own real runner (manifest.json + rank-<r>.jsonl) into a MeasuredRun.

Why: the runner's trace is the richest format (tensor names, schedule actions, steps), and
reading it into the same internal form as third-party traces lets one comparison routine serve
all of them. Validation of the files themselves (schema, completeness, file and line of every
problem) is `simulator.trace_schema`'s job; this module only maps records:

- a `p2p` record -> one CommOp: bytes = payload (`total_bytes`) + the small block-id header
  (`header_bytes`, listed as tensor "header"), since both cross the link; start/end as recorded
  (send: issued..seen complete; receive: began waiting..data in place); `step` -> step_index.
- a `compute` record -> one ComputeSpan with its action ("1F0").

Each rank's times count from its own origin (`time_origin_unix_s` in its header); they are put
on one clock here. Warm-up steps are kept; `StepRecord.warmup` in the run says which they are.
"""

from __future__ import annotations

from pathlib import Path

from simulator import trace_schema
from simulator.ingest.model import (
    CommOp, ComputeSpan, MeasuredRun, TraceFormatError, assemble_run,
)

__all__ = ["read_runner_jsonl", "looks_like_runner_run"]


def looks_like_runner_run(path: str | Path) -> bool:
    """True for a run directory (it has manifest.json) or one of its rank-<r>.jsonl files."""
    path = Path(path)
    if path.is_dir():
        return (path / trace_schema.MANIFEST_NAME).is_file()
    return (path.suffix in (".jsonl", ".partial")
            and (path.parent / trace_schema.MANIFEST_NAME).is_file())


def read_runner_jsonl(path: str | Path, *, require_complete: bool = True) -> MeasuredRun:
    """Read a measured run directory (or a file inside it) written by the real runner.

    Raises:
        simulator.trace_schema.TraceError: the manifest or a rank trace is missing, malformed,
            or (with require_complete) the run did not finish; the message names file and line.
    """
    path = Path(path)
    run_dir = path if path.is_dir() else path.parent
    run = trace_schema.read_run(run_dir, require_complete=require_complete)
    origins_ns = {t.header.rank: round(t.header.time_origin_unix_s * 1e9) for t in run.ranks}
    origin_ns = min(origins_ns.values(), default=0)
    ops: list[CommOp] = []
    spans: list[ComputeSpan] = []
    for trace in run.ranks:
        rank = trace.header.rank
        offset_s = (origins_ns[rank] - origin_ns) / 1e9
        for rec in [*trace.p2p, *trace.compute]:
            if rec.end_s < rec.start_s:
                raise TraceFormatError(trace.path, f"step {rec.step}, {rec.action}", f"{rec.type} "
                                       f"record ends ({rec.end_s}) before it starts "
                                       f"({rec.start_s}); the trace is corrupted")
        for index, rec in enumerate(trace.p2p):
            names = tuple(rec.tensor_names) + (("header",) if rec.header_bytes else ())
            ops.append(CommOp(
                rank=rank, op=rec.op, num_bytes=rec.total_bytes + rec.header_bytes,
                order_index=index, peer_rank=rec.peer, start_s=offset_s + rec.start_s,
                end_s=offset_s + rec.end_s, issue_s=offset_s + rec.start_s,
                step_index=rec.step, tensor_names=names,
                location=f"{trace.path} (step {rec.step}, {rec.action})"))
        for rec in trace.compute:
            spans.append(ComputeSpan(
                rank=rank, action=rec.action, start_s=offset_s + rec.start_s,
                end_s=offset_s + rec.end_s, step_index=rec.step,
                location=f"{trace.path} (step {rec.step}, {rec.action})"))
    notes = []
    warmup = sorted({s.step for t in run.ranks for s in t.steps if s.warmup})
    if warmup:
        notes.append(f"steps {warmup} are warm-up steps (kept; filter on step_index)")
    return assemble_run("runner_jsonl", run.manifest.world_size, ops, spans,
                        origin_epoch_ns=origin_ns if run.ranks else None,
                        sources=[str(t.path) for t in run.ranks], notes=notes)
