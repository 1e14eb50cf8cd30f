"""Figures of a measured run, from its traces alone: step time, bytes per boundary, memory.

Torch-free (it reads simulator.trace_schema files), so any tool can summarise a run directory.
Step time of a step is the longest rank's duration (the ranks start each step together after a
barrier); the run's figure is the median over measured (non-warm-up) steps. Bytes per boundary
are what the senders recorded, per step, averaged over the measured steps.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

from simulator.trace_schema import MeasuredRun, match_transfers

__all__ = ["BoundaryTraffic", "RunSummary", "summarize_run"]


@dataclass(frozen=True)
class BoundaryTraffic:
    """Traffic across one chunk boundary in one direction, per step."""

    src_chunk: int
    dst_chunk: int
    src_rank: int
    dst_rank: int
    direction: str
    tensor_names: list[str]
    """Names sent for micro-batch 0 (the same for every micro-batch)."""
    payload_bytes_per_step: float
    header_bytes_per_step: float
    mean_transfer_s: float
    """Mean time from the send's start to the receive's end (ranks' clocks aligned through
    their Unix time origins, so across hosts only as good as their clock sync)."""


@dataclass(frozen=True)
class RunSummary:
    """What `pipesim measure` prints (and writes as summary.json)."""

    scenario_name: str
    world_size: int
    backend: str
    num_measured_steps: int
    step_times_s: list[float]
    median_step_time_s: float
    loss: float | None
    boundaries: list[BoundaryTraffic]
    peak_saved_bytes_by_rank: list[int]

    def total_bytes_per_step(self) -> float:
        """Payload bytes over every boundary and direction, per step."""
        return sum(b.payload_bytes_per_step for b in self.boundaries)

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready data."""
        return asdict(self)


def summarize_run(run: MeasuredRun) -> RunSummary:
    """Summarise a complete run (read with simulator.trace_schema.read_run)."""
    warmup = {s.step for s in run.ranks[0].steps if s.warmup}
    steps = sorted({s.step for s in run.ranks[0].steps} - warmup)
    by_step = {step: max(s.duration_s for rank in run.ranks for s in rank.steps if s.step == step)
               for step in steps}
    step_times = [by_step[s] for s in steps]
    losses = [s.loss for rank in run.ranks for s in rank.steps
              if s.step == (steps[-1] if steps else -1) and s.loss is not None]
    return RunSummary(
        scenario_name=run.manifest.scenario_name, world_size=run.manifest.world_size,
        backend=run.manifest.backend, num_measured_steps=len(steps), step_times_s=step_times,
        median_step_time_s=statistics.median(step_times) if step_times else 0.0,
        loss=losses[0] if losses else None, boundaries=_boundaries(run, set(steps)),
        peak_saved_bytes_by_rank=[max((s.peak_saved_bytes for s in rank.steps
                                       if s.step in by_step), default=0)
                                  for rank in run.ranks])


def _boundaries(run: MeasuredRun, steps: set[int]) -> list[BoundaryTraffic]:
    groups: dict[tuple[str, int], list] = {}
    for send, recv in match_transfers(run):
        if send.step in steps:
            groups.setdefault((send.direction, send.src_chunk), []).append((send, recv))
    origin = {rank.header.rank: rank.header.time_origin_unix_s for rank in run.ranks}
    rows = []
    num_steps = max(1, len(steps))
    for (direction, src_chunk), pairs in sorted(groups.items(),
                                                key=lambda kv: (kv[0][0] != "forward", kv[0][1])):
        first = min(pairs, key=lambda p: (p[0].step, p[0].microbatch))[0]
        rows.append(BoundaryTraffic(
            src_chunk=src_chunk, dst_chunk=first.dst_chunk, src_rank=first.src_rank,
            dst_rank=first.dst_rank, direction=direction, tensor_names=list(first.tensor_names),
            payload_bytes_per_step=sum(s.total_bytes for s, _ in pairs) / num_steps,
            header_bytes_per_step=sum(s.header_bytes for s, _ in pairs) / num_steps,
            mean_transfer_s=statistics.fmean(
                (origin[r.dst_rank] + r.end_s) - (origin[s.src_rank] + s.start_s)
                for s, r in pairs)))
    return rows
