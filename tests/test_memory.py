"""The analytic memory model against Korthikanti et al.'s closed forms and the schedules' in-flight counts."""

from __future__ import annotations

import copy

import pytest

from simulator.layout import build_layout
from simulator.manifest import build_manifest
from simulator.memory import chunk_activations, memory_model, parameter_counts, walk_peak_bytes
from simulator.scenario import load_scenario

S, B, H, A = 128, 2, 256, 8  # seq_len, micro-batch, hidden, heads

BASE = {
    "name": "mem",
    "model": {"num_layers": 4, "hidden_size": H, "num_heads": A, "ffn_hidden_size": 4 * H,
              "vocab_size": 512, "seq_len": S, "micro_batch_size": B, "dtype": "bf16",
              "mlp": "gelu"},
    "residual": {"kind": "standard"},
    "pipeline": {"schedule": "1f1b", "num_stages": 2, "num_microbatches": 4},
}


def _scenario(**sections):
    data = copy.deepcopy(BASE)
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return load_scenario(data)


def _middle_chunk_bytes(scenario, chunk=0):
    """Per-layer activations of a chunk, excluding the embedding ids (chunk 0 only)."""
    layout, manifest = build_layout(scenario), build_manifest(scenario)
    act = chunk_activations(scenario, layout, manifest, chunk)
    return act.sublayers_bytes + act.attnres_bytes - 8 * S * B


def _korthikanti_no_dropout(t: int, sp: bool) -> float:
    """Korthikanti et al. per-layer bytes (flash attention: no 5as^2b) minus the two sbh dropout
    masks, plus flash attention's fp32 log-sum-exp (4 bytes x heads x tokens / t)."""
    sbh = S * B * H
    base = 34 * sbh / t if sp else sbh * (10 + 24 / t)
    return base - 2 * sbh / (t if sp else 1) + 4 * S * B * A / t


@pytest.mark.parametrize("t,sp", [(1, False), (2, False), (4, False), (2, True), (4, True)])
def test_standard_layer_matches_korthikanti(t, sp):
    par = {"tensor_parallel": t, "sequence_parallel": sp}
    scenario = _scenario(parallelism=par)
    per_layer = _middle_chunk_bytes(scenario) / 2  # chunk 0 holds 2 layers = 4 sublayers
    assert per_layer == pytest.approx(_korthikanti_no_dropout(t, sp))


def test_full_recompute_keeps_layer_input_only():
    scenario = _scenario(training={"recompute": "full"})
    assert _middle_chunk_bytes(scenario) / 2 == 2 * S * B * H  # Korthikanti: 2sbh per layer


def test_block_attnres_extras():
    scenario = _scenario(residual={"kind": "block", "num_blocks": 2})
    layout = build_layout(scenario)
    act = chunk_activations(scenario, layout, build_manifest(scenario), 0)
    # Each sublayer keeps its output / partial sum (e.sbh) and 8 bytes x sources x tokens.
    sources = [layout.sources_at(sub) for sub in layout.chunk_sublayers(0)]
    assert sources == [1, 2, 2, 2]  # b0; then b0 + partial within block 1
    assert act.attnres_bytes == 4 * 2 * S * B * H + 8 * sum(sources) * S * B


def test_received_sources_follow_comm_mode():
    residual = {"kind": "block", "block_size": 1}
    pipeline = {"schedule": "interleaved-1f1b", "num_stages": 2, "num_virtual_stages": 2,
                "num_microbatches": 4}
    naive = _scenario(residual=residual, pipeline={**pipeline, "comm_mode": "naive"})
    cached = _scenario(residual=residual, pipeline={**pipeline, "comm_mode": "cached"})
    plane = S * B * H * 2
    for scenario, expected in ((naive, 5), (cached, 4)):
        # chunk 2 (rank 0, second virtual stage) receives b0..b4 naive; rank 0 already holds b0.
        act = chunk_activations(scenario, build_layout(scenario), build_manifest(scenario), 2)
        assert act.received_bytes == expected * plane


def test_parameter_counts_by_hand():
    scenario = _scenario(parallelism={"tensor_parallel": 2})
    layout = build_layout(scenario)
    first = parameter_counts(scenario, layout, 0)
    # 2 layers: attention 4h^2/t + MLP 2*h*4h/t, each sublayer a norm h.
    assert first.transformer == 2 * (4 * H * H // 2 + 2 * H * 4 * H // 2) + 4 * H
    assert first.embedding == 512 * H // 2 and first.head == 0
    last = parameter_counts(scenario, layout, 1)
    assert last.head == 512 * H // 2 + H and last.attnres == 0


def test_walk_peak():
    order = [("F", 0), ("F", 1), ("B", 1), ("F", 0), ("B", 0), ("B", 0)]
    # live bytes: 10, 13, 10, 20, 10, 0; live sets: 1, 2, 1, 2, 1, 0
    assert walk_peak_bytes(order, {0: 10, 1: 3}) == (20, 2)


@pytest.mark.parametrize("P,M", [(4, 8), (4, 2), (2, 6)])
def test_1f1b_in_flight_is_p_minus_rank(P, M):
    scenario = _scenario(model={"num_layers": 8},
                         pipeline={"schedule": "1f1b", "num_stages": P, "num_microbatches": M})
    report = memory_model(scenario)
    assert [r.peak_in_flight for r in report.ranks] == [min(P - r, M) for r in range(P)]


@pytest.mark.parametrize("P,M", [(4, 8), (2, 6)])
def test_gpipe_holds_every_microbatch(P, M):
    scenario = _scenario(model={"num_layers": 8},
                         pipeline={"schedule": "gpipe", "num_stages": P, "num_microbatches": M})
    assert all(r.peak_in_flight == M for r in memory_model(scenario).ranks)


@pytest.mark.parametrize("P,V,M", [(4, 2, 8), (2, 2, 4), (4, 2, 16)])
def test_interleaved_first_rank_in_flight_matches_megatron(P, V, M):
    # Megatron's interleaved warm-up on rank r: 2(P - r - 1) + (V - 1)P chunks, then one more forward.
    scenario = _scenario(model={"num_layers": 8},
                         pipeline={"schedule": "interleaved-1f1b", "num_stages": P,
                                   "num_virtual_stages": V, "num_microbatches": M})
    report = memory_model(scenario)
    for r in report.ranks:
        assert r.peak_in_flight == min(2 * (P - r.rank - 1) + (V - 1) * P + 1, V * M)


def test_distributed_optimizer_divides_by_dp():
    plain = memory_model(_scenario(parallelism={"data_parallel": 4})).ranks[0]
    sharded = memory_model(_scenario(parallelism={"data_parallel": 4},
                                     training={"distributed_optimizer": True})).ranks[0]
    assert sharded.optimizer_bytes * 4 == pytest.approx(plain.optimizer_bytes, abs=4)
    assert plain.optimizer_bytes == plain.parameter_count * 12
