"""Interpret the events of one profiler trace: communication ops, compute spans and steps.

Two paths (shared/reference/trace-formats.md, sections 0.2 and 3.2-3.4):

- gloo (verified on torch 2.13): a `c10d::send` / `c10d::recv_` cpu_op holds the peer as a group
  rank in `Concrete Inputs[2]`; the nested `gloo:send` / `gloo:recv` span holds the shape and
  dtype (`Input Dims`, `Input type`) and the backend time, waiting for the peer included. gloo
  collectives are `gloo:<name>` spans on the gloo worker thread. All of it needs
  `record_shapes=True`.
- NCCL (from source; no GPU here): a `record_param_comms` cpu_op carries "Collective name",
  "In msg nelems", "dtype" and the peer ("Dst Rank"/"Src Rank" global, or "Rank" in the group);
  the GPU kernel it launched (External id -> cudaLaunchKernel -> correlation) gives the
  transfer time. Sends/receives of a `batch_isend_irecv` have no linked kernel; they are given
  the next unlinked SendRecv kernel launched after them, and share it as one batch.
"""

from __future__ import annotations

import bisect
import math
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from simulator.ingest.dtypes import cpp_type_bytes, scalar_type_bytes
from simulator.ingest.model import (
    P2P_OPS, CommOp, ComputeSpan, canonical_op_name, parse_rank_list,
)

if TYPE_CHECKING:
    from simulator.ingest.torch_profiler import TraceFile

__all__ = ["read_events"]

_C10D_P2P = {"c10d::send": "send", "c10d::recv_": "recv"}
_P2P_CHILDREN = {"gloo:send", "gloo:recv", "record_param_comms"}
_SKIPPED_COLLECTIVES = {"", "init", "wait", "coalesced"}
_STEP_RE = re.compile(r"ProfilerStep#(\d+)")
_RECORD_SHAPES = "gloo traces need torch.profiler.profile(..., record_shapes=True)"


@dataclass(frozen=True)
class _Event:
    index: int
    name: str
    cat: str
    thread: tuple[Any, Any]
    ts: float
    end: float
    args: dict[str, Any]


class _Reader:
    """State for reading one trace file."""

    def __init__(self, trace: TraceFile, origin_ns: int) -> None:
        self.trace = trace
        self.offset_s = (trace.base_ns - origin_ns) / 1e9
        self.events: list[_Event] = []
        self.notes: list[str] = []
        for index, raw in enumerate(trace.events):
            if not isinstance(raw, dict):
                raise trace.error(index, f"event is {type(raw).__name__}, not a JSON object")
            if raw.get("ph") != "X":
                continue
            name, ts, dur = raw.get("name"), raw.get("ts"), raw.get("dur")
            args = raw.get("args", {})
            if not isinstance(name, str) or not _is_number(ts) or not _is_number(dur) or dur < 0 \
                    or not isinstance(args, dict):
                raise trace.error(index, f"complete event {str(name)[:40]!r} needs a string "
                                  f"'name', numeric 'ts' and 'dur' >= 0 and an 'args' object "
                                  f"(got ts={ts!r}, dur={dur!r}); the trace is corrupted")
            self.events.append(_Event(index, name, str(raw.get("cat", "")),
                                      (raw.get("pid"), raw.get("tid")), ts, ts + dur, args))
        by_thread: dict[tuple, list[_Event]] = defaultdict(list)
        for event in self.events:
            by_thread[event.thread].append(event)
        self.by_thread = {k: sorted(v, key=lambda e: (e.ts, -e.end)) for k, v in by_thread.items()}
        self.thread_ts = {k: [e.ts for e in v] for k, v in self.by_thread.items()}
        steps = sorted((e.ts, e.end, int(m[1])) for e in self.events
                       if (m := _STEP_RE.fullmatch(e.name)))
        self.steps = steps
        self.step_starts = [s[0] for s in steps]

    def seconds(self, ts_us: float) -> float:
        return self.offset_s + ts_us / 1e6

    def step_of(self, ts_us: float) -> int | None:
        k = bisect.bisect_right(self.step_starts, ts_us) - 1
        return self.steps[k][2] if k >= 0 and ts_us <= self.steps[k][1] else None

    def child(self, parent: _Event, names: set[str]) -> _Event | None:
        """First event on the parent's thread that starts inside it and has one of `names`."""
        events = self.by_thread[parent.thread]
        for k in range(bisect.bisect_left(self.thread_ts[parent.thread], parent.ts), len(events)):
            event = events[k]
            if event.ts > parent.end:
                return None
            if event is not parent and event.name in names:
                return event
        return None

    def enclosing(self, inner: _Event, names: set[str]) -> _Event | None:
        """Innermost event on the same thread with one of `names` whose span holds `inner`."""
        events = self.by_thread[inner.thread]
        for k in range(bisect.bisect_right(self.thread_ts[inner.thread], inner.ts) - 1, -1, -1):
            event = events[k]
            if event.name in names and event.ts <= inner.ts <= event.end and event is not inner:
                return event
        return None

    def note(self, text: str, warn: bool = False) -> None:
        if text not in self.notes:
            self.notes.append(text)
            if warn:
                warnings.warn(text, stacklevel=4)

    def tensor_bytes(self, event: _Event, what: str) -> int:
        """Bytes of the tensors an event records with record_shapes (`Input Dims`/`Input type`)."""
        dims, types = event.args.get("Input Dims"), event.args.get("Input type")
        if not isinstance(dims, list) or not isinstance(types, list):
            raise self.trace.error(event.index, f"{what} {event.name!r} has no 'Input Dims'/"
                                   f"'Input type', so its size is unknown; {_RECORD_SHAPES}")
        total = 0
        for shape, type_name in zip(dims, types):
            item_bytes = cpp_type_bytes(type_name) or scalar_type_bytes(type_name)
            shapes = shape if shape and all(isinstance(s, list) for s in shape) else [shape]
            for one in shapes:
                if item_bytes is None:
                    if one:
                        raise self.trace.error(event.index, f"{event.name!r} has a tensor of "
                                               f"unknown element type {type_name!r}")
                    continue
                if not all(isinstance(n, int) and n >= 0 for n in one):
                    raise self.trace.error(event.index, f"{event.name!r} has a malformed "
                                           f"shape {one!r} in 'Input Dims'")
                total += math.prod(one) * item_bytes
        return total

    def concrete_peer(self, event: _Event) -> int:
        """The group rank a c10d::send/recv_ names in `Concrete Inputs[2]`."""
        value = event.args["Concrete Inputs"][2]
        try:
            return int(value)
        except (TypeError, ValueError):
            raise self.trace.error(event.index, f"{event.name!r} peer {value!r} (Concrete "
                                   "Inputs[2]) is not a rank; the trace is corrupted") from None

    def p2p_group(self) -> tuple[int, ...] | None:
        """The ranks a gloo send/recv's group rank refers to (gloo events do not name the
        group): the only process group, else the default one, with a warning."""
        groups = self.trace.pg_ranks
        if len(groups) == 1:
            return next(iter(groups.values()))
        if not groups:
            self.note(f"{self.trace.path}: no distributedInfo.pg_config; send/recv peers are "
                      "taken as global ranks")
            return None
        name = self.trace.default_pg or next(iter(groups))
        self.note(f"{self.trace.path}: the trace has {len(groups)} process groups and gloo "
                  f"events do not say which one a send/recv used; peers are read as ranks of "
                  f"group {name!r}", warn=True)
        return groups[name]

    def global_peer(self, event: _Event, local: int, group: tuple[int, ...] | None) -> int:
        """The global rank of group rank `local` (`group` None: already global), checked."""
        peer = local if group is None else (group[local] if 0 <= local < len(group) else -1)
        world = self.trace.world_size
        if peer < 0 or (world is not None and peer >= world) or peer == self.trace.rank:
            where = f"group {list(group)}" if group is not None else f"a world of {world}"
            raise self.trace.error(event.index, f"{event.name!r} names peer {local}, which is "
                                   f"not another rank of {where}; the trace is corrupted")
        return peer


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _gloo_p2p(reader: _Reader, found: list[tuple[_Event, dict[str, Any]]]) -> None:
    """c10d::send / c10d::recv_ with a nested gloo:* span (or an old-style record_param_comms
    that carries only shapes)."""
    for event in reader.events:
        op = _C10D_P2P.get(event.name)
        if op is None:
            continue
        child = reader.child(event, _P2P_CHILDREN)
        if child is not None and "Collective name" in child.args:
            continue  # the NCCL path reads it
        concrete = event.args.get("Concrete Inputs")
        if not isinstance(concrete, list) or len(concrete) < 3:
            raise reader.trace.error(event.index, f"{event.name!r} has no 'Concrete Inputs', so "
                                     f"its peer is unknown; {_RECORD_SHAPES}")
        if child is None:
            raise reader.trace.error(event.index, f"{event.name!r} holds no nested gloo:{op} "
                                     "(or record_param_comms) event, so its size is unknown; "
                                     "the trace is incomplete")
        local = reader.concrete_peer(event)
        group = reader.p2p_group()
        kw = dict(op=op, peer_rank=reader.global_peer(event, local, group),
                  num_bytes=reader.tensor_bytes(child, "the backend span of"),
                  issue_s=reader.seconds(event.ts), group_ranks=group or ())
        if child.name == "record_param_comms":  # NCCL before late 2023: time from its kernel
            kw["kernel_ext"] = child.args.get("External id")
        else:
            kw.update(start_s=reader.seconds(child.ts), end_s=reader.seconds(child.end))
        found.append((event, kw))


def _gloo_collectives(reader: _Reader, found: list[tuple[_Event, dict[str, Any]]]) -> None:
    """gloo:<collective> spans (on the gloo worker thread)."""
    for event in reader.events:
        if not event.name.startswith("gloo:") or event.name in ("gloo:send", "gloo:recv"):
            continue
        op = canonical_op_name(event.name[len("gloo:"):])
        if op == "barrier" and "Input Dims" not in event.args:
            num_bytes = 0
        else:
            num_bytes = reader.tensor_bytes(event, "collective")
        groups = reader.trace.pg_ranks
        group = next(iter(groups.values())) if len(groups) == 1 else ()
        found.append((event, dict(op=op, num_bytes=num_bytes, start_s=reader.seconds(event.ts),
                                  end_s=reader.seconds(event.end), group_ranks=group)))


def _nccl_ops(reader: _Reader, found: list[tuple[_Event, dict[str, Any]]]) -> None:
    """record_param_comms events that carry "Collective name"."""
    for event in reader.events:
        name = event.args.get("Collective name") if event.name == "record_param_comms" else None
        if not isinstance(name, str) or name in _SKIPPED_COLLECTIVES:
            continue
        args = event.args
        op = canonical_op_name(name)
        nelems = args.get("In msg nelems", args.get("In msg size"))
        if op == "recv" and not nelems:
            nelems = args.get("Out msg nelems", args.get("Out msg size"))
        dtype = args.get("dtype")
        item_bytes = scalar_type_bytes(dtype) if isinstance(dtype, str) else None
        if not isinstance(nelems, int) or nelems < 0 or item_bytes is None:
            raise reader.trace.error(event.index, f"record_param_comms {name!r} needs an integer "
                                     f"'In msg nelems' and a c10 'dtype' (got {nelems!r}, "
                                     f"{args.get('dtype')!r}); the trace is corrupted")
        group = parse_rank_list(args.get("Process Group Ranks")) \
            or reader.trace.pg_ranks.get(str(args.get("Process Group Name")), ())
        peer = None
        if op in P2P_OPS:
            peer = args.get("Dst Rank" if op == "send" else "Src Rank")
            if isinstance(peer, int):
                peer = reader.global_peer(event, peer, None)
            else:
                local = args.get("Rank")
                if not isinstance(local, int):
                    parent = reader.enclosing(event, set(_C10D_P2P))
                    concrete = parent.args.get("Concrete Inputs") if parent else None
                    if not isinstance(concrete, list) or len(concrete) < 3:
                        raise reader.trace.error(
                            event.index, f"cannot tell the peer of this {op}: the event has no "
                            "'Dst Rank'/'Src Rank'/'Rank' (PyTorch before mid-2024) and no "
                            "enclosing c10d op with 'Concrete Inputs'; record with "
                            "record_shapes=True")
                    local = reader.concrete_peer(parent)
                peer = reader.global_peer(event, local, group or None)
        found.append((event, dict(op=op, num_bytes=nelems * item_bytes, peer_rank=peer,
                                  issue_s=reader.seconds(event.ts), group_ranks=group,
                                  kernel_ext=args.get("External id"))))


def _attach_kernels(reader: _Reader, found: list[tuple[_Event, dict[str, Any]]],
                    batch_offset: int) -> int:
    """Give NCCL ops the time of their GPU kernel; returns the number of batches formed."""
    if not any("kernel_ext" in kw for _, kw in found):
        return 0
    kernels = {e.args.get("correlation"): e for e in reader.events
               if e.cat == "kernel" and "correlation" in e.args}
    launches: dict[Any, list[_Event]] = defaultdict(list)
    for event in reader.events:
        if "LaunchKernel" in event.name and event.cat.startswith("cuda"):
            launches[event.args.get("External id")].append(event)
    linked: set[Any] = set()
    unlinked_ops = []
    for event, kw in found:
        if "kernel_ext" not in kw:
            continue
        ext = kw["kernel_ext"]
        kernel = next((kernels[c] for launch in (launches.get(ext, []) if ext is not None else [])
                       if (c := launch.args.get("correlation")) in kernels
                       and "nccl" in kernels[c].name.lower()), None)
        if kernel is not None:
            linked.add(kernel.args.get("correlation"))
            kw.update(start_s=reader.seconds(kernel.ts), end_s=reader.seconds(kernel.end))
        elif kw["op"] in P2P_OPS:
            unlinked_ops.append((event, kw))
    if not kernels:
        reader.note(f"{reader.trace.path}: no GPU kernels in the trace, so NCCL ops have no "
                    "transfer timing; profile with ProfilerActivity.CUDA")
        return 0
    free = sorted(((launch.ts, kernels[launch.args.get("correlation")])
                   for group in launches.values() for launch in group
                   if launch.args.get("correlation") in kernels
                   and launch.args.get("correlation") not in linked
                   and "SendRecv" in kernels[launch.args.get("correlation")].name),
                  key=lambda pair: pair[0])
    batches: dict[int, list[dict[str, Any]]] = defaultdict(list)
    k = 0
    for event, kw in sorted(unlinked_ops, key=lambda pair: pair[0].ts):
        while k < len(free) and free[k][0] < event.end:
            k += 1
        if k < len(free):
            kernel = free[k][1]
            kw.update(start_s=reader.seconds(kernel.ts), end_s=reader.seconds(kernel.end))
            batches[k].append(kw)
    num_batches = 0
    for members in batches.values():
        if len(members) > 1:
            for kw in members:
                kw["batch_index"] = batch_offset + num_batches
            num_batches += 1
    if unlinked_ops:
        reader.note(f"{reader.trace.path}: {len(unlinked_ops)} send/recv ops had no linked GPU "
                    "kernel (batch_isend_irecv, pytorch#194693); each was given the next "
                    "unlinked SendRecv kernel launched after it")
    return num_batches


def read_events(trace: TraceFile, origin_ns: int, compute_name_re: re.Pattern[str],
                batch_offset: int) -> tuple[list[CommOp], list[ComputeSpan], list[str], int]:
    """CommOps, ComputeSpans and notes of one trace, and the number of batches it formed."""
    reader = _Reader(trace, origin_ns)
    found: list[tuple[_Event, dict[str, Any]]] = []
    _gloo_p2p(reader, found)
    _gloo_collectives(reader, found)
    _nccl_ops(reader, found)
    num_batches = _attach_kernels(reader, found, batch_offset)

    def sort_key(pair: tuple[_Event, dict[str, Any]]) -> tuple[float, int]:
        return (pair[0].ts, pair[0].index)

    ops = []
    for event, kw in sorted(found, key=sort_key):
        kw.pop("kernel_ext", None)
        ops.append(CommOp(rank=trace.rank, order_index=len(ops),
                          step_index=reader.step_of(event.ts),
                          location=trace.location(event.index), **kw))
    spans = [ComputeSpan(rank=trace.rank, action=m[1], start_s=reader.seconds(e.ts),
                         end_s=reader.seconds(e.end), step_index=reader.step_of(e.ts),
                         location=trace.location(e.index))
             for e in reader.events if (m := compute_name_re.fullmatch(e.name))]
    return ops, spans, reader.notes, num_batches
