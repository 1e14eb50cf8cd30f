"""The one internal form every measured trace is read into: `MeasuredRun`, `CommOp`, `ComputeSpan`.

Validation compares the simulator's predictions (bytes per transfer, traffic per rank pair, when
each send and receive happens) with what a real run recorded. Real runs come in many formats
(the runner's JSONL, PyTorch profiler traces, NCCL debug logs, Flight Recorder dumps) that carry
different subsets of the facts; each reader in this package fills what its format has and leaves
the rest `None` or empty, so the comparison code is written once against this model.

Conventions: ranks are global process ranks; times are float seconds from the earliest time in
the run (`MeasuredRun.time_origin_epoch_ns` anchors that zero on the wall clock when the format
allows); op names are canonical ("send", "recv", "all_reduce", ...; see `canonical_op_name`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from simulator.errors import UserError

__all__ = [
    "P2P_OPS",
    "TraceFormatError",
    "CommOp",
    "ComputeSpan",
    "MeasuredRun",
    "canonical_op_name",
    "parse_rank_list",
    "assemble_run",
]

P2P_OPS: tuple[str, ...] = ("send", "recv")
"""Op names of point-to-point transfers; every other op is a collective."""


class TraceFormatError(UserError):
    """A trace file is malformed, truncated or lacks what its format must carry.

    The message starts with the place: `path:line` for text formats, `path (entries[3])` or
    `path (byte 812)` where a format has no lines.
    """

    def __init__(self, path: str | Path, where: int | str | None, problem: str) -> None:
        self.path = str(path)
        self.where = where
        if isinstance(where, int):
            place = f"{path}:{where}"
        elif where:
            place = f"{path} ({where})"
        else:
            place = str(path)
        super().__init__(f"{place}: {problem}")


_CANONICAL: dict[str, str] = {
    "send": "send", "recv": "recv",
    "allreduce": "all_reduce", "allgather": "all_gather", "reducescatter": "reduce_scatter",
    "alltoall": "all_to_all", "alltoallv": "all_to_all", "broadcast": "broadcast",
    "reduce": "reduce", "gather": "gather", "scatter": "scatter", "barrier": "barrier",
}
_STRIPPED_SUFFIXES = ("coalesced", "base", "intotensor", "tensor", "single")


def canonical_op_name(name: str) -> str:
    """One spelling per operation across formats.

    "AllReduce" (NCCL log), "allreduce" (profiler), "all_reduce" (Flight Recorder),
    "_allgather_base", "all_gather_into_tensor_coalesced" and "recv_" all map to the snake-case
    names in `P2P_OPS` or "all_reduce", "all_gather", "reduce_scatter", "all_to_all",
    "broadcast", "reduce", "gather", "scatter", "barrier". Unknown names are lower-cased with
    runs of other characters turned into "_".
    """
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    changed = True
    while changed and key not in _CANONICAL:
        changed = False
        for suffix in _STRIPPED_SUFFIXES:
            if key.endswith(suffix) and len(key) > len(suffix):
                key = key[: -len(suffix)]
                changed = True
    if key in _CANONICAL:
        return _CANONICAL[key]
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def parse_rank_list(value: Any) -> tuple[int, ...] | None:
    """A process group's global ranks from a list or from the string form "[0, 1]" that
    Flight Recorder and Kineto's on-demand traces write; None when it is neither."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, list) and all(isinstance(r, int) and not isinstance(r, bool) and r >= 0
                                       for r in value):
        return tuple(value)
    return None


@dataclass(frozen=True)
class CommOp:
    """One communication operation as one rank saw it.

    A transfer between two ranks appears twice: a "send" on the source and a "recv" on the
    destination. Timing fields are None where the format has none; `start_s`/`end_s` is the span
    of the transfer itself (GPU kernel, backend span), `issue_s` when the host asked for it.
    Ops launched together (an NCCL group, a coalesced batch) share `batch_index` and the batch's
    timing.
    """

    rank: int
    op: str
    num_bytes: int
    order_index: int
    """Position among this rank's ops, in issue order, from 0."""
    peer_rank: int | None = None
    """Global rank of the other side of a send/recv; None for collectives."""
    start_s: float | None = None
    end_s: float | None = None
    duration_s: float | None = None
    """end_s - start_s when both are known; some formats know only the duration."""
    issue_s: float | None = None
    group_ranks: tuple[int, ...] = ()
    """Global ranks of the process group or communicator the op ran on (empty when unknown)."""
    batch_index: int | None = None
    step_index: int | None = None
    tensor_names: tuple[str, ...] = ()
    location: str = ""
    """Where the op was read from: "path:line" for text formats, "path (traceEvents[i])",
    "path (entries[i])" or "path (step s, action)" for the others."""

    def __post_init__(self) -> None:
        assert self.num_bytes >= 0, self
        assert (self.peer_rank is not None) == (self.op in P2P_OPS), self
        if self.start_s is not None and self.end_s is not None:
            assert self.end_s >= self.start_s, self
            span_s = self.end_s - self.start_s
            if self.duration_s is None:
                object.__setattr__(self, "duration_s", span_s)
            else:
                assert abs(self.duration_s - span_s) <= 1e-9 * max(1.0, span_s), self

    @property
    def is_p2p(self) -> bool:
        """True for "send" and "recv"."""
        return self.op in P2P_OPS

    @property
    def src_dst(self) -> tuple[int, int]:
        """(source rank, destination rank) of a send or recv."""
        assert self.peer_rank is not None, f"{self.op} has no peer"
        return (self.rank, self.peer_rank) if self.op == "send" else (self.peer_rank, self.rank)


@dataclass(frozen=True)
class ComputeSpan:
    """A labelled stretch of compute on one rank: a schedule action ("1F0", "0B3") or a name."""

    rank: int
    action: str
    start_s: float
    end_s: float
    step_index: int | None = None
    location: str = ""

    def __post_init__(self) -> None:
        assert self.end_s >= self.start_s, self

    @property
    def duration_s(self) -> float:
        """end_s - start_s."""
        return self.end_s - self.start_s


@dataclass(frozen=True)
class MeasuredRun:
    """Everything one measured run recorded, per rank, in the internal form."""

    source_format: str
    world_size: int
    comm_ops_by_rank: dict[int, tuple[CommOp, ...]]
    """Every rank 0..world_size-1 is a key; ops in issue order."""
    compute_spans_by_rank: dict[int, tuple[ComputeSpan, ...]]
    time_origin_epoch_ns: int | None = None
    """Wall-clock time (ns since the Unix epoch) of time 0.0; None when the format has none."""
    sources: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    """Caveats the reader found (assumptions it had to make, facts the format lacks)."""

    def comm_ops(self, rank: int | None = None, op: str | None = None) -> list[CommOp]:
        """Ops of one rank (or all, rank by rank), optionally only those named `op`."""
        ranks = range(self.world_size) if rank is None else (rank,)
        return [o for r in ranks for o in self.comm_ops_by_rank.get(r, ())
                if op is None or o.op == op]

    def compute_spans(self, rank: int | None = None) -> list[ComputeSpan]:
        """Compute spans of one rank (or all, rank by rank)."""
        ranks = range(self.world_size) if rank is None else (rank,)
        return [s for r in ranks for s in self.compute_spans_by_rank.get(r, ())]

    def bytes_by_pair(self, side: Literal["send", "recv"] = "send") -> dict[tuple[int, int], int]:
        """Total point-to-point bytes per (source rank, destination rank).

        side="send" counts what senders recorded, side="recv" what receivers recorded; in a
        complete, consistent trace the two agree.
        """
        if side not in P2P_OPS:
            raise ValueError(f"side={side!r}: choose 'send' or 'recv'")
        totals: dict[tuple[int, int], int] = defaultdict(int)
        for o in self.comm_ops(op=side):
            totals[o.src_dst] += o.num_bytes
        return dict(sorted(totals.items()))

    def op_counts(self, rank: int | None = None) -> dict[str, int]:
        """Number of ops per op name, for one rank or the whole run."""
        counts: dict[str, int] = defaultdict(int)
        for o in self.comm_ops(rank):
            counts[o.op] += 1
        return dict(sorted(counts.items()))

    def durations_s(self, op: str | None = None, rank: int | None = None) -> list[float]:
        """Durations of the ops that have one, in rank then issue order."""
        return [o.duration_s for o in self.comm_ops(rank, op) if o.duration_s is not None]

    def p2p_mismatches(self) -> list[str]:
        """Pairs whose sends and receives disagree: the k-th send from a to b must meet the k-th
        receive on b from a with the same byte count. Empty for a consistent trace."""
        sends: dict[tuple[int, int], list[CommOp]] = defaultdict(list)
        recvs: dict[tuple[int, int], list[CommOp]] = defaultdict(list)
        for o in self.comm_ops():
            if o.is_p2p:
                (sends if o.op == "send" else recvs)[o.src_dst].append(o)
        problems = []
        for pair in sorted(set(sends) | set(recvs)):
            sent, received = sends[pair], recvs[pair]
            src, dst = pair
            if len(sent) != len(received):
                problems.append(f"{src}->{dst}: {len(sent)} sends but {len(received)} receives")
                continue
            for k, (s, r) in enumerate(zip(sent, received)):
                if s.num_bytes != r.num_bytes:
                    problems.append(
                        f"{src}->{dst}: message {k} is {s.num_bytes} bytes at the sender "
                        f"({s.location}) but {r.num_bytes} at the receiver ({r.location})")
                    break
        return problems

    @property
    def has_timing(self) -> bool:
        """True when at least one op has a start or a duration."""
        return any(o.start_s is not None or o.duration_s is not None for o in self.comm_ops())

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (lists and dicts), for machine-readable output."""
        return {
            "source_format": self.source_format,
            "world_size": self.world_size,
            "time_origin_epoch_ns": self.time_origin_epoch_ns,
            "sources": list(self.sources),
            "notes": list(self.notes),
            "comm_ops": [{k: list(v) if isinstance(v, tuple) else v
                          for k, v in dataclasses.asdict(o).items()} for o in self.comm_ops()],
            "compute_spans": [dataclasses.asdict(s) for s in self.compute_spans()],
        }


def _shift(value: float | None, by_s: float) -> float | None:
    return None if value is None else value - by_s


def assemble_run(
    source_format: str,
    world_size: int,
    comm_ops: Iterable[CommOp],
    compute_spans: Iterable[ComputeSpan] = (),
    *,
    origin_epoch_ns: int | None = None,
    sources: Iterable[str] = (),
    notes: Iterable[str] = (),
) -> MeasuredRun:
    """Build a `MeasuredRun` from reader output: group by rank, order by `order_index`, and move
    time zero to the earliest time present (times come in relative to `origin_epoch_ns`)."""
    ops = list(comm_ops)
    spans = list(compute_spans)
    times = [t for o in ops for t in (o.issue_s, o.start_s) if t is not None]
    times += [s.start_s for s in spans]
    zero_s = min(times, default=0.0)
    if zero_s:
        ops = [dataclasses.replace(o, issue_s=_shift(o.issue_s, zero_s),
                                   start_s=_shift(o.start_s, zero_s),
                                   end_s=_shift(o.end_s, zero_s)) for o in ops]
        spans = [dataclasses.replace(s, start_s=s.start_s - zero_s, end_s=s.end_s - zero_s)
                 for s in spans]
    if origin_epoch_ns is not None:
        origin_epoch_ns += round(zero_s * 1e9)
    by_rank: dict[int, list[CommOp]] = {r: [] for r in range(world_size)}
    spans_by_rank: dict[int, list[ComputeSpan]] = {r: [] for r in range(world_size)}
    for o in ops:
        assert 0 <= o.rank < world_size, o
        assert o.peer_rank is None or 0 <= o.peer_rank < world_size, o
        by_rank[o.rank].append(o)
    for s in spans:
        assert 0 <= s.rank < world_size, s
        spans_by_rank[s.rank].append(s)
    for rank_ops in by_rank.values():
        rank_ops.sort(key=lambda o: o.order_index)
        assert [o.order_index for o in rank_ops] == list(range(len(rank_ops))), rank_ops[:3]
    return MeasuredRun(
        source_format=source_format,
        world_size=world_size,
        comm_ops_by_rank={r: tuple(v) for r, v in by_rank.items()},
        compute_spans_by_rank={r: tuple(sorted(v, key=lambda s: s.start_s))
                               for r, v in spans_by_rank.items()},
        time_origin_epoch_ns=origin_epoch_ns,
        sources=tuple(sources),
        notes=tuple(dict.fromkeys(notes)),
    )
