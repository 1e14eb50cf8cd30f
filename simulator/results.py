"""What one simulated step produced, as plain Python: step time, per-rank and per-link figures.

`SimulationResult` is built by the engine and read by the CLI, the plots and the Chrome trace.
Everything in it is a float, int, str, list or dict (no numpy), so `to_json()` is JSON as-is and
the CSV writers need nothing else. Times are simulated seconds from the start of the step.

Per rank (one pipeline rank of one data-parallel replica, i.e. its TP group):
- busy_s: compute (forward, backward, recompute, TP collectives);
- comm_wait_s: blocked on a receive whose message was already sent (data in flight), blocked in
  the gradient all-reduce while a chunk was in flight, and the host time of sends, of posting
  receives and of completing them (StepPlan's HOST_COST_FIELDS: per message, tensor and byte),
  and the runner's own host work after each compute (StepPlan.forward_host_s, backward_host_s);
- idle_s: the rest of the step: waiting for a peer that had not sent yet (the pipeline bubble),
  and time after the rank finished.
Bubble fraction is the pipeline's: 1 - mean(busy_s) / pipeline_time_s, where pipeline_time_s ends
with the last backward (the all-reduce tail excluded); for GPipe and 1F1B with equal stages and
free communication it is (P - 1) / (M + P - 1).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from simulator.timelines import resample_max, resample_mean

__all__ = ["ComputeSpan", "Transfer", "RankStats", "LinkStats", "SimulationResult",
           "WALL_CLOCK_STATS", "JSON_TIMELINE_LINKS", "JSON_TIMELINE_POINTS"]

WALL_CLOCK_STATS: tuple[str, ...] = ("wall_s", "events_per_s")
"""Entries of `stats` that depend on the machine, left out of written files."""

JSON_TIMELINE_LINKS = 128
"""`to_json` keeps the rate timelines of at most this many links: those with the most bytes."""
JSON_TIMELINE_POINTS = 512
"""`to_json` resamples longer timelines to this many points (`simulator/timelines.py`)."""


class ComputeSpan(NamedTuple):
    """One forward or backward of one chunk for one micro-batch on one rank."""

    dp_index: int
    pp_index: int
    kind: str
    """"F" or "B"."""
    chunk_index: int
    microbatch_index: int
    start_s: float
    end_s: float


class Transfer(NamedTuple):
    """One message: a pipeline send (all its TP flows) or one ring all-reduce step."""

    kind: str
    """"pipeline" or "allreduce"."""
    label: str
    """The send action ("2SEND_F0") or "AR<step>"."""
    src_dp: int
    src_pp: int
    dst_dp: int
    dst_pp: int
    bytes_per_gpu: int
    num_flows: int
    posted_s: float
    """When the sender posted it."""
    started_s: float
    """When its flows started: after the messages queued before it on the same channel."""
    delivered_s: float
    """When the last of its flows was delivered."""
    recv_posted_s: float
    """When the receiver asked for it (its receive action began)."""
    received_s: float
    """When the receiver's receive completed: max(delivered_s, recv_posted_s)."""


@dataclass
class RankStats:
    """One pipeline rank of one replica."""

    dp_index: int
    pp_index: int
    gpus: list[str]
    busy_s: float
    comm_wait_s: float
    idle_s: float
    compute_end_s: float
    """End of this rank's last compute action."""
    end_s: float
    """End of its gradient all-reduce (= compute_end_s without one)."""
    allreduce_s: float
    peak_memory_bytes: int
    memory_timeline: list[tuple[float, int]] = field(default_factory=list)
    """(time_s, bytes) after every change, model states included."""


@dataclass
class LinkStats:
    """One link direction."""

    src: str
    dst: str
    link_kind: str
    capacity_bytes_per_s: float
    latency_s: float
    pipeline_bytes: int
    allreduce_bytes: int
    busy_s: float
    utilization: float
    """Bytes carried / (capacity x step time): the mean utilization over the step."""
    peak_concurrent_flows: int
    rate_timeline: list[tuple[float, float]] = field(default_factory=list)
    """(time_s, bytes/s) at every change, when recorded."""

    @property
    def total_bytes(self) -> int:
        """Pipeline and all-reduce bytes."""
        return self.pipeline_bytes + self.allreduce_bytes


@dataclass
class SimulationResult:
    """One simulated training step."""

    name: str
    step_time_s: float
    pipeline_time_s: float
    bubble_fraction: float
    num_replicas: int
    """Replicas simulated (1 under the symmetry reduction)."""
    num_stages: int
    tensor_parallel: int
    ranks: list[RankStats]
    links: list[LinkStats]
    spans: list[ComputeSpan]
    transfer_source: Callable[[], list[Transfer]] = field(default=list, repr=False,
                                                          compare=False)
    """Builds `transfers` on first use (a large step has hundreds of thousands)."""
    stats: dict[str, Any] = field(default_factory=dict)
    """Simulation effort: events, flows, wall seconds, largest max-min component."""
    options: dict[str, Any] = field(default_factory=dict)
    """How the step was simulated (hardware, topology, aggregation, symmetry, ...)."""

    @cached_property
    def transfers(self) -> list[Transfer]:
        """Every message, ordered by posting time."""
        return self.transfer_source()

    def rank(self, dp_index: int, pp_index: int) -> RankStats:
        """The stats of one rank."""
        return self.ranks[dp_index * self.num_stages + pp_index]

    def link_bytes(self) -> dict[tuple[str, str], int]:
        """(src, dst) -> pipeline bytes, for links that carried any."""
        return {(l.src, l.dst): l.pipeline_bytes for l in self.links if l.pipeline_bytes}

    def summary(self) -> dict[str, Any]:
        """The headline numbers (what `pipesim run` prints)."""
        finite = [l for l in self.links if l.capacity_bytes_per_s != math.inf]
        busiest = max(finite, key=lambda l: (l.utilization, l.total_bytes), default=None)
        return {
            "name": self.name,
            "step_time_s": self.step_time_s,
            "pipeline_time_s": self.pipeline_time_s,
            "bubble_fraction": self.bubble_fraction,
            "max_peak_memory_bytes": max((r.peak_memory_bytes for r in self.ranks), default=0),
            "pipeline_bytes": sum(l.pipeline_bytes for l in self.links),
            "allreduce_bytes": sum(l.allreduce_bytes for l in self.links),
            "busiest_link": None if busiest is None else f"{busiest.src}->{busiest.dst}",
            "busiest_link_utilization": 0.0 if busiest is None else busiest.utilization,
            "mean_comm_wait_s": sum(r.comm_wait_s for r in self.ranks) / max(len(self.ranks), 1),
        }

    def to_json(self, *, timelines: bool = True, spans: bool = True,
                max_timeline_links: int | None = JSON_TIMELINE_LINKS,
                max_timeline_points: int | None = JSON_TIMELINE_POINTS) -> dict[str, Any]:
        """Everything as JSON-ready data; leave out timelines and spans for a compact summary.

        Timelines are bounded so that a large step stays a readable file: link-rate timelines
        only for the `max_timeline_links` links that carried the most bytes (the others keep
        every figure but the timeline), and any timeline longer than `max_timeline_points`
        resampled to that many equal buckets of the step (rates by their mean, memory by its
        maximum; `simulator/timelines.py`). The key "timelines" says what was bounded. None
        for a limit keeps everything; small steps are within both limits.
        """
        ranks = [_row(r) for r in self.ranks]
        links = [_row(l) for l in self.links]
        timeline_info = None
        if timelines:
            timeline_info = self._bound_timelines(ranks, links, max_timeline_links,
                                                  max_timeline_points)
        else:
            for row in ranks:
                row.pop("memory_timeline")
            for row in links:
                row.pop("rate_timeline")
        # wall-clock figures vary from run to run; files stay byte-identical without them
        stats = {k: v for k, v in self.stats.items() if k not in WALL_CLOCK_STATS}
        out: dict[str, Any] = {"summary": self.summary(), "options": self.options,
                               "stats": stats, "num_replicas": self.num_replicas,
                               "num_stages": self.num_stages,
                               "tensor_parallel": self.tensor_parallel,
                               "ranks": ranks, "links": links}
        if timeline_info is not None:
            out["timelines"] = timeline_info
        if spans:
            out["spans"] = [s._asdict() for s in self.spans]
            out["transfers"] = [t._asdict() for t in self.transfers]
        return out

    def _bound_timelines(self, ranks: list[dict[str, Any]], links: list[dict[str, Any]],
                         max_links: int | None, max_points: int | None) -> dict[str, Any]:
        """Apply `to_json`'s limits to the rows in place; say what they changed."""
        with_timeline = [i for i, l in enumerate(self.links) if l.rate_timeline]
        if max_links is not None and len(with_timeline) > max_links:
            by_bytes = sorted(with_timeline, key=lambda i: (
                -self.links[i].total_bytes, self.links[i].src, self.links[i].dst))
            for i in by_bytes[max_links:]:
                links[i]["rate_timeline"] = []
        num_resampled = 0
        if max_points is not None:
            end_s = self.step_time_s
            for row in links:
                if len(row["rate_timeline"]) > max_points:
                    row["rate_timeline"] = resample_mean(row["rate_timeline"], end_s, max_points)
                    num_resampled += 1
            for row in ranks:
                if len(row["memory_timeline"]) > max_points:
                    row["memory_timeline"] = resample_max(row["memory_timeline"], end_s,
                                                          max_points)
                    num_resampled += 1
        return {"max_links": max_links, "max_points": max_points,
                "links_with_rate_timeline": sum(1 for row in links if row["rate_timeline"]),
                "links_recorded": len(with_timeline), "num_resampled": num_resampled}

    def write(self, out_dir: str | Path) -> list[Path]:
        """summary.json, ranks.csv, links.csv, spans.csv, transfers.csv, memory.csv."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "summary.json"]
        written[0].write_text(json.dumps(self.to_json(timelines=False, spans=False), indent=2))
        rank_fields = [f.name for f in fields(RankStats) if f.name != "memory_timeline"]
        written.append(_write_csv(out / "ranks.csv", rank_fields, (
            [" ".join(r.gpus) if name == "gpus" else getattr(r, name) for name in rank_fields]
            for r in self.ranks)))
        link_fields = [f.name for f in fields(LinkStats) if f.name != "rate_timeline"]
        written.append(_write_csv(out / "links.csv", link_fields, (
            [getattr(l, name) for name in link_fields] for l in self.links)))
        written.append(_write_csv(out / "spans.csv", ComputeSpan._fields, self.spans))
        written.append(_write_csv(out / "transfers.csv", Transfer._fields, self.transfers))
        written.append(_write_csv(out / "memory.csv", ("dp_index", "pp_index", "time_s", "bytes"),
                                  ((r.dp_index, r.pp_index, t, b)
                                   for r in self.ranks for t, b in r.memory_timeline)))
        return written


def _row(record: RankStats | LinkStats) -> dict[str, Any]:
    """A dataclass as a dict, lists copied (what `dataclasses.asdict` gives, without deep-copying
    every number: that took most of `pipesim run` on a large step)."""
    out = {}
    for f in fields(record):
        value = getattr(record, f.name)
        out[f.name] = list(value) if isinstance(value, list) else value
    return out


def _write_csv(path: Path, names: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        writer.writerows(rows)
    return path
