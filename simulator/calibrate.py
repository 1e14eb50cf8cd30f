"""Calibration, the torch-free half: what to measure, the alpha-beta fit, and the profile it makes.

`pipesim calibrate` measures this machine with the real runner's own code (real_runner/
calibration.py does the measuring, in separate processes from any validated run) and this
module turns the raw numbers into what the simulator reads:

- a `MeasuredProfile` (simulator/hardware.py, format_version 1): per-sublayer forward/backward
  seconds at each scenario's shape, AttnRes aggregation seconds against the number of sources,
  and one point-to-point alpha-beta per directed rank pair;
- a `HardwareSpec` for the machine whose peaks are the measured matmul rate and elementwise
  bandwidth (the roofline the cost model falls back to, e.g. for the standard residual's add);
- an `ActivationProfile` (simulator/calibrate_memory.py): bytes autograd saves per piece.

The point-to-point sweep times a transfer the way the runner's pipeline meets it: the receive
was posted earlier (the runner posts every receive ahead of its send), the sender sends, and the
one-way time from the send call to the data in place at the waiting receiver is what the
simulator's eager protocol (StepPlan.p2p_protocol) charges as latency_s + bytes /
bandwidth_bytes_per_s. The send call's own duration and the time to complete a receive whose
data is already in place are the per-message host overheads (LogP's o: StepPlan.send_overhead_s,
recv_overhead_s). Per size the lower quartile of the rounds is kept, and of `num_sweep_passes`
passes the fastest (rounds that waited for a core other processes held are the host's noise,
not the link's). `sender_busy` keeps the sender computing in a thread meanwhile (off by default:
on the 2-core validation host it made the sweep noisier, see docs/accuracy-report.md).
`fit_alpha_beta` fits t(s) = alpha + s / beta by least squares with each squared
residual divided by its time t, halfway between plain least squares (the largest message decides
everything) and relative errors (the tiny ones do). A token-bucket-shaped link is the reason: a
message smaller than the bucket passes at line rate, so the small sizes of a sweep do not show
the shaped bandwidth the large ones do.

    plan = CalibrationPlan.for_scenarios([load_scenario("scenarios/cpu_block_naive_gpipe.yaml")], 2)
    fit = fit_alpha_beta([1024, 65536, 1 << 20], [2e-4, 3e-4, 1.2e-3])
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from simulator.calibrate_executor import ExecutorProbe, executor_probes_for
from simulator.errors import UserError
from simulator.hardware import ModelShape
from simulator.scenario import Scenario

__all__ = [
    "CalibrationError",
    "CalibrationShape",
    "CalibrationPlan",
    "PieceTiming",
    "AggregationPoint",
    "SavedBytesRecord",
    "P2PSweep",
    "LateReceiveProbe",
    "TrafficLoadProbe",
    "ShapeMeasurements",
    "RankMeasurements",
    "AlphaBetaFit",
    "fit_alpha_beta",
    "fit_sweep",
    "end_slope",
    "shapes_for",
    "default_message_sizes",
    "median_across_ranks",
    "trimmed_mean",
    "TRIM_FRACTION",
]

PIECES: tuple[str, ...] = ("attention", "mlp", "embedding", "head")
"""Sublayer kinds the profile times (hardware.SublayerTiming.kind)."""


class CalibrationError(UserError):
    """Calibration cannot proceed or its measurements cannot be fitted."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalibrationShape(ModelShape):
    """One model shape to time: the keys the cost model matches measured timings on."""

    dtype: Literal["bf16", "fp16", "fp32"]
    mlp: Literal["swiglu", "gelu"]
    max_sources: int = Field(ge=0)
    """Largest AttnRes aggregation to time (N + 1 for the final one); 0: standard only."""

    @property
    def key(self) -> tuple[object, ...]:
        """Everything but max_sources: two scenarios with one key share their timings."""
        return (self.hidden_size, self.num_heads, self.ffn_hidden_size, self.vocab_size,
                self.seq_len, self.micro_batch_size, self.dtype, self.mlp)

    @property
    def plane_bytes(self) -> int:
        """One [b, T, d] activation."""
        size = {"bf16": 2, "fp16": 2, "fp32": 4}[self.dtype]
        return self.micro_batch_size * self.seq_len * self.hidden_size * size


def shapes_for(scenarios: Sequence[Scenario]) -> list[CalibrationShape]:
    """The distinct shapes of some scenarios, each with the most sources any of them needs."""
    merged: dict[tuple[object, ...], CalibrationShape] = {}
    for s in scenarios:
        m = s.model
        blocks = s.num_blocks()
        shape = CalibrationShape(
            hidden_size=m.hidden_size, num_heads=m.num_heads, ffn_hidden_size=m.ffn_hidden_size,
            vocab_size=m.vocab_size, seq_len=m.seq_len, micro_batch_size=m.micro_batch_size,
            dtype=m.dtype, mlp=m.mlp, max_sources=0 if blocks is None else blocks + 1)
        old = merged.get(shape.key)
        if old is None or old.max_sources < shape.max_sources:
            merged[shape.key] = shape
    return list(merged.values())


def default_message_sizes(scenarios: Sequence[Scenario], *, min_bytes: int = 1024,
                          at_least_bytes: int = 1 << 20) -> list[int]:
    """Powers of 4 from `min_bytes` up to twice the largest transition (at least 1 MiB)."""
    from simulator.manifest import build_manifest  # noqa: PLC0415

    largest = max((build_manifest(s).peak_bytes(build_manifest(s).comm_mode) for s in scenarios),
                  default=0)
    top = max(2 * largest, at_least_bytes)
    sizes, size = [], min_bytes
    while size < top:
        sizes.append(size)
        size *= 4
    return sizes + [size]


class CalibrationPlan(_Strict):
    """What every calibration process measures (written as JSON for the worker processes)."""

    shapes: list[CalibrationShape]
    nproc: int = Field(ge=1)
    backend: Literal["gloo", "nccl"] = "gloo"
    message_sizes_bytes: list[int] = Field(min_length=2)
    """The point-to-point sweep; at least two sizes, so latency and bandwidth separate."""
    num_sweep_passes: int = Field(default=3, ge=1)
    """Point-to-point sweeps per pair; per size the fastest pass is kept."""
    sender_busy: bool = False
    """Keep the sender computing (the runner's sublayer, in a thread) during the sweep."""
    num_repeats: int = Field(default=15, ge=3)
    """Timed repetitions per measurement (compute pieces keep a trimmed mean, point-to-point
    measurements a median or quartile); compute pieces take at least this
    many, and more until `min_compute_seconds` have passed."""
    num_warmup: int = Field(default=3, ge=0)
    max_seconds_per_point: float = Field(default=0.5, gt=0)
    """Stop repeating a point-to-point size after this long (at least 3 repetitions)."""
    late_receive_rounds: int = Field(default=16, ge=0)
    """Rounds per case of the late-receive probe (0: skip it; the overhead is then 0)."""
    busy_send_rounds: int = Field(default=12, ge=0)
    """Send calls per size of the busy send probe (0: skip it; a send then costs no host time
    per byte, and the idle sweep's median call is its whole host time)."""
    traffic_rounds: int = Field(default=8, ge=0)
    """Loaded (and as many idle) rounds of the traffic-load probe (0: skip it; transfers then
    cost the compute beside them nothing)."""
    min_compute_seconds: float = Field(default=4.0, ge=0)
    """Per shape, keep timing the compute pieces in rounds for at least this long: the pieces
    take turns, so a slow spell of a shared host weighs on all of them alike, and a longer
    window averages over the spells a measured run also sees."""
    max_compute_seconds: float = Field(default=30.0, gt=0)
    """Per shape, stop the compute rounds after this long (at least 3 rounds)."""
    gpu_name_pattern: str = "proc{rank}"
    """Topology node name of rank r in the profile's p2p entries (host_loopback: proc{rank})."""
    timeout_s: float = Field(default=120.0, gt=0)
    executor_probes: list[ExecutorProbe] = []
    """One-rank runs of the runner that time its host work after each compute
    (simulator/calibrate_executor.py); empty: the profile charges none."""

    @classmethod
    def for_scenarios(cls, scenarios: Sequence[Scenario], nproc: int,
                      **options: object) -> CalibrationPlan:
        """The plan for some scenarios' shapes; options override the defaults."""
        if not scenarios:
            raise CalibrationError("calibrate: no scenario given; pass the scenario files whose "
                                   "shapes to measure, e.g. `pipesim calibrate "
                                   "scenarios/cpu_block_naive_gpipe.yaml --nproc 2`")
        sizes = options.pop("message_sizes_bytes", None) or default_message_sizes(scenarios)
        probes = options.pop("executor_probes", None)
        return cls(shapes=shapes_for(scenarios), nproc=nproc, message_sizes_bytes=sizes,
                   executor_probes=executor_probes_for(scenarios) if probes is None else probes,
                   **options)


class PieceTiming(_Strict):
    """Seconds of one sublayer kind on one rank: the trimmed mean of its samples."""

    kind: Literal["attention", "mlp", "embedding", "head"]
    forward_s: float
    backward_s: float
    num_samples: int


class AggregationPoint(_Strict):
    """Seconds (trimmed mean) and saved bytes of one AttnRes aggregation over `num_sources`
    sources."""

    num_sources: int
    forward_s: float
    backward_s: float
    saved_bytes: int
    """Bytes the aggregation saves for backward, its sources' own storages excluded."""
    sources_saved: bool
    """Whether it also keeps its sources' own storages."""


class SavedBytesRecord(_Strict):
    """Bytes autograd saves for one piece, its inputs' storages excluded."""

    kind: Literal["attention", "mlp", "embedding", "head"]
    saved_bytes: int
    input_saved: bool
    """Whether it keeps its input's storage (embedding: the token ids; head: the hidden)."""
    second_input_saved: bool = False
    """Head only: whether the loss keeps the target ids."""


class P2PSweep(_Strict):
    """Transfers to a receive posted earlier, between one directed rank pair (timed by the
    sender, real_runner/calibration_p2p.py)."""

    src_rank: int
    dst_rank: int
    sizes_bytes: list[int]
    one_way_s: list[float]
    """Send call to data in place at a waiting receiver, per size (from the lower quartile of
    the round trips)."""
    send_call_s: list[float] = []
    """Median seconds the send call held the sender, per size."""
    recv_in_place_s: float = 0.0
    """Median seconds to complete a receive whose data was already in place."""
    tensor_counts: list[int] = []
    """Tensors per message of the call-cost rounds (small tensors)."""
    send_calls_by_count_s: list[float] = []
    """Median seconds of the send call, per tensor count."""
    post_calls_by_count_s: list[float] = []
    """Median seconds the receiver took to post the message's receives, per tensor count."""
    sender_busy: bool
    """Whether the sender was computing meanwhile."""
    busy_sizes_bytes: list[int] = []
    """Sizes of the busy send probe (both ranks computing between sends)."""
    busy_send_call_s: list[float] = []
    """Median seconds of the send call per busy size."""

    @property
    def busy_send_s_per_byte(self) -> float:
        """Send-call seconds per byte while both ranks compute: the slope between the busy
        probe's two sizes (never below zero; 0 without two sizes)."""
        return end_slope(self.busy_sizes_bytes, self.busy_send_call_s)

    @property
    def busy_send_overhead_s(self) -> float | None:
        """The busy send call's fixed part: its smallest size's time less that size's bytes at
        the slope (None without two busy sizes)."""
        if len(self.busy_send_call_s) < 2:
            return None
        return max(0.0, self.busy_send_call_s[0]
                   - self.busy_sizes_bytes[0] * self.busy_send_s_per_byte)


def end_slope(xs: Sequence[float], seconds: Sequence[float]) -> float:
    """The slope of call seconds against tensors per message or bytes, between the first and
    the last point (never below zero; 0 without two distinct points)."""
    if len(xs) < 2 or len(seconds) != len(xs) or xs[-1] == xs[0]:
        return 0.0
    return max(0.0, (seconds[-1] - seconds[0]) / (xs[-1] - xs[0]))


class LateReceiveProbe(_Strict):
    """What a receive posted after its send costs when both ranks computed just before, against
    both idle (real_runner/calibration_p2p.py); measured by the receiver, medians of rounds."""

    src_rank: int
    dst_rank: int
    num_bytes: int
    idle_s: float
    """Receive posted to data in place, neither rank computing before."""
    busy_s: float
    """The same with the sender computing after its send and the receiver before its receive,
    as in a pipeline's steady state."""
    num_rounds: int

    @property
    def overhead_s(self) -> float:
        """The extra cost of a late receive under compute (never below zero)."""
        return max(0.0, self.busy_s - self.idle_s)


class TrafficLoadProbe(_Strict):
    """How much traffic 0 -> 1 slowed one end's compute and what CPU its communication threads
    took (real_runner/calibration_traffic.py): medians over rounds, measured by that end."""

    src_rank: int
    dst_rank: int
    role: Literal["send", "recv"]
    calls: int
    """Attention sublayer forward-and-backward calls per window."""
    idle_s: float
    """The window with the link idle."""
    loaded_s: float
    """The window while messages flowed (their send calls left out)."""
    bytes_moved: float
    """Bytes this end completed during its loaded window."""
    num_rounds: int
    tensor_bytes: int = 0
    """Bytes of each tensor of the messages (an activation plane; 0 in older records)."""
    idle_helper_cpu_s: float = 0.0
    """CPU seconds this end's other threads took during its idle window."""
    loaded_helper_cpu_s: float = 0.0
    """The same during its loaded window: the communication threads' work."""

    @property
    def cpu_s_per_byte(self) -> float:
        """Compute seconds lost per byte moved (never below zero)."""
        return self._per_byte(self.idle_s, self.loaded_s)

    @property
    def helper_cpu_s_per_byte(self) -> float:
        """CPU seconds the communication threads took per byte moved (never below zero)."""
        return self._per_byte(self.idle_helper_cpu_s, self.loaded_helper_cpu_s)

    def _per_byte(self, idle_s: float, loaded_s: float) -> float:
        """(loaded - idle) seconds per byte moved, at least 0 (0 when nothing moved)."""
        if self.bytes_moved <= 0:
            return 0.0
        return max(0.0, loaded_s - idle_s) / self.bytes_moved


class ShapeMeasurements(_Strict):
    """Everything one rank measured at one shape."""

    shape: CalibrationShape
    pieces: list[PieceTiming]
    aggregation: list[AggregationPoint]
    saved: list[SavedBytesRecord]
    index_bytes_per_token: int
    """Bytes of one token id as the runner stores it (int64: 8)."""


class RankMeasurements(_Strict):
    """One calibration process's raw results (raw-rank-<r>.json)."""

    rank: int
    world_size: int
    backend: str
    device: str
    hostname: str
    num_threads: int
    device_memory_bytes: int
    """RAM (CPU) or GPU memory of the device the rank computed on."""
    shapes: list[ShapeMeasurements]
    matmul_flops_per_s: float
    elementwise_bytes_per_s: float
    p2p: list[P2PSweep]
    late_receive: list[LateReceiveProbe] = []
    """The late-receive probes this rank received (one pair per calibration)."""
    traffic_load: list[TrafficLoadProbe] = []
    """The traffic-load probe's result on this rank (ranks 0 and 1)."""


@dataclass(frozen=True)
class AlphaBetaFit:
    """t(s) = latency_s + s / bandwidth_bytes_per_s, with how well it fits."""

    latency_s: float
    bandwidth_bytes_per_s: float
    max_relative_residual: float
    """max |fit - measured| / measured over the points."""
    num_points: int

    def predict_s(self, num_bytes: float) -> float:
        """The fitted time of one message."""
        return self.latency_s + num_bytes / self.bandwidth_bytes_per_s


def fit_alpha_beta(sizes_bytes: Sequence[float], times_s: Sequence[float]) -> AlphaBetaFit:
    """Least-squares alpha-beta fit, each squared residual weighted by 1/t.

    A negative intercept is clamped to zero (the fit is redone through the origin).

    Raises:
        CalibrationError: fewer than two distinct sizes, a non-positive time, or times that do
            not grow with size (the bandwidth term cannot be resolved).
    """
    if len(sizes_bytes) != len(times_s):
        raise CalibrationError(f"alpha-beta fit: {len(sizes_bytes)} sizes but {len(times_s)} "
                               "times; give one time per size")
    if len(set(sizes_bytes)) < 2:
        raise CalibrationError(f"alpha-beta fit: sizes {list(sizes_bytes)} have fewer than two "
                               "distinct values; sweep at least two message sizes")
    bad = [t for t in times_s if not (t > 0 and math.isfinite(t))]
    if bad:
        raise CalibrationError(f"alpha-beta fit: time {bad[0]!r} is not a positive number; "
                               "the measurement failed, calibrate again")
    w = [1.0 / t for t in times_s]
    sw = sum(w)
    ss = sum(wi * s for wi, s in zip(w, sizes_bytes))
    st = sum(wi * t for wi, t in zip(w, times_s))
    sss = sum(wi * s * s for wi, s in zip(w, sizes_bytes))
    sst = sum(wi * s * t for wi, s, t in zip(w, sizes_bytes, times_s))
    det = sw * sss - ss * ss
    slope = (sw * sst - ss * st) / det
    alpha = (st - slope * ss) / sw
    if alpha < 0:
        alpha, slope = 0.0, sst / sss
    if slope <= 0:
        raise CalibrationError(
            f"alpha-beta fit: times {[f'{t:.3g}' for t in times_s]} s do not grow with sizes "
            f"{list(sizes_bytes)} bytes, so no bandwidth can be fitted; sweep larger messages "
            "(--sizes) or repeat more (--repeats) on a quieter machine")
    residual = max(abs(alpha + s * slope - t) / t for s, t in zip(sizes_bytes, times_s))
    return AlphaBetaFit(alpha, 1.0 / slope, residual, len(times_s))


def fit_sweep(sweep: P2PSweep) -> AlphaBetaFit:
    """The alpha-beta fit of one pair's sweep."""
    return fit_alpha_beta(sweep.sizes_bytes, sweep.one_way_s)


TRIM_FRACTION = 0.05
"""Share of samples trimmed off each end by `trimmed_mean`."""


def trimmed_mean(values: Sequence[float], trim: float = TRIM_FRACTION) -> float:
    """The mean of `values` less the `trim` share at each end.

    Compute durations are timed to predict a step, which is their sum, so what matters is
    their mean, and it is 0-5% above their median on the validation host (the durations have
    a right tail: cache and scheduler hiccups). Trimming keeps a rare stall of the host, which
    a median step would not show, from weighing on it.
    """
    if not values:
        raise CalibrationError("no samples to average; calibrate again")
    ordered = sorted(values)
    cut = int(len(ordered) * trim)
    kept = ordered[cut:len(ordered) - cut] or ordered
    return float(sum(kept) / len(kept))


def median_across_ranks(values: Sequence[float]) -> float:
    """The median of per-rank medians (ranks measured concurrently)."""
    if not values:
        raise CalibrationError("no rank reported this measurement; calibrate again")
    return float(statistics.median(values))
