"""The executor probe: which one-rank runs calibrate plans, how the gaps are read, what is charged."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.calibrate import CalibrationPlan
from simulator.calibrate_executor import executor_overhead_s, executor_probes_for
from simulator.hardware import ExecutorOverhead, load_hardware
from simulator.layout import build_layout
from simulator.plan import build_plan, resolve_fabric
from simulator.scenario import Scenario, load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


def _cpu(name: str) -> Scenario:
    return load_scenario(SCENARIOS / f"{name}.yaml")


def test_a_probe_is_the_scenario_on_one_stage_cut_to_a_chunk() -> None:
    """P = 2, V = 2 over 8 sublayers: chunks of 2; the probe is one layer, its block size
    capped at 2, the rest of the model and the mode kept."""
    scenario = _cpu("cpu_block_cached_interleaved")
    [probe] = executor_probes_for([scenario])
    assert (probe.residual_kind, probe.num_sublayers) == ("block", 2)
    run = Scenario.model_validate(probe.scenario)
    assert run.model.num_sublayers == 2 and run.residual.block_size == 2
    assert run.model.hidden_size == scenario.model.hidden_size
    assert run.model.seq_len == scenario.model.seq_len
    p = run.pipeline
    assert (p.num_stages, p.num_virtual_stages, p.schedule, p.comm_mode) == \
        (1, 1, "1f1b", "cached")
    assert list(build_layout(run).chunk_sublayer_counts) == [2]


def test_probes_are_one_per_kind_and_chunk_size_across_scenarios() -> None:
    names = ["cpu_block_cached_interleaved", "cpu_block_naive_interleaved",
             "cpu_block_naive_gpipe", "cpu_standard_1f1b", "cpu_full_naive_interleaved"]
    probes = executor_probes_for([_cpu(n) for n in names])
    assert sorted((p.residual_kind, p.num_sublayers) for p in probes) == [
        ("block", 2), ("block", 4), ("full", 2), ("standard", 4)]
    plan = CalibrationPlan.for_scenarios([_cpu(names[0])], 2)
    assert [p.num_sublayers for p in plan.executor_probes] == [2]
    assert CalibrationPlan.for_scenarios([_cpu(names[0])], 2,
                                         executor_probes=[]).executor_probes == []


def test_uneven_cuts_probe_each_chunk_size_in_whole_layers() -> None:
    """10 sublayers over P = 2 cut 3 + 7: the 3 is probed as 4 sublayers (two layers), the 7
    as 8 (four); the plan interpolates at 3 and 7 between them."""
    scenario = Scenario.model_validate({
        "name": "uneven", "model": {"num_layers": 5, "hidden_size": 64, "num_heads": 4,
                                    "ffn_hidden_size": 128, "vocab_size": 64, "seq_len": 16},
        "residual": {"kind": "standard"},
        "pipeline": {"num_stages": 2, "num_microbatches": 2, "sublayers_per_chunk": [3, 7]}})
    assert list(build_layout(scenario).chunk_sublayer_counts) == [3, 7]
    assert sorted(p.num_sublayers for p in executor_probes_for([scenario])) == [4, 8]


def test_the_overhead_is_interpolated_between_measured_chunk_sizes() -> None:
    entries = [ExecutorOverhead(residual_kind="block", num_sublayers=2, after_forward_s=1.0,
                                after_backward_s=2.0),
               ExecutorOverhead(residual_kind="block", num_sublayers=6, after_forward_s=3.0,
                                after_backward_s=10.0),
               ExecutorOverhead(residual_kind="standard", num_sublayers=4, after_forward_s=0.5,
                                after_backward_s=0.7)]
    assert executor_overhead_s(entries, "block", 4) == pytest.approx((2.0, 6.0))
    assert executor_overhead_s(entries, "block", 3) == pytest.approx((1.5, 4.0))
    assert executor_overhead_s(entries, "block", 1) == (1.0, 2.0)  # below: the nearest
    assert executor_overhead_s(entries, "block", 9) == (3.0, 10.0)  # above: the nearest
    assert executor_overhead_s(entries, "standard", 2) == (0.5, 0.7)
    assert executor_overhead_s(entries, "full", 2) == (0.0, 0.0)  # not measured: none


def test_the_plan_charges_each_chunk_its_interpolated_overhead() -> None:
    """cpu_block_naive_gpipe has chunks of 4 sublayers: halfway between probes at 2 and 6."""
    scenario = _cpu("cpu_block_naive_gpipe")
    profile = {"device": "test", "executor_overhead": [
        {"residual_kind": "block", "num_sublayers": 2, "after_forward_s": 1e-4,
         "after_backward_s": 2e-4},
        {"residual_kind": "block", "num_sublayers": 6, "after_forward_s": 3e-4,
         "after_backward_s": 6e-4}]}
    hardware = load_hardware({"preset": "h100", "profile": profile})
    plan = build_plan(scenario, hardware, resolve_fabric(scenario, "ideal"))
    assert plan.forward_host_s == pytest.approx((2e-4, 2e-4))
    assert plan.backward_host_s == pytest.approx((4e-4, 4e-4))
    without = build_plan(scenario, load_hardware({"preset": "h100"}),
                         resolve_fabric(scenario, "ideal"))
    assert without.forward_host_s == () and without.backward_host_s == ()


def test_gaps_are_read_per_step_after_forwards_and_backwards() -> None:
    from real_runner.calibration_executor import gaps_after_compute
    from simulator.trace_schema import ComputeRecord

    def rec(step: int, kind: str, start: float, end: float) -> ComputeRecord:
        return ComputeRecord(step=step, action=f"{kind}0,0", kind=kind, chunk=0,
                             microbatch=0, start_s=start, end_s=end)

    records = [rec(1, "F", 0.0, 1.0), rec(1, "B", 1.25, 2.0), rec(1, "F", 2.5, 3.0),
               rec(2, "B", 3.5, 4.0), rec(1, "B", 3.0625, 3.25)]  # out of order on purpose
    after_f, after_b = gaps_after_compute(records)
    assert after_f == [0.25, 0.0625]  # the step-2 record does not close step 1's last gap
    assert after_b == [0.5]
