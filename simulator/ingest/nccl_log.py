"""Read NCCL debug logs (`NCCL_DEBUG=INFO`, `NCCL_DEBUG_SUBSYS=INIT,COLL,P2P`) into a MeasuredRun.

Why: the log needs no setup beyond environment variables, works with any framework and gives
exact byte counts and peers for every send, receive and collective. It gives no transfer timing:
a COLL line is printed when the host enqueues the op (with NCCL >= 2.26 and
`NCCL_DEBUG_TIMESTAMP_LEVELS=INFO` that moment is kept as `issue_s`).

How peers become global ranks (shared/reference/trace-formats.md, section 1.6): lines are keyed
by (host, pid) because `comm 0x...` is a per-process address; INIT lines map each address to
(rank in the communicator, size, communicator identity = commId, or for split communicators
without one the parent's identity + split count + color); the `root` of a Send/Recv is the
peer's rank in that communicator; a process's global rank is its rank in the first communicator
that spans every process (the default process group's).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from simulator.ingest.dtypes import nccl_datatype_bytes
from simulator.ingest.model import (
    P2P_OPS, CommOp, MeasuredRun, TraceFormatError, assemble_run, canonical_op_name,
)

__all__ = ["read_nccl_logs", "looks_like_nccl_log"]

_PREFIX_RE = re.compile(
    r"(?:\[(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)\] )?"
    r"(?P<host>[\w.-]+):(?P<pid>\d+):(?P<tid>\d+) \[(?P<dev>\d+)\] NCCL INFO (?P<body>.*)")
_COLL_HEAD_RE = re.compile(r"\w+: opCount ")
_COLL_RE = re.compile(
    r"(?P<name>\w+): opCount (?P<op_count>[0-9a-fA-F]+) sendbuff (?P<sendbuff>\S+) "
    r"recvbuff (?P<recvbuff>\S+) count (?P<count>\d+) datatype (?P<datatype>\d+) "
    r"op (?P<red_op>\d+) root (?P<root>-?\d+) comm (?P<comm>0x[0-9a-fA-F]+) "
    r"\[nranks=(?P<nranks>\d+)\] stream (?P<stream>\S+)\s*")
_INIT_HEAD_RE = re.compile(r"comm 0x.* - Init (START|COMPLETE)\s*$")
_INIT_RE = re.compile(
    r"(?:\[Rank \d+\] )?(?:\w+ )?comm (?P<comm>0x[0-9a-fA-F]+) rank (?P<rank>\d+) "
    r"nranks (?P<nranks>\d+) cudaDev -?\d+ (?:nvmlDev -?\d+ )?busId [0-9a-fA-F]+ "
    r"(?:parent (?P<parent>0x[0-9a-fA-F]+|\(nil\)) (?:(?:splitCount|childCount) (?P<split>\d+) )?"
    r"color (?P<color>-?\d+) key -?\d+ )?(?:commId (?P<comm_id>0x[0-9a-fA-F]+) )?"
    r"- Init (?:START|COMPLETE)\s*")
_VERSION_RE = re.compile(r"NCCL version (\S+)")
_COLL_FORMAT = ("<Op>: opCount <hex> sendbuff <ptr> recvbuff <ptr> count <n> datatype <n> "
                "op <n> root <n> comm <ptr> [nranks=<n>] stream <ptr>")

Process = tuple[str, int]
Identity = tuple


@dataclass(frozen=True)
class _Init:
    process: Process
    comm_rank: int
    nranks: int
    identity: Identity
    location: str
    seq: int


@dataclass(frozen=True)
class _Coll:
    process: Process
    name: str
    op_count: int
    count: int
    datatype: int
    root: int
    nranks: int
    comm: str
    init: _Init
    issue_ns: int | None
    path: str
    line: int
    seq: int


def looks_like_nccl_log(text: str) -> bool:
    """True when some line of `text` has NCCL's `host:pid:tid [dev] NCCL INFO` prefix."""
    return _PREFIX_RE.search(text) is not None


def _stamp_ns(stamp: str | None) -> int | None:
    """Nanoseconds since 1970 of a local-time `[%F %T.%Nf]` stamp, read as if it were UTC; only
    differences are used, so the unknown time zone cancels out."""
    if stamp is None:
        return None
    whole, _, fraction = stamp.partition(".")
    delta = datetime.strptime(whole, "%Y-%m-%d %H:%M:%S") - datetime(1970, 1, 1)
    seconds = delta.days * 86400 + delta.seconds
    return seconds * 10**9 + (int(fraction[:9].ljust(9, "0")) if fraction else 0)


def _parse_file(path: Path, inits: list[_Init], colls: list[_Coll], versions: set[str]) -> None:
    """Append the INIT and COLL records of one log file, resolving each comm address against
    the INIT lines seen before it in the same process."""
    current: dict[tuple[Process, str], _Init] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise TraceFormatError(path, None, f"cannot read the NCCL log: {exc.strerror}") from None
    lines = text.splitlines()
    for line_no, line in enumerate(lines, start=1):
        cut = line_no == len(lines) and not text.endswith("\n")
        damage = ("the file ends in the middle of this line: the log was cut short (the process "
                  "died, or the copy is incomplete)" if cut else "the line is malformed or edited")
        prefix = _PREFIX_RE.search(line)
        if prefix is None:
            continue
        body = prefix["body"]
        process = (prefix["host"], int(prefix["pid"]))
        where = f"{path}:{line_no}"
        if _COLL_HEAD_RE.match(body):
            match = _COLL_RE.fullmatch(body)
            if match is None:
                raise TraceFormatError(
                    path, line_no, f"COLL line {body[:60]!r}... does not have NCCL's form "
                    f"'{_COLL_FORMAT}'; {damage}; use the log exactly as NCCL wrote it")
            init = current.get((process, match["comm"]))
            if init is None:
                raise TraceFormatError(
                    path, line_no, f"{match['name']} on comm {match['comm']} comes before any "
                    f"INIT line for that comm in process {process[0]}:{process[1]}, so its "
                    "ranks are unknown; log with NCCL_DEBUG_SUBSYS=INIT,COLL,P2P")
            colls.append(_Coll(
                process, match["name"], int(match["op_count"], 16), int(match["count"]),
                int(match["datatype"]), int(match["root"]), int(match["nranks"]),
                match["comm"], init, _stamp_ns(prefix["stamp"]), str(path), line_no,
                len(colls)))
        elif _INIT_HEAD_RE.search(body):
            match = _INIT_RE.fullmatch(body)
            if match is None:
                raise TraceFormatError(
                    path, line_no, f"INIT line {body[:60]!r}... does not have any of NCCL "
                    "2.18-2.30's forms ('[<fn> ]comm <ptr> rank <n> nranks <n> cudaDev <n> "
                    "[nvmlDev <n> ]busId <hex> [parent <ptr> ...]commId <hex> - Init "
                    f"COMPLETE'); {damage}")
            if match["comm_id"] is not None:
                identity: Identity = ("id", match["comm_id"])
            elif match["parent"] is not None:
                parent = current.get((process, match["parent"]))
                if parent is None:
                    raise TraceFormatError(
                        path, line_no, f"comm {match['comm']} was split from {match['parent']}, "
                        "which has no INIT line earlier in this process; the log must start "
                        "at process start (NCCL_DEBUG_SUBSYS=INIT,COLL,P2P)")
                identity = ("split", parent.identity, match["split"], int(match["color"]))
            else:
                raise TraceFormatError(
                    path, line_no, "INIT line has neither 'commId' nor 'parent', so the "
                    "communicator cannot be matched across processes")
            init = _Init(process, int(match["rank"]), int(match["nranks"]), identity, where,
                         len(inits))
            if int(match["rank"]) >= int(match["nranks"]):
                raise TraceFormatError(path, line_no, f"rank {match['rank']} is not below "
                                       f"nranks {match['nranks']}; the line is corrupted")
            current[(process, match["comm"])] = init
            inits.append(init)
        else:
            version = _VERSION_RE.search(body)
            if version:
                versions.add(version[1])


def _members(inits: list[_Init]) -> dict[Identity, dict[int, _Init]]:
    """identity -> {rank in the communicator: its INIT record}, checking that no two processes
    claim one rank."""
    members: dict[Identity, dict[int, _Init]] = {}
    for init in inits:
        ranks = members.setdefault(init.identity, {})
        other = ranks.get(init.comm_rank)
        if other is not None and other.process != init.process:
            raise TraceFormatError(
                init.location, None, f"process {init.process[0]}:{init.process[1]} claims rank "
                f"{init.comm_rank} of a communicator that {other.location} (process "
                f"{other.process[0]}:{other.process[1]}) also claims; the logs mix two jobs")
        ranks[init.comm_rank] = init
    return members


def _global_ranks(inits: list[_Init], members: dict[Identity, dict[int, _Init]],
                  paths: Sequence[Path]) -> dict[Process, int]:
    """Each process's rank in the first communicator that spans every process."""
    processes = list(dict.fromkeys(init.process for init in inits))
    names = ", ".join(f"{h}:{p}" for h, p in processes)
    for init in sorted({min(r.values(), key=lambda i: i.seq) for r in members.values()},
                       key=lambda i: i.seq):
        ranks = members[init.identity]
        if init.nranks == len(processes) and len(ranks) == init.nranks:
            return {r.process: rank for rank, r in ranks.items()}
    largest = max(init.nranks for init in inits)
    where = ", ".join(str(p) for p in paths)
    if largest > len(processes):
        raise TraceFormatError(
            where, None, f"a communicator has {largest} ranks but the logs come from only "
            f"{len(processes)} processes ({names}); give the log of every rank")
    raise TraceFormatError(
        where, None, f"no communicator spans all {len(processes)} processes ({names}), so their "
        "global ranks are unknown; let the default process group create its communicator (run "
        "one dist.barrier() after init_process_group, or pass device_id=)")


def read_nccl_logs(paths: Sequence[str | Path]) -> MeasuredRun:
    """Read NCCL INFO logs (one file per process, or merged files) into a MeasuredRun.

    Raises:
        TraceFormatError: a COLL or INIT line is malformed or cut short, an op's communicator
            has no INIT line, or the logs do not cover every rank.
    """
    files = [Path(p) for p in paths]
    if not files:
        raise ValueError("read_nccl_logs: no log files given; pass one log per process")
    inits: list[_Init] = []
    colls: list[_Coll] = []
    versions: set[str] = set()
    for path in files:
        _parse_file(path, inits, colls, versions)
    if not inits:
        raise TraceFormatError(
            ", ".join(map(str, files)), None, "no NCCL INIT lines ('comm 0x... rank ... - Init "
            "COMPLETE'), so ranks are unknown; log with NCCL_DEBUG=INFO "
            "NCCL_DEBUG_SUBSYS=INIT,COLL,P2P")
    members = _members(inits)
    global_rank = _global_ranks(inits, members, files)
    batch_sizes = Counter((c.process, c.init.identity, c.op_count) for c in colls)
    batch_index: dict[tuple, int] = {}
    order = Counter[int]()
    origin_ns = min((c.issue_ns for c in colls if c.issue_ns is not None), default=0)
    ops = []
    for coll in colls:
        ops.append(_to_comm_op(coll, members, global_rank, order, batch_sizes, batch_index,
                               origin_ns))
    notes = ["NCCL debug logs carry no transfer timing; issue_s is the host enqueue time, "
             "present only with NCCL_DEBUG_TIMESTAMP_LEVELS=INFO (NCCL >= 2.26)"]
    if versions:
        notes.append("NCCL version " + ", ".join(sorted(versions)))
    return assemble_run("nccl_log", len(global_rank), ops, origin_epoch_ns=None,
                        sources=[str(p) for p in files], notes=notes)


def _to_comm_op(coll: _Coll, members: dict[Identity, dict[int, _Init]],
                global_rank: dict[Process, int], order: Counter[int],
                batch_sizes: Counter, batch_index: dict[tuple, int], origin_ns: int) -> CommOp:
    """One COLL line as a CommOp on its process's global rank."""
    ranks = members[coll.init.identity]
    if coll.nranks != coll.init.nranks:
        raise TraceFormatError(
            coll.path, coll.line, f"[nranks={coll.nranks}] disagrees with the INIT line of comm "
            f"{coll.comm} ({coll.init.location}: nranks {coll.init.nranks}); the log is corrupted")
    item_bytes = nccl_datatype_bytes(coll.datatype)
    if item_bytes is None:
        raise TraceFormatError(
            coll.path, coll.line, f"datatype {coll.datatype} is not an ncclDataType_t (0..11); "
            "the line is corrupted")
    op = canonical_op_name(coll.name)
    peer = None
    if op in P2P_OPS:
        peer_init = ranks.get(coll.root)
        if peer_init is None:
            raise TraceFormatError(
                coll.path, coll.line, f"{coll.name} peer is rank {coll.root} of comm "
                f"{coll.comm}, but no log has an INIT line for that rank; give the log of "
                "every rank")
        peer = global_rank[peer_init.process]
    group = (tuple(global_rank[ranks[i].process] for i in range(coll.nranks))
             if len(ranks) == coll.nranks else ())
    key = (coll.process, coll.init.identity, coll.op_count)
    batch = None
    if batch_sizes[key] > 1:
        batch = batch_index.setdefault(key, len(batch_index))
    rank = global_rank[coll.process]
    order[rank] += 1
    return CommOp(
        rank=rank, op=op, num_bytes=coll.count * item_bytes, order_index=order[rank] - 1,
        peer_rank=peer, group_ranks=group, batch_index=batch,
        issue_s=None if coll.issue_ns is None else (coll.issue_ns - origin_ns) / 1e9,
        location=f"{coll.path}:{coll.line}")
