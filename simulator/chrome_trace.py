"""A simulated step as a Chrome / Perfetto trace (JSON "traceEvents", times in microseconds).

Layout, so the trace reads like a profiler capture of the real job:
- one process per pipeline rank ("replica d / rank p"), with thread 0 "compute" (an "X" span
  per forward or backward, named like the schedule action, "1F0") and thread 1 "comm" (an "X"
  span per send from posting to delivery, and per receive from the moment the rank asked for
  it until it had it);
- a flow arrow ("s" on the send, "f" bound to the receive span) from every pipeline send to
  its receive;
- a "C" counter per rank for its memory (bytes) and, in a "links" process, per link for its
  utilization (rate / capacity), for the busiest links only.

Load it at https://ui.perfetto.dev or chrome://tracing. Large steps are cut to the replicas
asked for (replica 0 by default).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from simulator.results import SimulationResult

__all__ = ["chrome_trace", "write_chrome_trace"]

_US = 1e6  # trace timestamps are microseconds
_COMPUTE_TID, _COMM_TID = 0, 1


def chrome_trace(result: SimulationResult, *, replicas: tuple[int, ...] = (0,),
                 max_links: int = 32) -> dict[str, Any]:
    """The trace as a JSON-ready dict."""
    wanted = set(replicas)
    P = result.num_stages
    events: list[dict[str, Any]] = []

    def pid(dp: int, pp: int) -> int:
        return dp * P + pp + 1  # pid 0 is the links process

    for rank in result.ranks:
        if rank.dp_index not in wanted:
            continue
        p = pid(rank.dp_index, rank.pp_index)
        name = f"replica {rank.dp_index} / rank {rank.pp_index}"
        events += [_meta("process_name", p, 0, name), _meta("process_sort_index", p, 0, p),
                   _meta("thread_name", p, _COMPUTE_TID, "compute"),
                   _meta("thread_name", p, _COMM_TID, "comm")]
        events += [{"ph": "C", "name": "memory", "pid": p, "ts": t * _US,
                    "args": {"bytes": b}} for t, b in rank.memory_timeline]
    for span in result.spans:
        if span.dp_index in wanted:
            events.append({"ph": "X", "cat": "compute", "pid": pid(span.dp_index, span.pp_index),
                           "tid": _COMPUTE_TID,
                           "name": f"{span.chunk_index}{span.kind}{span.microbatch_index}",
                           "ts": span.start_s * _US, "dur": (span.end_s - span.start_s) * _US,
                           "args": {"chunk": span.chunk_index,
                                    "microbatch": span.microbatch_index}})
    for flow_id, transfer in enumerate(result.transfers):
        if transfer.src_dp in wanted or transfer.dst_dp in wanted:
            events += _transfer_events(transfer, flow_id, pid, wanted)
    events += _link_counters(result, max_links)
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"scenario": result.name, "step_time_s": result.step_time_s}}


def _meta(name: str, pid: int, tid: int, value: object) -> dict[str, Any]:
    key = "sort_index" if name.endswith("sort_index") else "name"
    return {"ph": "M", "name": name, "pid": pid, "tid": tid, "args": {key: value}}


def _transfer_events(transfer: Any, flow_id: int, pid: Any, wanted: set[int]
                     ) -> list[dict[str, Any]]:
    src, dst = pid(transfer.src_dp, transfer.src_pp), pid(transfer.dst_dp, transfer.dst_pp)
    args = {"bytes_per_gpu": transfer.bytes_per_gpu, "flows": transfer.num_flows,
            "to": f"replica {transfer.dst_dp} / rank {transfer.dst_pp}"}
    out: list[dict[str, Any]] = []
    if transfer.src_dp in wanted:
        out.append({"ph": "X", "cat": transfer.kind, "pid": src, "tid": _COMM_TID,
                    "name": transfer.label, "ts": transfer.posted_s * _US,
                    "dur": (transfer.delivered_s - transfer.posted_s) * _US, "args": args})
    if transfer.dst_dp in wanted and not math.isnan(transfer.received_s):
        asked = transfer.recv_posted_s
        out.append({"ph": "X", "cat": transfer.kind, "pid": dst, "tid": _COMM_TID,
                    "name": f"recv {transfer.label}", "ts": asked * _US,
                    "dur": (transfer.received_s - asked) * _US,
                    "args": {"bytes_per_gpu": transfer.bytes_per_gpu}})
        if transfer.kind == "pipeline" and transfer.src_dp in wanted:
            out.append({"ph": "s", "cat": "p2p", "name": transfer.label, "id": flow_id,
                        "pid": src, "tid": _COMM_TID, "ts": transfer.posted_s * _US})
            # inside the receive span, and never before the send: max(asked, posted)
            arrive = max(asked, transfer.posted_s)
            out.append({"ph": "f", "bp": "e", "cat": "p2p", "name": transfer.label,
                        "id": flow_id, "pid": dst, "tid": _COMM_TID, "ts": arrive * _US})
    return out


def _link_counters(result: SimulationResult, max_links: int) -> list[dict[str, Any]]:
    busiest = sorted((l for l in result.links if l.total_bytes and l.rate_timeline
                      and l.capacity_bytes_per_s != math.inf),
                     key=lambda l: (-l.total_bytes, l.src, l.dst))[:max_links]
    if not busiest:
        return []
    out = [_meta("process_name", 0, 0, "links"), _meta("process_sort_index", 0, 0, -1)]
    for link in busiest:
        name = f"{link.src} -> {link.dst}"
        out += [{"ph": "C", "name": name, "pid": 0, "ts": t * _US,
                 "args": {"utilization": rate / link.capacity_bytes_per_s}}
                for t, rate in link.rate_timeline]
    return out


def write_chrome_trace(result: SimulationResult, path: str | Path, **options: Any) -> Path:
    """Write `chrome_trace(result, **options)` as JSON to `path`."""
    path = Path(path)
    path.write_text(json.dumps(chrome_trace(result, **options)))
    return path
