"""The torch-free half of calibration: alpha-beta fit, one-way times, shapes, message sizes,
the estimators of compute time and per-tensor and per-byte host costs."""

from __future__ import annotations

import random

import pytest

from simulator.calibrate import (
    CalibrationError, CalibrationPlan, P2PSweep, TrafficLoadProbe, default_message_sizes,
    fit_alpha_beta, fit_sweep, end_slope, shapes_for, trimmed_mean,
)
from simulator.manifest import build_manifest
from simulator.scenario import load_scenario

BASE = {"name": "s", "model": {"num_layers": 2, "hidden_size": 64, "num_heads": 4,
                               "ffn_hidden_size": 256, "vocab_size": 100, "seq_len": 16,
                               "dtype": "fp32"},
        "pipeline": {"num_stages": 2, "num_microbatches": 2}}


def test_exact_alpha_beta_is_recovered():
    sizes = [1024, 4096, 65536, 1 << 20, 4 << 20]
    times = [50e-6 + s / 2e9 for s in sizes]
    fit = fit_alpha_beta(sizes, times)
    assert fit.latency_s == pytest.approx(50e-6, rel=1e-9)
    assert fit.bandwidth_bytes_per_s == pytest.approx(2e9, rel=1e-9)
    assert fit.max_relative_residual == pytest.approx(0.0, abs=1e-9)
    assert fit.predict_s(1 << 20) == pytest.approx(times[3])


def test_noisy_points_fit_within_the_noise():
    rng = random.Random(0)
    sizes = [4 ** k * 1024 for k in range(7)] * 3
    times = [(1e-4 + s / 5e8) * (1 + rng.uniform(-0.05, 0.05)) for s in sizes]
    fit = fit_alpha_beta(sizes, times)
    assert fit.latency_s == pytest.approx(1e-4, rel=0.1)
    assert fit.bandwidth_bytes_per_s == pytest.approx(5e8, rel=0.1)
    assert fit.max_relative_residual < 0.12


def test_a_negative_intercept_is_clamped_to_zero():
    sizes = [1000, 2000, 4000]
    fit = fit_alpha_beta(sizes, [0.5e-6, 1.6e-6, 3.9e-6])  # a line through (0, -0.5 us)
    assert fit.latency_s == 0.0
    assert fit.bandwidth_bytes_per_s > 0


@pytest.mark.parametrize("sizes, times, message", [
    ([1024, 1024], [1e-4, 2e-4], "fewer than two distinct values"),
    ([1024, 2048], [1e-4, 0.0], "is not a positive number"),
    ([1024, 1 << 20], [2e-3, 1e-3], "do not grow with sizes"),
    ([1024], [1e-4, 2e-4], "1 sizes but 2 times"),
])
def test_unfittable_sweeps_say_why(sizes, times, message):
    with pytest.raises(CalibrationError, match=message):
        fit_alpha_beta(sizes, times)


def test_a_sweep_fits_its_one_way_times():
    sizes = [1024, 65536, 1 << 20]
    sweep = P2PSweep(src_rank=0, dst_rank=1, sizes_bytes=sizes,
                     one_way_s=[30e-6 + s / 1e9 for s in sizes], sender_busy=True)
    fit = fit_sweep(sweep)
    assert fit.latency_s == pytest.approx(30e-6)
    assert fit.bandwidth_bytes_per_s == pytest.approx(1e9)
    assert fit.num_points == 3


def test_shapes_merge_and_keep_the_most_sources():
    standard = load_scenario(BASE)
    block = load_scenario({**BASE, "residual": {"kind": "block", "num_blocks": 2}})
    full = load_scenario({**BASE, "residual": {"kind": "full"}})
    shapes = shapes_for([standard, block, full])
    assert len(shapes) == 1 and shapes[0].max_sources == 5  # Full AttnRes: L + 1 = 5
    wider = load_scenario({**BASE, "model": {**BASE["model"], "hidden_size": 128}})
    assert [s.max_sources for s in shapes_for([standard, wider])] == [0, 0]
    assert shapes[0].plane_bytes == 16 * 64 * 4


def test_message_sizes_cover_twice_the_largest_transition():
    block = load_scenario({**BASE, "residual": {"kind": "full"},
                           "model": {**BASE["model"], "seq_len": 4096}})
    largest = build_manifest(block).peak_bytes("naive")
    sizes = default_message_sizes([block])
    assert sizes[0] == 1024 and all(b == 4 * a for a, b in zip(sizes, sizes[1:]))
    assert sizes[-1] >= 2 * largest > sizes[-2]


def test_a_plan_needs_a_scenario():
    with pytest.raises(CalibrationError, match="no scenario given"):
        CalibrationPlan.for_scenarios([], 2)


def test_a_zero_latency_fit_still_makes_a_valid_topology():
    from simulator.calibrate_files import Calibration
    from simulator.calibrate_memory import ActivationProfile
    from simulator.hardware import MeasuredProfile, P2PTiming, load_hardware
    from topologies import load_topology

    profile = MeasuredProfile(device="x", p2p=[P2PTiming(src_gpu="proc0", dst_gpu="proc1",
                                                         latency_s=0.0,
                                                         bandwidth_bytes_per_s=2.5e7)])
    hardware = load_hardware({"preset": "h100", "profile": profile.model_dump()})
    calibration = Calibration(hardware, ActivationProfile(device="x"))
    graph = load_topology(calibration.topology(2))
    assert graph.number_of_nodes() == 4


def test_the_trimmed_mean_keeps_the_tail_but_not_a_stall():
    """20 samples: 5% off each end drops exactly the fastest and the slowest."""
    samples = [1.0] * 14 + [1.3] * 4 + [0.5, 50.0]
    assert trimmed_mean(samples) == pytest.approx((14 * 1.0 + 4 * 1.3) / 18)
    assert trimmed_mean([2.0]) == 2.0
    with pytest.raises(CalibrationError, match="no samples"):
        trimmed_mean([])


def test_per_tensor_cost_is_the_slope_between_the_counts():
    assert end_slope([1, 8], [1e-4, 8e-4]) == pytest.approx(1e-4)
    assert end_slope([1, 8], [2e-4, 1e-4]) == 0.0  # never negative
    assert end_slope([], []) == 0.0 and end_slope([4], [1e-3]) == 0.0


def _sweep(**busy: object) -> P2PSweep:
    return P2PSweep(src_rank=0, dst_rank=1, sizes_bytes=[1024, 1 << 20],
                    one_way_s=[1e-4, 5e-4], send_call_s=[1e-4, 3e-4], sender_busy=False,
                    **busy)  # type: ignore[arg-type]


def test_the_busy_send_cost_splits_into_a_fixed_part_and_a_slope():
    sweep = _sweep(busy_sizes_bytes=[1000, 1_001_000], busy_send_call_s=[3e-4, 1.3e-3])
    assert sweep.busy_send_s_per_byte == pytest.approx(1e-9)
    assert sweep.busy_send_overhead_s == pytest.approx(3e-4 - 1e-6)
    assert _sweep().busy_send_overhead_s is None and _sweep().busy_send_s_per_byte == 0.0


def test_the_profile_takes_the_busy_send_cost_where_the_probe_ran():
    """With the busy probe the send's fixed part comes from it and bytes cost its slope;
    without it the idle sweep's median call is the whole send cost."""
    from simulator.calibrate_files import _send_overhead_s

    busy = [_sweep(busy_sizes_bytes=[1000, 1_001_000], busy_send_call_s=[t, t + 1e-3])
            for t in (2e-4, 4e-4)]
    assert _send_overhead_s(busy) == pytest.approx(3e-4 - 1e-6)
    assert _send_overhead_s([_sweep(), _sweep()]) == pytest.approx(2e-4)


def test_the_traffic_cost_is_the_slowdown_per_byte_moved():
    probe = TrafficLoadProbe(src_rank=0, dst_rank=1, role="send", calls=8, idle_s=0.04,
                             loaded_s=0.06, bytes_moved=1e6, num_rounds=4)
    assert probe.cpu_s_per_byte == pytest.approx(2e-8)
    faster = probe.model_copy(update={"loaded_s": 0.03})
    assert faster.cpu_s_per_byte == 0.0  # a faster loaded window is noise, not a gain
    assert probe.model_copy(update={"bytes_moved": 0.0}).cpu_s_per_byte == 0.0


def test_the_helper_cost_is_the_communication_threads_cpu_per_byte():
    probe = TrafficLoadProbe(src_rank=0, dst_rank=1, role="recv", calls=8, idle_s=0.04,
                             loaded_s=0.05, bytes_moved=1e6, num_rounds=4,
                             idle_helper_cpu_s=1e-4, loaded_helper_cpu_s=6e-4)
    assert probe.helper_cpu_s_per_byte == pytest.approx(5e-10)
    assert probe.model_copy(update={"loaded_helper_cpu_s": 0.0}).helper_cpu_s_per_byte == 0.0


@pytest.mark.parametrize(("device", "loaded_s", "expected"),
                         [("cpu (2 cores, 1 threads per rank)", 0.0402, 5e-10),
                          ("cpu (2 cores, 1 threads per rank)", 0.05, 1e-8),
                          ("NVIDIA H100 80GB HBM3", 0.0402, 2e-10)])
def test_a_cpu_profile_charges_at_least_the_threads_cpu_and_a_gpu_one_the_slowdown(
        device, loaded_s, expected):
    """CPU ranks share their cores with the communication threads: their CPU per byte is
    compute lost, or the slowdown where the kernel's work makes it larger. On GPUs the
    kernels' slowdown is."""
    from simulator.calibrate import RankMeasurements
    from simulator.calibrate_files import _traffic_costs

    probe = TrafficLoadProbe(src_rank=0, dst_rank=1, role="send", calls=8, idle_s=0.04,
                             loaded_s=loaded_s, bytes_moved=1e6, num_rounds=4,
                             idle_helper_cpu_s=1e-4, loaded_helper_cpu_s=6e-4)
    rank = RankMeasurements(rank=0, world_size=2, backend="gloo", device=device, hostname="h",
                            num_threads=1, device_memory_bytes=1, shapes=[],
                            matmul_flops_per_s=1.0, elementwise_bytes_per_s=1.0, p2p=[],
                            traffic_load=[probe])
    costs = _traffic_costs([rank])
    assert costs["send_cpu_s_per_byte"] == pytest.approx(expected)
    assert costs["recv_cpu_s_per_byte"] == 0.0
