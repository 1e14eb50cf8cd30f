"""What keeps the engine fast must not change what it computes: batched SimPy events, the
generator driver, the paused garbage collector and reference-cycle-free engine objects."""

from __future__ import annotations

import gc
import json
import math
from dataclasses import replace
from typing import Any

import pytest
import simpy
from simpy.events import NORMAL

import simulator.engine as engine_module
from simulator.engine import StepPlan, simulate_plan
from simulator.fabric import Fabric, ideal_fabric
from simulator.hardware import load_hardware
from simulator.plan import build_plan, resolve_fabric
from simulator.scenario import load_scenario
from simulator.schedule import build_schedule
from simulator.sim_env import BatchingEnvironment, Wakeup, call_in, gc_paused

TOPOLOGY = {"builder": "multi_rack", "num_racks": 2, "nodes_per_rack": 2, "gpus_per_node": 4,
            "nics_per_node": 4}


class _Unbatched(BatchingEnvironment):
    """One SimPy event per callback, as a plain environment schedules them; counts steps."""

    steps = 0

    def call_in(self, delay: float, callback: Any) -> None:
        wakeup = Wakeup([callback])
        simpy.Environment.schedule(self, wakeup, NORMAL, delay)  # type: ignore[arg-type]

    def step(self) -> None:
        type(self).steps += 1
        super().step()


class _Counted(BatchingEnvironment):
    steps = 0

    def step(self) -> None:
        type(self).steps += 1
        super().step()


def _hops(num_chunks: int, num_bytes: int) -> dict[tuple[str, int], int]:
    forward = {("forward", c): num_bytes for c in range(num_chunks - 1)}
    return forward | {("backward", c): num_bytes // 2 for c in range(1, num_chunks)}


def _shared_core(replicas: int, stages: int) -> Fabric:
    """Every replica's traffic crosses one 4 GB/s core link: flows contend and get re-rated."""
    links = {("in", "out"): (4e9, 1e-6), ("out", "in"): (4e9, 1e-6)}
    for dp in range(replicas):
        for pp in range(stages):
            links[((dp, pp), "in")] = (math.inf, 5e-7)
            links[("out", (dp, pp))] = (50e9, 5e-7)
    return Fabric(links, lambda dp, pp, tp: (dp, pp),
                  lambda src, dst: ((src, "in"), ("in", "out"), ("out", dst)))


def _plans() -> dict[str, StepPlan]:
    scenario = load_scenario({
        "name": "batching", "model": {"num_layers": 4, "hidden_size": 256, "num_heads": 4,
                                      "ffn_hidden_size": 1024, "vocab_size": 1000,
                                      "seq_len": 128},
        "residual": {"kind": "block", "block_size": 2},
        "pipeline": {"schedule": "interleaved-1f1b", "num_stages": 2, "num_virtual_stages": 2,
                     "num_microbatches": 6, "comm_mode": "cached"},
        "parallelism": {"data_parallel": 4, "tensor_parallel": 2},
        "hardware": "h100", "topology": TOPOLOGY, "placement": "spread-racks"})
    real = build_plan(scenario, load_hardware("h100"), resolve_fabric(scenario))
    schedule = build_schedule("1f1b", 4, 1, 8)
    star = StepPlan(schedule, 3, 1, (1e-3,) * 4, (2e-3,) * 4, _hops(4, 6 << 20),
                    allreduce_step_bytes=((1 << 20,) * 4,) * 4,
                    fabric=ideal_fabric(3, 4, bandwidth_bytes_per_s=8e9, latency_s=1e-6))
    core = StepPlan(build_schedule("gpipe", 2, 1, 4), 3, 1, (1e-3, 1e-3), (1e-3, 1e-3),
                    _hops(2, 3 << 20), allreduce_step_bytes=((1 << 21,) * 4,) * 2,
                    fabric=_shared_core(3, 2))
    return {"topology, TP 2": real, "star, all-reduce": star, "shared core": core,
            "rendezvous": replace(core, p2p_protocol="rendezvous")}


@pytest.mark.parametrize("name", ["topology, TP 2", "star, all-reduce", "shared core",
                                  "rendezvous"])
def test_batched_events_give_byte_identical_results(name: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _plans()[name]
    _Counted.steps = _Unbatched.steps = 0
    monkeypatch.setattr(engine_module, "BatchingEnvironment", _Counted)
    batched = simulate_plan(plan).to_json(max_timeline_links=None, max_timeline_points=None)
    monkeypatch.setattr(engine_module, "BatchingEnvironment", _Unbatched)
    plain = simulate_plan(plan).to_json(max_timeline_links=None, max_timeline_points=None)
    assert json.dumps(batched) == json.dumps(plain)
    assert _Counted.steps < _Unbatched.steps  # batching did happen


def _order(env: simpy.Environment) -> list[str]:
    """Callbacks at equal times, scheduled through call_in and plain SimPy events mixed."""
    seen: list[str] = []

    def note(label: str) -> Any:
        return lambda _event: seen.append(label)

    def chain(_event: object) -> None:  # schedules more at the current instant while running
        seen.append("c")
        call_in(env, 0.0, note("c0"))
        call_in(env, 1.0, note("c1"))

    call_in(env, 1.0, note("a"))
    call_in(env, 1.0, chain)
    env.timeout(1.0).callbacks.append(note("timeout"))
    call_in(env, 1.0, note("b"))
    call_in(env, 2.0, note("late"))
    call_in(env, 1.0, note("d"))
    call_in(env, 0.5, note("early"))
    call_in(env, 2.0, note("late2"))
    env.run()
    return seen


def test_batching_environment_keeps_simpy_order() -> None:
    plain, batched = _order(simpy.Environment()), _order(BatchingEnvironment())
    assert batched == plain
    assert plain == ["early", "a", "c", "timeout", "b", "d", "c0", "late", "late2", "c1"]


def test_gc_paused_restores_the_collector_state() -> None:
    was = gc.isenabled()
    try:
        gc.enable()
        with gc_paused():
            assert not gc.isenabled()
        assert gc.isenabled()
        gc.disable()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
        gc.enable()
        simulate_plan(_plans()["star, all-reduce"])
        assert gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()


def test_a_finished_step_is_freed_without_the_cycle_collector() -> None:
    """No reference cycles among the engine's objects: dropping the result frees them all."""
    result = simulate_plan(_plans()["shared core"])
    assert result.transfers  # the lazy transfers still reach the engine
    gc.collect()
    del result
    flags = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        names = {type(o).__name__ for o in gc.garbage}
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
    assert not names & {"_Engine", "Network", "Channel", "Slot", "Link", "NetPath", "Flow",
                        "ByteCounter", "EngineState"}
