"""Bytes on every link equal the boundary manifest summed over micro-batches, exactly; memory
timeline peaks equal the analytic memory model."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from simulator.manifest import build_manifest
from simulator.memory import memory_model
from simulator.plan import simulate
from simulator.scenario import Scenario, load_scenario

TOPOLOGY = {"builder": "multi_rack", "num_racks": 2, "nodes_per_rack": 2, "gpus_per_node": 4,
            "nics_per_node": 4}


def _scenario(**changes: Any) -> Scenario:
    data: dict[str, Any] = {
        "name": "tiny",
        "model": {"num_layers": 8, "hidden_size": 256, "num_heads": 4, "ffn_hidden_size": 1024,
                  "vocab_size": 1000, "seq_len": 128},
        "residual": {"kind": "block", "block_size": 3},
        "pipeline": {"schedule": "interleaved-1f1b", "num_stages": 4, "num_virtual_stages": 2,
                     "num_microbatches": 4, "comm_mode": "cached"},
        "parallelism": {"data_parallel": 2, "tensor_parallel": 2, "sequence_parallel": True},
        "hardware": "h100",
        "topology": TOPOLOGY,
        "placement": "spread-racks",
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data[section] = {**data[section], field: value}
        else:
            data[section] = value
    return load_scenario(data)


def _expected_link_bytes(scenario: Scenario) -> Counter:
    """Manifest bytes per link, summed over micro-batches, replicas and TP ranks, routed
    independently of the engine (topologies' own placement and router)."""
    import topologies

    graph = topologies.load_topology(scenario.topology)
    p, par = scenario.pipeline, scenario.parallelism
    placement = topologies.place(graph, dp=par.data_parallel, pp=p.num_stages,
                                 tp=par.tensor_parallel, policy=scenario.placement,
                                 num_virtual_stages=p.num_virtual_stages)
    router = topologies.Router(graph)
    manifest = build_manifest(scenario)
    expected: Counter = Counter()
    for hop in manifest.transitions:
        num_bytes = hop.num_bytes(manifest.comm_mode) * p.num_microbatches
        for dp in range(par.data_parallel):
            for tp in range(par.tensor_parallel):
                src = placement.gpu_of(dp, hop.src_rank, tp)
                dst = placement.gpu_of(dp, hop.dst_rank, tp)
                if src == dst:
                    continue
                for u, v in router.route(src, dst).links:
                    expected[(str(u), str(v))] += num_bytes
    return expected


@pytest.mark.parametrize(("kind", "mode"), [("standard", "naive"), ("block", "naive"),
                                            ("block", "cached"), ("block", "cached-own"),
                                            ("full", "cached")])
def test_link_bytes_equal_the_manifest_on_every_link(kind: str, mode: str) -> None:
    residual = {"kind": kind} | ({"block_size": 3} if kind == "block" else {})
    scenario = _scenario(residual=residual, pipeline__comm_mode=mode)
    result = simulate(scenario, allreduce=False)
    expected = _expected_link_bytes(scenario)
    assert expected, "the placement should put some boundaries on the network"
    assert result.link_bytes() == dict(expected)
    wrap = [t for t in result.transfers if t.src_pp == 3 and t.dst_pp == 0]
    assert wrap, "interleaving sends from the last rank back to the first"


def test_link_bytes_keep_allreduce_traffic_apart() -> None:
    scenario = _scenario()
    result = simulate(scenario)
    assert result.link_bytes() == dict(_expected_link_bytes(scenario))
    assert sum(l.allreduce_bytes for l in result.links) > 0


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "interleaved-1f1b"])
@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
@pytest.mark.parametrize("mode", ["naive", "cached", "cached-own"])
def test_memory_timeline_peaks_equal_the_analytic_model(schedule: str, recompute: str,
                                                        mode: str) -> None:
    V = 2 if schedule == "interleaved-1f1b" else 1
    scenario = _scenario(pipeline={"schedule": schedule, "num_stages": 4,
                                   "num_virtual_stages": V, "num_microbatches": 4,
                                   "comm_mode": mode},
                         training={"recompute": recompute}, topology="ideal")
    result = simulate(scenario)
    analytic = memory_model(scenario)
    for rank in result.ranks:
        assert rank.peak_memory_bytes == analytic.ranks[rank.pp_index].peak_bytes
        assert max(b for _, b in rank.memory_timeline) == rank.peak_memory_bytes
        assert rank.memory_timeline[-1][1] == (analytic.ranks[rank.pp_index].model_state_bytes
                                               + analytic.ranks[rank.pp_index]
                                               .recompute_working_bytes)
