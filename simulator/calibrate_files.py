"""A calibration directory: from raw per-rank measurements to the files the simulator reads.

`pipesim calibrate --out DIR` leaves:

    profile.yaml       MeasuredProfile (simulator/hardware.py): sublayer and aggregation seconds,
                       p2p alpha-beta per directed rank pair (ranks named by gpu_name_pattern)
    hardware.yaml      a HardwareSpec of this machine (`profile: profile.yaml`): peaks are the
                       measured matmul FLOP/s and elementwise bytes/s, efficiencies 1
    activations.yaml   ActivationProfile (simulator/calibrate_memory.py): saved-for-backward bytes
    topology.yaml      a host_loopback spec with the measured link (for K local processes)
    calibration.json   the plan, every alpha-beta fit with its residual, and the raw sweeps

Across ranks, each figure is the median of the ranks' own medians (they measured at once).

    calib = load_calibration("runs/calib")
    result = simulate(scenario, hardware=calib.hardware, topology=calib.topology(2))
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simulator.calibrate import (
    PIECES,
    AlphaBetaFit,
    CalibrationError,
    CalibrationPlan,
    P2PSweep,
    RankMeasurements,
    end_slope,
    median_across_ranks,
    fit_sweep,
)
from simulator.calibrate_memory import (
    ActivationProfile,
    AggregationSaved,
    PieceSaved,
    SavedBytesAtShape,
    load_activation_profile,
)
from simulator.hardware import (
    AggregationTiming,
    ExecutorOverhead,
    HardwareSpec,
    MeasuredProfile,
    P2PTiming,
    SublayerTiming,
    load_hardware,
)

__all__ = ["Calibration", "build_calibration", "write_calibration", "load_calibration",
           "CALIBRATION_FILES"]

CALIBRATION_FILES = ("profile.yaml", "hardware.yaml", "activations.yaml", "topology.yaml",
                     "calibration.json")
"""What a calibration directory holds."""


@dataclass
class Calibration:
    """Everything one calibration measured, in the simulator's formats."""

    hardware: HardwareSpec
    """The machine, its measured profile attached."""
    activations: ActivationProfile
    fits: dict[str, AlphaBetaFit] = field(default_factory=dict)
    """"src->dst" (ranks) -> the alpha-beta fit of that pair."""
    record: dict[str, Any] = field(default_factory=dict)
    """calibration.json: plan, fits, raw sweeps, machine."""
    directory: Path | None = None

    @property
    def profile(self) -> MeasuredProfile:
        """The measured profile."""
        assert self.hardware.profile is not None
        return self.hardware.profile

    def link(self) -> tuple[float, float]:
        """(latency_s, bandwidth_bytes_per_s): medians over the measured pairs."""
        entries = self.profile.p2p
        if not entries:
            raise CalibrationError("the calibration has no point-to-point measurement; calibrate "
                                   "with --nproc 2 or more")
        return (statistics.median(e.latency_s for e in entries),
                statistics.median(e.bandwidth_bytes_per_s for e in entries))

    def topology(self, num_processes: int) -> dict[str, Any]:
        """A host_loopback topology spec: K processes sharing the measured link."""
        latency_s, bandwidth = self.link()
        # a fit may put the latency at 0; the builder wants it positive (pairs override it)
        return {"builder": "host_loopback", "num_processes": num_processes,
                "loopback_bytes_per_s": bandwidth, "loopback_latency_s": max(latency_s, 1e-9),
                "description": f"{num_processes} processes sharing the loopback measured by "
                               f"pipesim calibrate ({self.profile.device})"}


def build_calibration(plan: CalibrationPlan, ranks: list[RankMeasurements], *,
                      created_by: str = "pipesim calibrate",
                      executor: Sequence[ExecutorOverhead] = ()) -> Calibration:
    """Turn every rank's raw measurements into a profile, a hardware spec and saved bytes
    (`executor`: the executor probes' results, simulator/calibrate_executor.py)."""
    if len(ranks) != plan.nproc:
        raise CalibrationError(f"expected raw measurements of {plan.nproc} ranks, got "
                               f"{len(ranks)}; a calibration process failed, see its log")
    ranks = sorted(ranks, key=lambda r: r.rank)
    first = ranks[0]
    device = f"{first.device} on {first.hostname} ({plan.backend}, {plan.nproc} processes)"
    sublayers, aggregation, activations = [], [], []
    for index, shape in enumerate(plan.shapes):
        per_rank = [r.shapes[index] for r in ranks]
        assert all(m.shape == shape for m in per_rank), "ranks measured different shapes"
        keys = dict(hidden_size=shape.hidden_size, seq_len=shape.seq_len,
                    micro_batch_size=shape.micro_batch_size, dtype=shape.dtype)
        for kind in PIECES:
            timings = [next(p for p in m.pieces if p.kind == kind) for m in per_rank]
            sublayers.append(SublayerTiming(
                kind=kind, num_heads=shape.num_heads, ffn_hidden_size=shape.ffn_hidden_size,
                vocab_size=shape.vocab_size, tensor_parallel=1, **keys,
                forward_s=median_across_ranks([t.forward_s for t in timings]),
                backward_s=median_across_ranks([t.backward_s for t in timings])))
        for point_index, point in enumerate(per_rank[0].aggregation):
            points = [m.aggregation[point_index] for m in per_rank]
            aggregation.append(AggregationTiming(
                num_sources=point.num_sources, **keys,
                forward_s=median_across_ranks([p.forward_s for p in points]),
                backward_s=median_across_ranks([p.backward_s for p in points])))
        activations.append(_saved_at_shape(per_rank[0]))
    fits, p2p = {}, []
    for r in ranks:
        for sweep in r.p2p:
            fit = fit_sweep(sweep)
            fits[f"{sweep.src_rank}->{sweep.dst_rank}"] = fit
            p2p.append(P2PTiming(src_gpu=plan.gpu_name_pattern.format(rank=sweep.src_rank),
                                 dst_gpu=plan.gpu_name_pattern.format(rank=sweep.dst_rank),
                                 latency_s=fit.latency_s,
                                 bandwidth_bytes_per_s=fit.bandwidth_bytes_per_s))
    probes = [probe for r in ranks for probe in r.late_receive]
    sweeps = [sweep for r in ranks for sweep in r.p2p]
    counted = [s for s in sweeps if s.post_calls_by_count_s]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    profile = MeasuredProfile(
        device=device, created_by=f"{created_by} ({stamp})", sublayers=sublayers,
        aggregation=aggregation, p2p=p2p,
        late_receive_overhead_s=_median_or_zero([p.overhead_s for p in probes]),
        send_overhead_s=_send_overhead_s(sweeps),
        recv_overhead_s=_median_or_zero([s.recv_in_place_s for s in sweeps]),
        send_overhead_per_tensor_s=_median_or_zero(
            [end_slope(s.tensor_counts, s.send_calls_by_count_s) for s in counted]),
        send_s_per_byte=_median_or_zero(
            [s.busy_send_s_per_byte for s in sweeps if s.busy_send_overhead_s is not None]),
        recv_post_s=_median_or_zero([s.post_calls_by_count_s[0] for s in counted]),
        recv_post_per_tensor_s=_median_or_zero(
            [end_slope(s.tensor_counts, s.post_calls_by_count_s) for s in counted]),
        executor_overhead=list(executor), **_traffic_costs(ranks))
    hardware = _hardware(plan, ranks, profile, fits, stamp)
    record = {
        "plan": plan.model_dump(mode="json"), "created": stamp, "device": device,
        "fits": {pair: vars(fit) for pair, fit in fits.items()},
        "sender_busy": plan.sender_busy,
        "matmul_flops_per_s": [r.matmul_flops_per_s for r in ranks],
        "elementwise_bytes_per_s": [r.elementwise_bytes_per_s for r in ranks],
        "num_threads": [r.num_threads for r in ranks],
        "p2p": [s.model_dump(mode="json") for r in ranks for s in r.p2p],
        "late_receive": [p.model_dump(mode="json") for p in probes],
        "traffic_load": [p.model_dump(mode="json") for r in ranks for p in r.traffic_load],
        "shapes": [m.model_dump(mode="json") for r in ranks for m in r.shapes],
        "executor_overhead": [e.model_dump(mode="json") for e in executor],
    }
    activation_profile = ActivationProfile(device=device, created_by=profile.created_by,
                                           shapes=activations)
    return Calibration(hardware, activation_profile, fits, record)


def _send_overhead_s(sweeps: list[P2PSweep]) -> float:
    """The send call's fixed host time: from the busy send probe where it ran (its bytes are
    then charged per byte), else the idle sweep's median call."""
    busy = [s.busy_send_overhead_s for s in sweeps if s.busy_send_overhead_s is not None]
    return _median_or_zero(busy or [statistics.median(s.send_call_s) for s in sweeps
                                    if s.send_call_s])


def _median_or_zero(values: list[float]) -> float:
    """The median over ranks of a measurement, 0 where no rank made it (e.g. one process)."""
    return median_across_ranks(values) if values else 0.0


def _traffic_costs(ranks: list[RankMeasurements]) -> dict[str, float]:
    """send_cpu_s_per_byte and recv_cpu_s_per_byte from the traffic-load probes (0 without).

    The compute's slowdown per byte, and on CPU devices at least the communication threads' CPU
    per byte: the ranks' compute shares their cores, and CPU time does not move with the host's
    speed between rounds as the window's slowdown does; but the kernel's own network work
    (softirqs, a token bucket's timers) is not the process's CPU, and on a shaped link it is
    most of the cost, so the slowdown still counts where it is larger.
    """
    probes = [p for r in ranks for p in r.traffic_load]
    on_cpu = all(r.device.startswith("cpu") for r in ranks)
    return {f"{role}_cpu_s_per_byte": _median_or_zero(
        [max(p.cpu_s_per_byte, p.helper_cpu_s_per_byte) if on_cpu else p.cpu_s_per_byte
         for p in probes if p.role == role]) for role in ("send", "recv")}


def _saved_at_shape(measured: Any) -> SavedBytesAtShape:
    shape = measured.shape
    saved = {rec.kind: rec for rec in measured.saved}

    def piece(kind: str) -> PieceSaved:
        return PieceSaved(internal_bytes=saved[kind].saved_bytes,
                          input_saved=saved[kind].input_saved)

    return SavedBytesAtShape(
        hidden_size=shape.hidden_size, num_heads=shape.num_heads,
        ffn_hidden_size=shape.ffn_hidden_size, vocab_size=shape.vocab_size,
        seq_len=shape.seq_len, micro_batch_size=shape.micro_batch_size, dtype=shape.dtype,
        mlp=shape.mlp, plane_bytes=shape.plane_bytes, attention=piece("attention"),
        mlp_sublayer=piece("mlp"), embedding=piece("embedding"), head=piece("head"),
        targets_saved=saved["head"].second_input_saved,
        index_bytes_per_token=measured.index_bytes_per_token,
        aggregation=[AggregationSaved(num_sources=p.num_sources, internal_bytes=p.saved_bytes)
                     for p in measured.aggregation],
        sources_saved=all(p.sources_saved for p in measured.aggregation))


def _hardware(plan: CalibrationPlan, ranks: list[RankMeasurements], profile: MeasuredProfile,
              fits: dict[str, AlphaBetaFit], stamp: str) -> HardwareSpec:
    where = f"measured by pipesim calibrate on {ranks[0].hostname}, {stamp}"
    latency = statistics.median(f.latency_s for f in fits.values()) if fits else 0.0
    bandwidth = (statistics.median(f.bandwidth_bytes_per_s for f in fits.values())
                 if fits else 1e12)
    return HardwareSpec(
        name=f"calibrated-{ranks[0].hostname}",
        description=f"{ranks[0].device}, calibrated with {plan.backend} on {plan.nproc} "
                    "processes",
        peak_flops_per_s=median_across_ranks([r.matmul_flops_per_s for r in ranks]),
        hbm_bytes_per_s=median_across_ranks([r.elementwise_bytes_per_s for r in ranks]),
        hbm_capacity_bytes=float(min(r.device_memory_bytes for r in ranks)),
        compute_efficiency=1.0, memory_efficiency=1.0,
        tensor_parallel_bandwidth_bytes_per_s=bandwidth, tensor_parallel_latency_s=latency,
        sources={
            "peak_flops_per_s": f"{where}: matmul at the largest MLP shape (so efficiency 1)",
            "hbm_bytes_per_s": f"{where}: elementwise add of one activation plane",
            "hbm_capacity_bytes": f"{where}: device memory",
            "tensor_parallel_bandwidth_bytes_per_s": f"{where}: median p2p alpha-beta fit "
                                                     "(no TP collectives were measured)",
            "tensor_parallel_latency_s": f"{where}: median p2p alpha-beta fit",
        },
        profile=profile)


def _dump_yaml(path: Path, data: Any, header: str) -> Path:
    path.write_text(f"# {header}\n" + yaml.safe_dump(data, sort_keys=False, width=100))
    return path


def write_calibration(calibration: Calibration, out_dir: str | Path) -> list[Path]:
    """Write the files of a calibration directory (CALIBRATION_FILES)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hardware = calibration.hardware.model_dump(mode="json", exclude={"profile"})
    hardware["profile"] = "profile.yaml"
    nproc = int(calibration.record.get("plan", {}).get("nproc", 2))
    written = [
        _dump_yaml(out / "profile.yaml", calibration.profile.model_dump(mode="json"),
                   "Measured profile written by pipesim calibrate (simulator/hardware.py)."),
        _dump_yaml(out / "hardware.yaml", hardware,
                   "This machine as a hardware spec; use it as a scenario's `hardware:`."),
        _dump_yaml(out / "activations.yaml", calibration.activations.model_dump(mode="json"),
                   "Saved-for-backward bytes per piece (simulator/calibrate_memory.py)."),
    ]
    if calibration.profile.p2p:
        written.append(_dump_yaml(out / "topology.yaml", calibration.topology(nproc),
                                  "The measured loopback as a host_loopback topology."))
    record = out / "calibration.json"
    record.write_text(json.dumps(calibration.record, indent=1))
    written.append(record)
    calibration.directory = out
    return written


def load_calibration(directory: str | Path) -> Calibration:
    """Read a calibration directory written by `pipesim calibrate`.

    Raises:
        FileNotFoundError: the directory or one of its files is missing.
        HardwareError, ActivationProfileError: a file is malformed.
    """
    path = Path(directory)
    if not path.is_dir():
        raise FileNotFoundError(f"calibration directory not found: {path} (create one with "
                                "`pipesim calibrate SCENARIO --nproc K --out DIR`)")
    hardware = load_hardware("hardware.yaml", base_dir=path)
    activations = load_activation_profile(path / "activations.yaml")
    record: dict[str, Any] = {}
    fits: dict[str, AlphaBetaFit] = {}
    if (path / "calibration.json").is_file():
        record = json.loads((path / "calibration.json").read_text())
        fits = {pair: AlphaBetaFit(**fit) for pair, fit in record.get("fits", {}).items()}
    return Calibration(hardware, activations, fits, record, path)
