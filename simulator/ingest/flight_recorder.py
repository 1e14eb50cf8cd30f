"""Read PyTorch Flight Recorder dumps (pickle or JSON, one file per rank) into a MeasuredRun.

Why: Flight Recorder is cheap and often already on in production (`TORCH_FR_BUFFER_SIZE`); its
ring buffer gives the size, dtype and p2p peer of the last N ops of every rank. Its times are
host enqueue times (`time_created_ns` -> `issue_s`); the only transfer timing is `duration_ms`,
recorded with `TORCH_NCCL_ENABLE_TIMING=1`. With gloo it records collectives only.

Safety: dumps are pickles, and unpickling can run arbitrary code. A Flight Recorder dump holds
only dicts, lists, tuples, strings, numbers, booleans and None, so the unpickler here refuses
every global except a few plain builtin types.

Layout (shared/reference/trace-formats.md, section 4.2): `pg_config[name]["ranks"]` is a string
of global ranks; a p2p peer appears only in `profiling_name` ("nccl:send 0->1",
"nccl:recv 1<-0") as group ranks; a `batch_isend_irecv` leaves one untimed entry per op and then
a "nccl:coalesced" entry with the batch's state and timing, all sharing one sequence id. The
rank of a file is the number its name ends with (`nccl_trace_rank_3`), as `torchfrtrace` reads it.
"""

from __future__ import annotations

import builtins
import io
import json
import math
import pickle
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulator.ingest.dtypes import scalar_type_bytes
from simulator.ingest.model import (
    P2P_OPS, CommOp, MeasuredRun, TraceFormatError, assemble_run, canonical_op_name,
    parse_rank_list,
)

__all__ = ["read_flight_recorder_dumps", "load_dump", "rank_from_file_name"]

_SAFE_BUILTINS = frozenset({"set", "frozenset", "complex", "bytearray", "slice", "range"})
_NAME_RE = re.compile(r"(?P<backend>\w+):(?P<op>\S+)(?: (?P<meta>.*))?")
_RANK_RE = re.compile(r"(\d+)(?:\.[A-Za-z]+)*$")


class _BuiltinsOnlyUnpickler(pickle.Unpickler):
    """An unpickler that resolves no globals beyond a few plain builtin types."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in _SAFE_BUILTINS:
            return getattr(builtins, name)
        raise _ForbiddenGlobal(f"{module}.{name}")


class _ForbiddenGlobal(Exception):
    pass


def rank_from_file_name(path: Path) -> int | None:
    """The number a dump's file name ends with ("nccl_trace_rank_3", "rank_3.json"), or None."""
    match = _RANK_RE.search(path.name)
    return int(match[1]) if match else None


def load_dump(path: str | Path) -> dict[str, Any]:
    """Load one dump (pickle or JSON) as a dict, with the restricted unpickler.

    Raises:
        TraceFormatError: the file is cut short, is not a dump, or names a forbidden global.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TraceFormatError(path, None, f"cannot read the dump: {exc.strerror}") from None
    if data.lstrip()[:1] == b"{":
        try:
            dump = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise TraceFormatError(path, f"byte {exc.start}", "not UTF-8 text, so not a "
                                   "Flight Recorder JSON dump") from None
        except json.JSONDecodeError as exc:
            ends_early = not data.rstrip().endswith(b"}")
            raise TraceFormatError(
                path, exc.lineno, f"invalid JSON at column {exc.colno} ({exc.msg}); "
                + ("the file ends early: the dump was cut short; dump it again"
                   if ends_early else "the file is corrupted; dump it again")) from None
    elif data[:1] == b"\x80":
        stream = io.BytesIO(data)
        try:
            dump = _BuiltinsOnlyUnpickler(stream).load()
        except _ForbiddenGlobal as exc:
            raise TraceFormatError(
                path, f"byte {stream.tell()}", f"the pickle refers to {exc}; a Flight Recorder "
                "dump holds only plain builtins, so this file is not one (refused: unpickling "
                "other objects can run code)") from None
        except (EOFError, pickle.UnpicklingError, ValueError, IndexError, KeyError) as exc:
            raise TraceFormatError(
                path, f"byte {stream.tell()}", f"the pickle is cut short or corrupted ({exc}); "
                "dump it again") from None
    else:
        raise TraceFormatError(path, None, "neither a pickle nor a JSON object, so not a "
                               "Flight Recorder dump")
    if not isinstance(dump, dict) or not isinstance(dump.get("entries"), list) \
            or not isinstance(dump.get("pg_config"), dict):
        raise TraceFormatError(path, None, "a Flight Recorder dump is a dict with 'entries' "
                               "(a list) and 'pg_config' (a dict); this file lacks them")
    return dump


def _field(path: Path, where: str, entry: dict[str, Any], key: str, kind: type | tuple) -> Any:
    value = entry.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        got = "missing" if key not in entry else f"{value!r}"
        raise TraceFormatError(path, where, f"'{key}' is {got}; a Flight Recorder entry needs "
                               "it; the dump is corrupted or from an unsupported version")
    return value


def _group_ranks(path: Path, dump: dict[str, Any], pg_name: str, where: str,
                 notes: list[str]) -> tuple[int, ...]:
    """Global ranks of a process group, from `pg_config[pg_name]["ranks"]`."""
    configs = dump["pg_config"]
    config = configs.get(pg_name)
    if config is None and len(configs) == 1:
        # torch 2.13's gloo dumps key the default group "" while entries say "0" (verified).
        note = (f"process group {pg_name!r} is missing from pg_config; used the dump's only "
                f"group {next(iter(configs))!r} (torch 2.13's gloo dumps have this mismatch)")
        if note not in notes:
            warnings.warn(note, stacklevel=5)
            notes.append(note)
        config = next(iter(configs.values()))
    if not isinstance(config, dict) or "ranks" not in config:
        raise TraceFormatError(path, where, f"process group {pg_name!r} has no 'ranks' in "
                               f"pg_config (groups: {sorted(configs)}); the dump is incomplete")
    ranks = parse_rank_list(config["ranks"])
    if ranks is None:
        raise TraceFormatError(path, where, f"pg_config[{pg_name!r}]['ranks'] is "
                               f"{config['ranks']!r}, not a list of ranks like '[0, 1]'")
    return ranks


def _num_bytes(path: Path, where: str, entry: dict[str, Any]) -> int:
    sizes = _field(path, where, entry, "input_sizes", list)
    dtypes = _field(path, where, entry, "input_dtypes", list)
    if len(sizes) != len(dtypes):
        raise TraceFormatError(path, where, f"{len(sizes)} input_sizes but {len(dtypes)} "
                               "input_dtypes; the dump is corrupted")
    total = 0
    for shape, dtype in zip(sizes, dtypes):
        item_bytes = scalar_type_bytes(dtype) if isinstance(dtype, str) else None
        if item_bytes is None:
            raise TraceFormatError(path, where, f"input dtype {dtype!r} is not a c10 ScalarType "
                                   "name ('Float', 'BFloat16', ...)")
        total += math.prod(shape) * item_bytes
    return total


def _seq_key(entry: dict[str, Any]) -> tuple:
    seq = entry.get("p2p_seq_id") if entry.get("is_p2p") else entry.get("collective_seq_id")
    return (tuple(entry.get("process_group") or ()), bool(entry.get("is_p2p")), seq)


def _time_s(value: Any, origin_ns: int) -> float | None:
    return (value - origin_ns) / 1e9 if isinstance(value, int) and value > 0 else None


def _read_one(path: Path, rank: int, dump: dict[str, Any], origin_ns: int,
              batch_offset: int, notes: list[str]) -> tuple[list[CommOp], int]:
    """CommOps of one rank's dump and the number of coalesced batches found."""
    entries = dump["entries"]
    batch_of: dict[int, tuple[int, float | None]] = {}
    num_batches = 0
    for j, entry in enumerate(entries):
        if isinstance(entry, dict) and str(entry.get("profiling_name", "")).endswith(":coalesced"):
            duration = entry.get("duration_ms")
            duration_s = duration / 1e3 if isinstance(duration, (int, float)) and duration else None
            i = j - 1
            key = _seq_key(entry)
            while i >= 0 and isinstance(entries[i], dict) and _seq_key(entries[i]) == key:
                batch_of[i] = (batch_offset + num_batches, duration_s)
                i -= 1
            num_batches += 1
    ops: list[CommOp] = []
    for i, entry in enumerate(entries):
        where = f"entries[{i}]"
        if not isinstance(entry, dict):
            raise TraceFormatError(path, where, f"entry is {type(entry).__name__}, not a dict")
        name = _field(path, where, entry, "profiling_name", str)
        match = _NAME_RE.fullmatch(name)
        if match is None:
            raise TraceFormatError(path, where, f"profiling_name {name!r} is not "
                                   "'<backend>:<op>[ <peers>]'")
        if match["op"] == "coalesced":
            continue
        group = _field(path, where, entry, "process_group", (list, tuple))
        ranks = _group_ranks(path, dump, str(group[0]) if group else "", where, notes)
        if rank not in ranks:
            raise TraceFormatError(path, where, f"the file name says rank {rank}, but process "
                                   f"group {group[0]!r} holds ranks {list(ranks)}; name each "
                                   "dump by its global rank (nccl_trace_rank_<N>)")
        op = canonical_op_name(match["op"])
        peer = None
        if op in P2P_OPS:
            arrow = r"(\d+)->(\d+)" if op == "send" else r"(\d+)<-(\d+)"
            peers = re.fullmatch(arrow, match["meta"] or "")
            if peers is None:
                raise TraceFormatError(path, where, f"profiling_name {name!r} lacks the peers "
                                       f"('{match['backend']}:send 0->1' / ':recv 1<-0')")
            me, other = int(peers[1]), int(peers[2])
            if me >= len(ranks) or other >= len(ranks) or ranks[me] != rank:
                raise TraceFormatError(
                    path, where, f"profiling_name {name!r} does not fit this file: group "
                    f"{group[0]!r} has ranks {list(ranks)} and the file name says rank {rank}; "
                    "name each dump by its global rank")
            peer = ranks[other]
        batch, batch_duration_s = batch_of.get(i, (None, None))
        duration = entry.get("duration_ms")
        duration_s = duration / 1e3 if isinstance(duration, (int, float)) and duration else None
        ops.append(CommOp(
            rank=rank, op=op, num_bytes=_num_bytes(path, where, entry), order_index=len(ops),
            peer_rank=peer, duration_s=duration_s if batch is None else batch_duration_s,
            issue_s=_time_s(entry.get("time_created_ns"), origin_ns), group_ranks=ranks,
            batch_index=batch, location=f"{path} ({where})"))
    return ops, num_batches


def read_flight_recorder_dumps(paths: Sequence[str | Path]) -> MeasuredRun:
    """Read one Flight Recorder dump per rank (pickle or JSON) into a MeasuredRun.

    Raises:
        TraceFormatError: a dump is cut short or malformed, a file name carries no rank, two
            files claim one rank, or an entry does not fit its process group.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise ValueError("read_flight_recorder_dumps: no dump files given; pass one per rank")
    dumps: dict[int, tuple[Path, dict[str, Any]]] = {}
    for path in files:
        rank = rank_from_file_name(path)
        if rank is None:
            raise TraceFormatError(path, None, "the file name does not end with the rank "
                                   "number; name dumps like nccl_trace_rank_<N> (or rank_<N>)")
        if rank in dumps:
            raise TraceFormatError(path, None, f"rank {rank} was already read from "
                                   f"{dumps[rank][0]}; give one dump per rank")
        dumps[rank] = (path, load_dump(path))
    created = [e.get("time_created_ns") for _, dump in dumps.values() for e in dump["entries"]
               if isinstance(e, dict)]
    created = [t for t in created if isinstance(t, int) and t > 0]
    origin_ns = min(created, default=0)
    notes: list[str] = [
        "Flight Recorder times are host enqueue times (issue_s); duration_s needs "
        "TORCH_NCCL_ENABLE_TIMING=1; ops of one coalesced batch share the batch's duration"]
    ops: list[CommOp] = []
    num_batches = 0
    world = max(dumps) + 1
    for rank in sorted(dumps):
        path, dump = dumps[rank]
        rank_ops, found = _read_one(path, rank, dump, origin_ns, num_batches, notes)
        ops += rank_ops
        num_batches += found
        world = max([world] + [max(o.group_ranks) + 1 for o in rank_ops if o.group_ranks])
        if any(str(e.get("profiling_name", "")).startswith("gloo:")
               for e in dump["entries"] if isinstance(e, dict)):
            notes.append("gloo's Flight Recorder records collectives only, not sends/receives")
    return assemble_run("flight_recorder", world, ops,
                        origin_epoch_ns=origin_ns if created else None,
                        sources=[str(p) for p, _ in dumps.values()], notes=notes)
