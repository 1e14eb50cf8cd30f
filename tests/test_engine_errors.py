"""User-facing errors of the engine and its inputs, each message pinned."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.engine import StepPlan, simulate_plan
from simulator.errors import ScenarioError, ScheduleError
from simulator.hardware import HardwareError, load_hardware, load_profile
from simulator.plan import simulate
from simulator.scenario import load_scenario
from simulator.schedule_ir import Action, Schedule

BYTES = {("forward", 0): 100, ("forward", 1): 200, ("forward", 2): 300,
         ("backward", 1): 100, ("backward", 2): 200, ("backward", 3): 300}


def _actions(text: str) -> list[Action]:
    return [Action.from_str(item) for item in text.split()]


def _plan(schedule: Schedule, send_bytes: dict) -> StepPlan:
    C = schedule.num_chunks
    return StepPlan(schedule, 1, 1, (1.0,) * C, (2.0,) * C, send_bytes)


def test_a_size_mismatch_names_both_ends() -> None:
    """Rank 0 posts chunk 2's forward before micro-batch 1 of chunk 0, but rank 1 receives in
    micro-batch order: per-peer order matching hands rank 1 a 300-byte message for a
    100-byte receive."""
    rank0 = _actions("0F0 0SEND_F0 2RECV_F0 2F0 2SEND_F0 0F1 0SEND_F1 2RECV_F1 2F1 2SEND_F1 "
                     "2RECV_B0 2B0 2SEND_B0 2RECV_B1 2B1 2SEND_B1 0RECV_B0 0B0 0RECV_B1 0B1")
    rank1 = _actions("1RECV_F0 1F0 1SEND_F0 1RECV_F1 1F1 1SEND_F1 3RECV_F0 3F0 3B0 3SEND_B0 "
                     "3RECV_F1 3F1 3B1 3SEND_B1 1RECV_B0 1B0 1SEND_B0 1RECV_B1 1B1 1SEND_B1")
    schedule = Schedule("custom", 2, 2, 2, {0: rank0, 1: rank1})
    with pytest.raises(ScheduleError, match=(
            r"size mismatch: rank 0 2SEND_F0 sends 300 bytes per GPU but rank 1 1RECV_F1 "
            r"expects 100 bytes; messages between two ranks are matched in posting order")):
        simulate_plan(_plan(schedule, BYTES))


def test_an_order_mismatch_names_both_ends() -> None:
    rank0 = _actions("0F0 0SEND_F0 0F1 0SEND_F1 0RECV_B0 0B0 0RECV_B1 0B1")
    rank1 = _actions("1RECV_F1 1F1 1B1 1SEND_B1 1RECV_F0 1F0 1B0 1SEND_B0")
    schedule = Schedule("custom", 2, 1, 2, {0: rank0, 1: rank1})
    with pytest.raises(ScheduleError, match=(
            r"order mismatch: rank 1 1RECV_F1 expects 0SEND_F1 from rank 0, but the next "
            r"message on that channel is 0SEND_F0; post receives in the peer's send order")):
        simulate_plan(_plan(schedule, {("forward", 0): 8, ("backward", 1): 8}))


def test_a_deadlock_lists_every_blocked_rank_instead_of_hanging() -> None:
    rank0 = _actions("0F0 0RECV_B0 0SEND_F0 0B0")
    rank1 = _actions("1RECV_F0 1F0 1B0 1SEND_B0")
    schedule = Schedule("custom", 2, 1, 1, {0: rank0, 1: rank1})
    with pytest.raises(ScheduleError, match=(
            r"deadlock: .* rank 0 blocked at 0RECV_B0 \(action 1 of 4\); "
            r"rank 1 blocked at 1RECV_F0 \(action 0 of 4\)")):
        simulate_plan(_plan(schedule, {("forward", 0): 8, ("backward", 1): 8}))


def test_a_deadlock_names_the_replica_when_there_are_several() -> None:
    rank0 = _actions("0F0 0RECV_B0 0SEND_F0 0B0")
    rank1 = _actions("1RECV_F0 1F0 1B0 1SEND_B0")
    schedule = Schedule("custom", 2, 1, 1, {0: rank0, 1: rank1})
    plan = StepPlan(schedule, 2, 1, (1.0, 1.0), (1.0, 1.0),
                    {("forward", 0): 8, ("backward", 1): 8})
    with pytest.raises(ScheduleError, match=r"rank 1 of replica 1 blocked at 1RECV_F0"):
        simulate_plan(plan)


def _tiny(**extra: object) -> dict:
    return {"name": "tiny", "model": {"num_layers": 2, "hidden_size": 64, "num_heads": 2,
                                      "ffn_hidden_size": 128, "vocab_size": 100, "seq_len": 16},
            "pipeline": {"num_stages": 2, "num_microbatches": 2}} | extra


def test_a_scenario_without_hardware_or_topology_says_which_key_to_add() -> None:
    with pytest.raises(HardwareError, match=r"the scenario names no hardware: add `hardware: "
                                            r"h100` \(presets: a100, h100, h200, b200\)"):
        simulate(load_scenario(_tiny(topology="ideal")))
    with pytest.raises(ScenarioError, match=r"topology: the scenario names no topology; add "
                                            r"`topology:` .* or `topology: ideal`"):
        simulate(load_scenario(_tiny(hardware="h100")))


def test_hardware_errors_name_the_key_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(HardwareError, match=r"hardware = 'h900': not a preset or a .yaml file; "
                                            r"use one of a100, h100, h200, b200"):
        load_hardware("h900")
    with pytest.raises(HardwareError, match=r"hardware.preset = 'x': unknown preset"):
        load_hardware({"preset": "x"})
    with pytest.raises(HardwareError, match=r"compute_efficiency = 1.5: Input should be less "
                                            r"than or equal to 1"):
        load_hardware({"preset": "h100", "compute_efficiency": 1.5})
    with pytest.raises(HardwareError, match=r"peak_flops: unknown key"):
        load_hardware({"preset": "h100", "peak_flops": 1.0})
    bad = tmp_path / "profile.yaml"
    bad.write_text("device: cpu\nsublayers:\n  - {kind: attention}\n")
    with pytest.raises(HardwareError, match=r"profile.yaml: sublayers.0.hidden_size: required "
                                            r"key is missing; add it"):
        load_profile(bad)
    with pytest.raises(FileNotFoundError, match=r"hardware file not found"):
        load_hardware("missing.yaml", tmp_path)


def test_hardware_presets_cite_a_source_for_every_number() -> None:
    numeric = ("peak_flops_per_s", "hbm_bytes_per_s", "hbm_capacity_bytes", "compute_efficiency",
               "memory_efficiency", "tensor_parallel_bandwidth_bytes_per_s",
               "tensor_parallel_latency_s")
    for name in ("a100", "h100", "h200", "b200", "h100-sxm"):
        spec = load_hardware(name)
        assert set(numeric) <= set(spec.sources), name


def test_a_negative_chunk_duration_names_the_chunk() -> None:
    schedule = Schedule("custom", 1, 1, 1, {0: _actions("0F0 0B0")})
    with pytest.raises(ValueError, match=(
            r"backward_s\[0\] = -1.0: a chunk's duration must be >= 0 seconds; check the cost "
            r"model or the plan built by hand")):
        StepPlan(schedule, 1, 1, (1.0,), (-1.0,), {})
