"""The comparisons `pipesim validate` makes, each from a simulated step and a measured run.

Runner traces (our own JSONL, docs/trace-schema.md) carry everything, so they are compared
message by message: every measured send must have the simulated send of the same schedule action
(`"1SEND_F3"`) with the same payload bytes and tensor names; per rank pair and per step the
payload totals must be equal; per rank and step the number of forwards, backwards, sends and
receives must be equal. Durations (compute per chunk, transfer time per transition), step time
and peak saved-for-backward bytes are compared with an error in percent: (simulated - measured)
/ measured. Warm-up steps are left out.

Other formats (profiler traces, NCCL logs, Flight Recorder dumps; simulator.ingest) carry no
schedule actions, so they are compared per rank pair as multisets: the measured messages of a
pair must be k copies of one simulated step's messages (k = the number of steps traced). A
message is one send, or the sends to one peer launched together (one NCCL group, one
`batch_isend_irecv`: a shared `batch_index`), since pipeline frameworks send a stage's tensors
as separate operations of one batch.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from simulator.calibrate import trimmed_mean
from simulator.ingest.model import MeasuredRun as IngestedRun
from simulator.results import SimulationResult
from simulator.trace_schema import MeasuredRun as RunnerRun

__all__ = [
    "TransitionBytes",
    "PairBytes",
    "OpCount",
    "DurationRow",
    "StepTime",
    "MemoryRow",
    "error_pct",
    "compare_runner_bytes",
    "compare_runner_counts",
    "compare_runner_durations",
    "compare_runner_step_time",
    "compare_generic_pairs",
    "measured_steps",
]


def error_pct(simulated: float, measured: float) -> float | None:
    """(simulated - measured) / measured in percent; None when nothing was measured."""
    if measured == 0:
        return None if simulated == 0 else float("inf")
    return 100.0 * (simulated - measured) / measured


@dataclass
class TransitionBytes:
    """One transition (direction, source chunk): bytes per message, simulated vs measured."""

    direction: str
    src_chunk: int
    src_rank: int
    dst_rank: int
    simulated_names: list[str]
    measured_names: list[str]
    simulated_bytes: int
    """Payload of one message (every micro-batch carries the same)."""
    measured_bytes: list[int]
    """Distinct payload sizes seen over every measured send and receive."""
    header_bytes: int
    """The runner's block-id header per message (measured; not part of the payload)."""
    num_messages: int
    num_mismatched: int
    """Measured messages without a simulated twin of the same action and size."""

    @property
    def exact(self) -> bool:
        """Every message has the simulated size and names."""
        return (self.num_mismatched == 0 and self.measured_bytes == [self.simulated_bytes]
                and self.measured_names == self.simulated_names)


@dataclass
class PairBytes:
    """Payload per step between two ranks."""

    src_rank: int
    dst_rank: int
    simulated_bytes_per_step: int
    measured_bytes_per_step: list[int]
    """Distinct per-step totals over the measured steps (one value when consistent)."""
    header_bytes_per_step: int = 0
    num_steps: int = 1
    messages_match: bool = True
    """The individual message sizes match too (checked per transition for runner traces)."""

    @property
    def exact(self) -> bool:
        """Every measured step carried exactly the simulated bytes."""
        return self.messages_match and \
            self.measured_bytes_per_step == [self.simulated_bytes_per_step]


@dataclass
class OpCount:
    """Operations of one kind on one rank per step."""

    rank: int
    op: str
    """"forward", "backward", "send" or "recv"."""
    simulated: int
    measured: list[int]
    """Distinct per-step counts over the measured steps."""

    @property
    def exact(self) -> bool:
        """Every measured step had the simulated count."""
        return self.measured == [self.simulated]


@dataclass
class DurationRow:
    """Median duration of one kind of operation."""

    what: str
    rank: int
    simulated_s: float
    measured_s: float
    num_measured: int

    @property
    def error_pct(self) -> float | None:
        """Simulated against measured, in percent."""
        return error_pct(self.simulated_s, self.measured_s)


@dataclass
class StepTime:
    """Step time: the longest rank's step, median over measured steps."""

    simulated_s: float
    measured_s: float
    measured_steps_s: list[float] = field(default_factory=list)
    with_run_compute_s: float | None = None
    """Attribution, not a prediction: the step simulated with every chunk's forward and
    backward set to the run's own median durations, so that what is left of the error is the
    schedule's and the communication model's, not the compute calibration's."""

    @property
    def error_pct(self) -> float | None:
        """Simulated against measured, in percent."""
        return error_pct(self.simulated_s, self.measured_s)

    @property
    def with_run_compute_error_pct(self) -> float | None:
        """The error left with the run's own compute durations, in percent."""
        if self.with_run_compute_s is None:
            return None
        return error_pct(self.with_run_compute_s, self.measured_s)


@dataclass
class MemoryRow:
    """Peak bytes saved for backward on one rank during a step."""

    rank: int
    measured_bytes: int
    calibrated_bytes: int | None
    """The calibrated runner model (simulator/calibrate_memory.py); None without a profile."""
    analytic_bytes: int
    """The analytic model's peak activation bytes (simulator/memory.py)."""

    @property
    def calibrated_error_pct(self) -> float | None:
        """Calibrated prediction against measured, in percent."""
        if self.calibrated_bytes is None:
            return None
        return error_pct(self.calibrated_bytes, self.measured_bytes)

    @property
    def analytic_error_pct(self) -> float | None:
        """Analytic prediction against measured, in percent."""
        return error_pct(self.analytic_bytes, self.measured_bytes)


def measured_steps(run: RunnerRun) -> list[int]:
    """Indices of the measured (non-warm-up) steps, from rank 0's step records."""
    return sorted(s.step for s in run.ranks[0].steps if not s.warmup)


def _sim_sends(result: SimulationResult) -> dict[str, object]:
    return {t.label: t for t in result.transfers if t.kind == "pipeline"}


def compare_runner_bytes(result: SimulationResult, run: RunnerRun,
                         names: dict[tuple[str, int], list[str]]
                         ) -> tuple[list[TransitionBytes], list[PairBytes]]:
    """Per-transition and per-pair payload, message by message.

    `names` maps (direction, src_chunk) to the manifest's tensor names in the scenario's mode.
    """
    steps = set(measured_steps(run))
    sim = _sim_sends(result)
    groups: dict[tuple[str, int], list] = defaultdict(list)
    for rank in run.ranks:
        for rec in rank.p2p:
            if rec.step in steps:
                groups[(rec.direction, rec.src_chunk)].append(rec)
    rows = []
    for (direction, src_chunk), recs in sorted(groups.items(),
                                               key=lambda kv: (kv[0][0] != "forward", kv[0][1])):
        sends = [r for r in recs if r.op == "send"]
        labels = [t for t in sim.values() if _label_key(t.label) == (direction, src_chunk)]
        sim_bytes = labels[0].bytes_per_gpu if labels else -1
        mismatched = sum(1 for r in sends if r.action not in sim
                         or sim[r.action].bytes_per_gpu != r.total_bytes)
        first = sends[0] if sends else recs[0]
        rows.append(TransitionBytes(
            direction=direction, src_chunk=src_chunk, src_rank=first.src_rank,
            dst_rank=first.dst_rank, simulated_names=names.get((direction, src_chunk), []),
            measured_names=list(first.tensor_names), simulated_bytes=sim_bytes,
            measured_bytes=sorted({r.total_bytes for r in recs}),
            header_bytes=max((r.header_bytes for r in sends), default=0),
            num_messages=len(sends), num_mismatched=mismatched))
    pairs: dict[tuple[int, int], int] = defaultdict(int)
    for t in sim.values():
        pairs[(t.src_pp, t.dst_pp)] += t.bytes_per_gpu
    measured: dict[tuple[int, int], dict[int, int]] = defaultdict(lambda: dict.fromkeys(steps, 0))
    headers: dict[tuple[int, int], int] = defaultdict(int)
    for rank in run.ranks:
        for rec in rank.p2p:
            if rec.op == "send" and rec.step in steps:
                measured[(rec.src_rank, rec.dst_rank)][rec.step] += rec.total_bytes
                headers[(rec.src_rank, rec.dst_rank)] += rec.header_bytes
    pair_rows = [PairBytes(src, dst, pairs.get((src, dst), 0),
                           sorted(set(measured[(src, dst)].values())),
                           headers[(src, dst)] // max(1, len(steps)), len(steps))
                 for src, dst in sorted(set(pairs) | set(measured))]
    return rows, pair_rows


def _label_key(label: str) -> tuple[str, int]:
    """("forward" | "backward", chunk) of a send label like "1SEND_F3"."""
    chunk, rest = label.split("SEND_", 1)
    return ("forward" if rest[0] == "F" else "backward", int(chunk))


def compare_runner_counts(result: SimulationResult, run: RunnerRun) -> list[OpCount]:
    """Forwards, backwards, sends and receives per rank and step."""
    steps = measured_steps(run)
    sim: Counter[tuple[int, str]] = Counter()
    for span in result.spans:
        sim[(span.pp_index, "forward" if span.kind == "F" else "backward")] += 1
    for t in result.transfers:
        if t.kind == "pipeline":
            sim[(t.src_pp, "send")] += 1
            sim[(t.dst_pp, "recv")] += 1
    rows = []
    for rank in run.ranks:
        r = rank.header.rank
        per_step: dict[str, Counter[int]] = defaultdict(Counter)
        for rec in rank.compute:
            per_step["forward" if rec.kind == "F" else "backward"][rec.step] += 1
        for p in rank.p2p:
            per_step[p.op][p.step] += 1
        for op in ("forward", "backward", "send", "recv"):
            rows.append(OpCount(r, op, sim[(r, op)],
                                sorted({per_step[op][s] for s in steps})))
    return rows


def compare_runner_durations(result: SimulationResult, run: RunnerRun) -> list[DurationRow]:
    """Median compute time per (rank, kind, chunk) and transfer time per transition.

    Transfer time is the send's issue to the receive's data in place (measured across the two
    ranks' clocks, aligned through their Unix time origins) against the simulated
    posted-to-received time.
    """
    steps = set(measured_steps(run))
    rows = []
    sim_compute: dict[tuple[int, str, int], list[float]] = defaultdict(list)
    for span in result.spans:
        sim_compute[(span.pp_index, span.kind, span.chunk_index)].append(span.end_s - span.start_s)
    measured = _measured_compute(run)
    for key in sorted(measured):
        rank, kind, chunk = key
        if key in sim_compute:
            rows.append(DurationRow(f"{'forward' if kind == 'F' else 'backward'} chunk {chunk}",
                                    rank, statistics.median(sim_compute[key]),
                                    statistics.median(measured[key]), len(measured[key])))
    origin = {rank.header.rank: rank.header.time_origin_unix_s for rank in run.ranks}
    sim_transfer: dict[tuple[str, int], list[float]] = defaultdict(list)
    sim_rank: dict[tuple[str, int], int] = {}
    for t in result.transfers:
        if t.kind == "pipeline":
            key = _label_key(t.label)
            sim_transfer[key].append(t.received_s - t.posted_s)
            sim_rank[key] = t.src_pp
    sends = {(r.step, r.direction, r.src_chunk, r.microbatch): r for rank in run.ranks
             for r in rank.p2p if r.op == "send" and r.step in steps}
    times: dict[tuple[str, int], list[float]] = defaultdict(list)
    for rank in run.ranks:
        for r in rank.p2p:
            send = sends.get((r.step, r.direction, r.src_chunk, r.microbatch))
            if r.op == "recv" and send is not None:
                times[(r.direction, r.src_chunk)].append(
                    (origin[r.dst_rank] + r.end_s) - (origin[send.src_rank] + send.start_s))
    for key in sorted(times, key=lambda k: (k[0] != "forward", k[1])):
        if key in sim_transfer:
            direction, chunk = key
            dst = chunk + 1 if direction == "forward" else chunk - 1
            rows.append(DurationRow(f"transfer {direction} {chunk}->{dst}", sim_rank[key],
                                    statistics.median(sim_transfer[key]),
                                    statistics.median(times[key]), len(times[key])))
    return rows


def _measured_compute(run: RunnerRun) -> dict[tuple[int, str, int], list[float]]:
    """(rank, "F"/"B", chunk) -> the run's compute durations over measured steps."""
    steps = set(measured_steps(run))
    measured: dict[tuple[int, str, int], list[float]] = defaultdict(list)
    for rank in run.ranks:
        for rec in rank.compute:
            if rec.step in steps:
                measured[(rank.header.rank, rec.kind, rec.chunk)].append(rec.end_s - rec.start_s)
    return measured


def measured_chunk_compute_s(run: RunnerRun, num_chunks: int
                              ) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Per chunk, the run's forward and backward seconds over measured steps, trimmed means as
    calibration keeps (simulator.calibrate.trimmed_mean); None when a chunk has no record,
    e.g. a trace without compute records."""
    spans: dict[tuple[str, int], list[float]] = defaultdict(list)
    for (_, kind, chunk), seconds in _measured_compute(run).items():
        spans[(kind, chunk)] += seconds
    if any(not spans[(kind, c)] for kind in "FB" for c in range(num_chunks)):
        return None
    return (tuple(trimmed_mean(spans[("F", c)]) for c in range(num_chunks)),
            tuple(trimmed_mean(spans[("B", c)]) for c in range(num_chunks)))


def compare_runner_step_time(result: SimulationResult, run: RunnerRun) -> StepTime:
    """Simulated step time against the median measured step (longest rank per step)."""
    steps = measured_steps(run)
    per_step = [max(s.duration_s for rank in run.ranks for s in rank.steps if s.step == step)
                for step in steps]
    return StepTime(result.step_time_s, statistics.median(per_step) if per_step else 0.0,
                    per_step)


def compare_generic_pairs(result: SimulationResult, run: IngestedRun
                          ) -> tuple[list[PairBytes], list[OpCount], list[str]]:
    """Per-pair message multisets and per-rank op counts for traces without schedule actions.

    Returns pair rows, count rows and notes (k, the number of steps the trace holds).
    """
    sim: dict[tuple[int, int], list[int]] = defaultdict(list)
    for t in result.transfers:
        if t.kind == "pipeline":
            sim[(t.src_pp, t.dst_pp)].append(t.bytes_per_gpu)
    messages: dict[tuple[int, int, object], int] = defaultdict(int)
    for op in run.comm_ops(op="send"):
        batch = ("op", op.order_index) if op.batch_index is None else ("batch", op.batch_index)
        messages[(*op.src_dst, batch)] += op.num_bytes
    measured: dict[tuple[int, int], list[int]] = defaultdict(list)
    for (src, dst, _), num_bytes in messages.items():
        measured[(src, dst)].append(num_bytes)
    total_sim = sum(len(v) for v in sim.values())
    total_measured = sum(len(v) for v in measured.values())
    k = total_measured // total_sim if total_sim and total_measured % total_sim == 0 else 0
    notes = [f"the trace holds {total_measured} messages; one simulated step has {total_sim}, so "
             + (f"it is read as {k} steps" if k else
                "it is not a whole number of steps (are messages split into several unbatched "
                "sends? gloo profiler traces of `pipesim measure` runs send each tensor and a "
                "block-id header separately: validate the run directory itself)")]
    pairs = []
    for pair in sorted(set(sim) | set(measured)):
        same = k > 0 and Counter(measured[pair]) == Counter({b: n * k for b, n in
                                                              Counter(sim[pair]).items()})
        per_step = sum(measured[pair]) // k if k else sum(measured[pair])
        pairs.append(PairBytes(pair[0], pair[1], sum(sim[pair]), [per_step], 0, max(k, 1),
                               messages_match=same))
    counts = []
    for rank in range(run.world_size):
        for op in ("send", "recv"):
            sim_count = sum(1 for t in result.transfers if t.kind == "pipeline"
                            and (t.src_pp if op == "send" else t.dst_pp) == rank)
            got = len({(o.peer_rank, o.order_index if o.batch_index is None else -1,
                        o.batch_index) for o in run.comm_ops(rank, op)})
            counts.append(OpCount(rank, op, sim_count, [got // k if k and got % k == 0 else got]))
    return pairs, counts, notes
