"""The compute cost model against published closed forms and its own documented rules."""

from __future__ import annotations

import math
from typing import Any

import pytest

from simulator.costs import CostModel, Work
from simulator.hardware import load_hardware
from simulator.scenario import Scenario, load_scenario


def _scenario(**changes: Any) -> Scenario:
    data: dict[str, Any] = {
        "name": "c",
        "model": {"num_layers": 8, "hidden_size": 1024, "num_heads": 8, "ffn_hidden_size": 4096,
                  "vocab_size": 32000, "seq_len": 2048, "mlp": "gelu"},
        "pipeline": {"schedule": "1f1b", "num_stages": 4, "num_microbatches": 4},
    }
    data.update(changes)
    return load_scenario(data)


def test_roofline_is_the_slower_of_compute_and_memory() -> None:
    hw = load_hardware("h100")
    model = CostModel(_scenario(), hw)
    flops_s = 1e15 / (hw.peak_flops_per_s * hw.compute_efficiency)
    assert model.seconds(Work(1e15, 1.0)) == flops_s
    bytes_s = 1e12 / (hw.hbm_bytes_per_s * hw.memory_efficiency)
    assert model.seconds(Work(1.0, 1e12)) == bytes_s


def test_step_flops_match_narayanan_with_causal_attention() -> None:
    """Narayanan et al. SC'21: 72 B s L h^2 (1 + s/(6h) + V/(12 L h)) per step without
    recompute for a GPT with a 4h gelu MLP. Causal flash attention does half the score and
    value products, which turns s/(6h) into s/(12h). Residual-add FLOPs are left out."""
    s = _scenario()
    model = CostModel(s, load_hardware("h100"))
    layers, h, seq, vocab = 8, 1024, 2048, 32000
    residual = sum(model.residual_work(sub).flops for sub in range(1, 2 * layers + 2))
    total = sum(c.forward_flops + c.backward_flops for c in model.chunk_costs())
    expected = 72 * seq * layers * h * h * (1 + seq / (12 * h) + vocab / (12 * layers * h))
    assert total - 3 * residual == pytest.approx(expected, rel=1e-12)


def test_backward_is_twice_forward_and_full_recompute_adds_a_forward() -> None:
    hw = load_hardware("h100")
    plain = CostModel(_scenario(), hw).chunk_cost(1)
    assert plain.backward_s == pytest.approx(2 * plain.forward_s, rel=1e-12)
    full = CostModel(_scenario(training={"recompute": "full"}), hw).chunk_cost(1)
    assert full.recompute_s == pytest.approx(plain.forward_s, rel=1e-12)
    assert full.backward_s == pytest.approx(3 * plain.forward_s, rel=1e-12)
    selective = CostModel(_scenario(training={"recompute": "selective"}), hw)
    core = selective.seconds(selective.attention_core_work())
    cost = selective.chunk_cost(1)
    # chunk 1 has sublayers 5..8: two attention sublayers plus the residual adds
    assert cost.recompute_s == pytest.approx(2 * core + cost.aggregation_forward_s, rel=1e-12)


def test_tensor_parallel_collective_is_ring_alpha_beta() -> None:
    s = _scenario(parallelism={"tensor_parallel": 4})
    hw = load_hardware("h100")
    model = CostModel(s, hw)
    plane = 1 * 2048 * 1024 * 2
    expected = (6 * hw.tensor_parallel_latency_s
                + 1.5 * plane / hw.tensor_parallel_bandwidth_bytes_per_s)
    assert model.tensor_parallel_collective_s() == pytest.approx(expected, rel=1e-12)
    assert model.chunk_cost(1).tensor_parallel_forward_s == pytest.approx(4 * expected)
    assert CostModel(_scenario(), hw).tensor_parallel_collective_s() == 0.0


def test_attnres_io_follows_paper_table_1() -> None:
    """Per token per layer: standard 3d; Block two-phase (N/S + 5)d, 5.5d at the paper's typical
    L = 128, N = 8, S = 16; Full two-phase (S + N)d; naive reads every source."""
    hw = load_hardware("h100")
    layers = {"num_layers": 64, "hidden_size": 1024, "num_heads": 8, "ffn_hidden_size": 4096,
              "vocab_size": 32000, "seq_len": 2048}
    standard = CostModel(_scenario(model=layers), hw)
    assert standard.residual_planes(7) == 3.0
    block = _scenario(model=layers, residual={"kind": "block", "num_blocks": 8})
    assert CostModel(block, hw).residual_planes(40) == 5.5
    full = CostModel(_scenario(model=layers, residual={"kind": "full"}), hw)
    s_sched = round(math.sqrt(128))
    assert full.residual_planes(40) == s_sched + math.ceil(128 / s_sched)
    naive = CostModel(block, hw, aggregation="naive")
    # sublayer 40 is the 8th of block 3 (S = 16): sources b0, b1, b2 + partial = 4
    assert naive.residual_planes(40) == 4 + 1 + 3
    assert naive.residual_planes(129) == 9 + 1  # the final aggregation over b0..b8


def test_measured_profile_overrides_matching_shapes_and_interpolates_aggregation() -> None:
    s = _scenario(residual={"kind": "block", "num_blocks": 4})
    m = s.model
    shape = {"hidden_size": m.hidden_size, "num_heads": m.num_heads,
             "ffn_hidden_size": m.ffn_hidden_size, "vocab_size": m.vocab_size,
             "seq_len": m.seq_len, "micro_batch_size": 1, "dtype": "bf16"}
    profile = {"device": "test", "sublayers": [
        {"kind": "attention", **shape, "forward_s": 1.0, "backward_s": 2.0},
        {"kind": "mlp", **shape, "forward_s": 10.0, "backward_s": 20.0}],
        "aggregation": [
            {"num_sources": 1, "hidden_size": 1024, "seq_len": 2048, "micro_batch_size": 1,
             "forward_s": 0.1, "backward_s": 0.2},
            {"num_sources": 3, "hidden_size": 1024, "seq_len": 2048, "micro_batch_size": 1,
             "forward_s": 0.3, "backward_s": 0.6}]}
    hw = load_hardware({"preset": "h100", "profile": profile})
    model = CostModel(s, hw)
    cost = model.chunk_cost(1)  # sublayers 5..8: 2 attention + 2 MLP, no embedding or head
    sources = [model.layout.sources_at(sub) for sub in range(5, 9)]
    aggregation = sum(0.1 * k for k in sources)  # the line through (1, 0.1) and (3, 0.3)
    assert cost.forward_s == pytest.approx(2 * 1.0 + 2 * 10.0 + aggregation, rel=1e-12)
    assert cost.backward_s == pytest.approx(2 * 2.0 + 2 * 20.0 + 2 * aggregation, rel=1e-12)


def test_a_profile_without_this_shape_warns_once_and_falls_back() -> None:
    profile = {"device": "elsewhere", "sublayers": [
        {"kind": "mlp", "hidden_size": 8, "num_heads": 1, "ffn_hidden_size": 8,
         "vocab_size": 8, "seq_len": 8, "micro_batch_size": 1, "forward_s": 1.0,
         "backward_s": 1.0}]}
    s = _scenario()
    measured = CostModel(s, load_hardware({"preset": "h100", "profile": profile}))
    with pytest.warns(UserWarning, match=r"has no attention timing at this scenario's shape"):
        cost = measured.chunk_cost(1)
    analytic = CostModel(s, load_hardware("h100")).chunk_cost(1)
    assert cost == analytic
