"""Pipelined runs on gloo equal the unsplit model, and their traffic is what the layout says.

For world sizes 2 and 4, every schedule x residual kind x communication mode runs in one
process group (real_runner.testing): the loss and every parameter gradient must equal the
unsplit reference's within fp32 tolerance; sender and receiver must record the same tensors and
bytes for every transfer; each transfer's tensor names must be the simulator manifest's for the
scenario's mode (the runner decided them from its own state at run time); and the cached modes
must send fewer bytes than naive where the manifest says so. Pseudo-queries get a small random
init (test-only option) so the depth softmax is not uniform.

    python -m pytest tests/test_runner_pipeline.py -q      # about a minute on 2 cores
"""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch
from torch.testing import assert_close

from real_runner.testing import ScenarioResult, reference_result, run_scenarios
from simulator.layout import build_layout
from simulator.manifest import build_manifest
from simulator.scenario import load_scenario
from simulator.schedule import build_schedule
from simulator.trace_schema import match_transfers, read_run

QUERY_STD = 0.5
SCHEDULES = [("gpipe", 1), ("1f1b", 1), ("interleaved-1f1b", 2)]
KINDS = [("standard", None), ("full", None), ("block", 3), ("block", 2)]


def _scenario(world_size: int, schedule: str, virtual: int, kind: str, block_size: int | None,
              mode: str) -> dict:
    residual = {"kind": kind} if block_size is None else {"kind": kind, "block_size": block_size}
    data = {
        "name": f"p{world_size}-{schedule}-{kind}{block_size or ''}-{mode}",
        "model": {"num_layers": 4, "hidden_size": 16, "num_heads": 2, "ffn_hidden_size": 32,
                  "vocab_size": 40, "seq_len": 8, "micro_batch_size": 2, "dtype": "fp32",
                  "mlp": "gelu" if kind == "full" else "swiglu"},
        "residual": residual,
        "pipeline": {"schedule": schedule, "num_stages": world_size,
                     "num_virtual_stages": virtual, "num_microbatches": 4, "comm_mode": mode},
        "run": {"seed": world_size},
    }
    if world_size == 2 and virtual == 2 and kind == "block" and block_size == 3:
        data["pipeline"]["sublayers_per_chunk"] = [3, 1, 2, 2]  # uneven cuts
    return data


def _grid(world_size: int) -> list[dict]:
    grid = []
    for schedule, virtual in SCHEDULES:
        for kind, block_size in KINDS:
            if kind == "block" and (block_size == 2) != (world_size == 4 and virtual == 2):
                continue  # S = 2 only where it gives the paper's Fig. 3 layout
            for mode in ["naive"] if kind == "standard" else ["naive", "cached", "cached-own"]:
                grid.append(_scenario(world_size, schedule, virtual, kind, block_size, mode))
    return grid


GRIDS = {2: _grid(2), 4: _grid(4)}
CASES = [(w, i) for w, grid in GRIDS.items() for i in range(len(grid))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, list[ScenarioResult]]:
    return {w: run_scenarios(grid, w, tmp_path_factory.mktemp(f"world{w}"),
                             pseudo_query_init_std=QUERY_STD) for w, grid in GRIDS.items()}


def _case_id(case: tuple[int, int]) -> str:
    return GRIDS[case[0]][case[1]]["name"]


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_loss_and_every_gradient_equal_the_unsplit_model(runs, case):
    world_size, index = case
    scenario, result = GRIDS[world_size][index], runs[world_size][index]
    loss, grads = reference_result(scenario, pseudo_query_init_std=QUERY_STD)
    assert_close(torch.tensor(result.loss), torch.tensor(loss))
    assert sorted(result.grads) == sorted(grads)
    for name, grad in grads.items():
        assert_close(result.grads[name], grad, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_transfers_agree_and_carry_what_the_manifest_lists(runs, case):
    world_size, index = case
    scenario = load_scenario(GRIDS[world_size][index])
    run = read_run(runs[world_size][index].run_dir)
    manifest = build_manifest(scenario)
    plane_bytes = scenario.plane_bytes()
    pairs = match_transfers(run)
    assert len(pairs) == 2 * (scenario.num_chunks - 1) * scenario.pipeline.num_microbatches
    for send, recv in pairs:
        assert (send.tensor_names, send.tensor_bytes, send.total_bytes, send.header_bytes) == \
            (recv.tensor_names, recv.tensor_bytes, recv.total_bytes, recv.header_bytes)
        assert (send.src_rank, send.dst_rank) == (recv.src_rank, recv.dst_rank)
        hop = manifest.transition(send.direction, send.src_chunk)
        assert tuple(send.tensor_names) == hop.names(manifest.comm_mode), (send.action, hop)
        assert send.tensor_bytes == [plane_bytes] * len(send.tensor_names)
        assert (send.header_bytes > 0) == (send.direction == "forward" and
                                           scenario.residual.kind != "standard")


@pytest.mark.parametrize("world_size", sorted(GRIDS))
def test_cached_modes_send_less_than_naive_where_the_layout_says_so(runs, world_size):
    measured: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    predicted: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for data, result in zip(GRIDS[world_size], runs[world_size]):
        scenario = load_scenario(data)
        if scenario.residual.kind == "standard":
            continue
        mode = scenario.pipeline.comm_mode
        key = (data["pipeline"]["schedule"], data["name"].removesuffix(f"-{mode}"))
        measured[key][mode] = sum(r.total_bytes for r in read_run(result.run_dir).p2p()
                                  if r.op == "send")
        predicted[key][mode] = build_manifest(scenario).total_bytes(mode) * \
            scenario.pipeline.num_microbatches
    strictly_less = 0
    for key, by_mode in measured.items():
        assert by_mode == predicted[key], key
        assert by_mode["cached-own"] <= by_mode["cached"] <= by_mode["naive"], key
        strictly_less += by_mode["cached"] < by_mode["naive"]
    assert strictly_less > 0, "no layout in the grid lets caching save anything"


def test_fig3_layout_reproduces_the_papers_block_counts(runs):
    counts = {}
    for data, result in zip(GRIDS[4], runs[4]):
        if data["residual"].get("block_size") != 2:
            continue
        run = read_run(result.run_dir)
        forward = sorted((r.src_chunk, r.tensor_names) for r in run.p2p()
                         if r.op == "send" and r.direction == "forward" and r.microbatch == 0)
        counts[data["pipeline"]["comm_mode"]] = [sum(n.startswith("b") for n in names)
                                                 for _, names in forward]
    assert counts == {"naive": [1, 2, 2, 3, 3, 4, 4], "cached": [1, 2, 2, 2, 2, 2, 2],
                      "cached-own": [1, 2, 2, 2, 1, 2, 1]}


@pytest.mark.parametrize("world_size", sorted(GRIDS))
def test_compute_follows_the_schedule_and_saved_memory_returns_to_zero(runs, world_size):
    for data, result in zip(GRIDS[world_size], runs[world_size]):
        scenario = load_scenario(data)
        p = scenario.pipeline
        schedule = build_schedule(p.schedule, p.num_stages, p.num_virtual_stages,
                                  p.num_microbatches)
        run = read_run(result.run_dir)
        layout = build_layout(scenario)
        for trace in run.ranks:
            rank = trace.header.rank
            assert [c.action for c in trace.compute] == \
                [str(a) for a in schedule.compute_actions(rank)]
            assert all(layout.chunk_rank(c.chunk) == rank for c in trace.compute)
            samples = trace.memory
            assert len(samples) == 2 * len(layout.rank_chunks(rank)) * p.num_microbatches
            assert samples[-1].saved_bytes == 0 and trace.steps[0].peak_saved_bytes > 0
            assert trace.steps[0].peak_saved_bytes == max(s.saved_bytes for s in samples)
            assert all(a.t_s <= b.t_s for a, b in zip(samples, samples[1:]))
