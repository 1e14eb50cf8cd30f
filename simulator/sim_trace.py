"""The simulated step in the shared measured-run format (`simulator/trace_schema.py`).

`write_simulated_run` writes what the real runner writes for a measured run, one file per
pipeline rank of replica 0 plus manifest.json, so `pipesim validate` compares like with like:
compute records from the engine's spans; a p2p record per send (posted -> delivered) and per
receive (asked -> received) with the manifest's tensor names and bytes in the scenario's
communication mode; memory records after each forward and backward (bytes kept for backward:
the model-state baseline left out); one step record. The backend is "simulated" and times count
from the start of the step.
"""

from __future__ import annotations

import sys
from pathlib import Path

from simulator import __version__
from simulator.manifest import build_manifest
from simulator.memory import memory_model
from simulator.results import ComputeSpan, SimulationResult, Transfer
from simulator.scenario import Scenario
from simulator.trace_schema import (
    SCHEMA_VERSION, ComputeRecord, HeaderRecord, MemoryRecord, P2PRecord, RunManifest,
    StepRecord, TraceWriter, rank_trace_name, write_manifest,
)

__all__ = ["write_simulated_run"]


def write_simulated_run(result: SimulationResult, scenario: Scenario, run_dir: str | Path,
                        *, device: str = "") -> Path:
    """Write replica 0 of `result` as a measured-run directory; returns the directory."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = build_manifest(scenario)
    chunk_bytes = {c: a.total_bytes for rank in memory_model(scenario).ranks
                   for c, a in rank.chunk_bytes.items()}
    P = result.num_stages
    # One pass over spans and transfers (a large step has ~10^6 of each), bucketed by rank.
    spans: dict[int, list[ComputeSpan]] = {pp: [] for pp in range(P)}
    for span in result.spans:
        if span.dp_index == 0:
            spans[span.pp_index].append(span)
    p2p: dict[int, list[tuple[Transfer, str]]] = {pp: [] for pp in range(P)}
    for transfer in result.transfers:
        if transfer.kind == "pipeline" and transfer.src_dp == 0:
            p2p[transfer.src_pp].append((transfer, "send"))
            p2p[transfer.dst_pp].append((transfer, "recv"))
    files = []
    for pp in range(P):
        path = run_dir / rank_trace_name(pp)
        header = HeaderRecord(schema_version=SCHEMA_VERSION, rank=pp, world_size=P,
                              backend="simulated", device=device or "simulated",
                              hostname="pipesim", pid=0, time_origin_unix_s=0.0,
                              scenario_name=scenario.name)
        writer = TraceWriter(path, header)
        _write_rank(writer, result, manifest, chunk_bytes, pp, spans[pp], p2p[pp])
        writer.close(complete=True, status="ok")
        files.append(path.name)
    write_manifest(run_dir, RunManifest(
        schema_version=SCHEMA_VERSION, complete=True, scenario_name=scenario.name,
        scenario=scenario.model_dump(mode="json"), world_size=P, backend="simulated",
        device=device or "simulated",
        versions={"python": sys.version.split()[0], "attnres-pipesim": __version__},
        num_steps=1, num_warmup_steps=0, started_unix_s=0.0, finished_unix_s=result.step_time_s,
        options=dict(result.options), failure=None, trace_files=files))
    return run_dir


def _write_rank(writer: TraceWriter, result: SimulationResult, manifest: object,
                chunk_bytes: dict[int, int], pp: int, spans: list[ComputeSpan],
                p2p: list[tuple[Transfer, str]]) -> None:
    """Rank `pp`'s records: its compute `spans` with a memory record after each, its sends and
    receives `p2p` (in transfer order), its step."""
    live = peak = 0
    live_by_chunk: dict[int, int] = {}
    peak_by_chunk: dict[int, int] = {}
    for span in spans:
        writer.write(ComputeRecord(step=0, action=f"{span.chunk_index}{span.kind}"
                                   f"{span.microbatch_index}", kind=span.kind,
                                   chunk=span.chunk_index, microbatch=span.microbatch_index,
                                   start_s=span.start_s, end_s=span.end_s))
        size = chunk_bytes[span.chunk_index]
        sign = 1 if span.kind == "F" else -1
        live += sign * size
        live_by_chunk[span.chunk_index] = live_by_chunk.get(span.chunk_index, 0) + sign * size
        peak = max(peak, live)
        peak_by_chunk[span.chunk_index] = max(peak_by_chunk.get(span.chunk_index, 0),
                                              live_by_chunk[span.chunk_index])
        writer.write(MemoryRecord(step=0, t_s=span.end_s,
                                  event="forward" if span.kind == "F" else "backward",
                                  chunk=span.chunk_index, microbatch=span.microbatch_index,
                                  saved_bytes=live, chunk_saved_bytes=size,
                                  device_allocated_bytes=None))
    for transfer, op in p2p:
        writer.write(_p2p_record(transfer, manifest, op))
    rank = result.rank(0, pp)
    writer.write(StepRecord(step=0, warmup=False, start_s=0.0, end_s=rank.end_s,
                            duration_s=result.step_time_s, loss=None, peak_saved_bytes=peak,
                            peak_saved_bytes_by_chunk={str(c): b for c, b in
                                                       sorted(peak_by_chunk.items())},
                            device_max_allocated_bytes=None))


def _p2p_record(transfer: object, manifest: object, op: str) -> P2PRecord:
    from simulator.schedule_ir import Action  # noqa: PLC0415

    send = Action.from_str(transfer.label)  # type: ignore[attr-defined]
    forward = send.kind.value == "SEND_F"
    direction = "forward" if forward else "backward"
    hop = manifest.transition(direction, send.stage_index)  # type: ignore[attr-defined]
    tensors = hop.tensors[manifest.comm_mode]  # type: ignore[attr-defined]
    recv = send.partner()
    if op == "send":
        action, peer = send, hop.dst_rank
        start, end = transfer.posted_s, transfer.delivered_s  # type: ignore[attr-defined]
    else:
        action, peer = recv, hop.src_rank
        start, end = transfer.recv_posted_s, transfer.received_s  # type: ignore[attr-defined]
    return P2PRecord(step=0, action=str(action), op=op, direction=direction, peer=peer,
                     src_rank=hop.src_rank, dst_rank=hop.dst_rank, src_chunk=hop.src_chunk,
                     dst_chunk=hop.dst_chunk, microbatch=send.microbatch_index,
                     tensor_names=[t.name for t in tensors],
                     tensor_bytes=[t.num_bytes for t in tensors],
                     total_bytes=sum(t.num_bytes for t in tensors), header_bytes=0,
                     start_s=start, end_s=end)
