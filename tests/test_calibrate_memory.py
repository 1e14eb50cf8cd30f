"""The calibrated activation-memory walk (simulator/calibrate_memory.py) on synthetic profiles."""

from __future__ import annotations

import pytest

from simulator.calibrate_memory import (
    ActivationProfile, ActivationProfileError, load_activation_profile, runner_activation_memory,
)
from simulator.layout import build_layout
from simulator.manifest import build_manifest
from simulator.scenario import load_scenario

MODEL = {"num_layers": 4, "hidden_size": 64, "num_heads": 4, "ffn_hidden_size": 256,
         "vocab_size": 100, "seq_len": 16, "micro_batch_size": 1, "dtype": "fp32"}
PLANE, ATTENTION, MLP, HEAD, IDS = 1000, 5000, 7000, 3000, 8


def _profile(sources_saved: bool = True) -> ActivationProfile:
    piece = lambda n: {"internal_bytes": n, "input_saved": True}  # noqa: E731
    return load_activation_profile({"device": "synthetic", "shapes": [{
        **{k: MODEL[k] for k in ("hidden_size", "num_heads", "ffn_hidden_size", "vocab_size",
                                 "seq_len", "micro_batch_size", "dtype")},
        "mlp": "swiglu", "plane_bytes": PLANE, "attention": piece(ATTENTION),
        "mlp_sublayer": piece(MLP), "embedding": piece(0), "head": piece(HEAD),
        "targets_saved": True, "index_bytes_per_token": IDS,
        "aggregation": [{"num_sources": k, "internal_bytes": 10 * k} for k in (1, 3)],
        "sources_saved": sources_saved}]})


def _scenario(residual: dict, pipeline: dict):
    return load_scenario({"name": "m", "model": MODEL, "residual": residual,
                          "pipeline": {"num_stages": 2, **pipeline}})


def test_standard_gpipe_peaks_hold_every_microbatch():
    s = _scenario({"kind": "standard"}, {"schedule": "gpipe", "num_microbatches": 4})
    ids = 4 * MODEL["seq_len"] * IDS  # one int64 id tensor for the whole step, shared
    chunk = 2 * (ATTENTION + PLANE) + 2 * (MLP + PLANE)  # two layers, each input kept
    peaks = [r.peak_bytes for r in runner_activation_memory(s, _profile())]
    assert peaks == [4 * chunk + ids, 4 * (chunk + HEAD + PLANE) + ids]


def test_one_f_one_b_holds_p_minus_rank_microbatches():
    s = _scenario({"kind": "standard"}, {"schedule": "1f1b", "num_microbatches": 4})
    chunk = 2 * (ATTENTION + PLANE) + 2 * (MLP + PLANE)
    ids = 4 * MODEL["seq_len"] * IDS
    peaks = [r.peak_bytes for r in runner_activation_memory(s, _profile())]
    assert peaks == [2 * chunk + ids, chunk + HEAD + PLANE + ids]


def test_cached_blocks_read_from_the_store_count_once():
    pipeline = {"schedule": "interleaved-1f1b", "num_virtual_stages": 2, "num_microbatches": 4}
    naive = _scenario({"kind": "block", "block_size": 3}, {**pipeline, "comm_mode": "naive"})
    cached = _scenario({"kind": "block", "block_size": 3}, {**pipeline, "comm_mode": "cached"})
    held = set(build_manifest(naive).transition("forward", 1).names("naive")) - \
        set(build_manifest(cached).transition("forward", 1).names("cached"))
    assert held == {"b0"}

    def step_of(scenario):  # bytes rank 0's forward of chunk 2, micro-batch 0, adds
        timeline = runner_activation_memory(scenario, _profile())[0].timeline
        index = [a for a, _ in timeline].index("2F0")
        return timeline[index][1] - timeline[index - 1][1]

    assert step_of(naive) - step_of(cached) == len(held) * PLANE


def test_aggregation_bytes_interpolate_and_extrapolate():
    shape = _profile().shapes[0]
    assert [shape.aggregation_bytes(k) for k in (1, 2, 3, 5)] == [10, 20, 30, 50]


def test_sources_not_kept_are_not_counted():
    s = _scenario({"kind": "full"}, {"schedule": "gpipe", "num_microbatches": 2})
    kept = runner_activation_memory(s, _profile(True))[1].peak_bytes
    dropped = runner_activation_memory(s, _profile(False))[1].peak_bytes
    layout = build_layout(s)
    # chunk 1 keeps b0..b4 it received and the outputs of sublayers 5..8 (each read by a later
    # sublayer or by the final aggregation), for both micro-batches
    sources = len(layout.completed_blocks(0)) + len(layout.chunk_sublayers(1))
    assert kept - dropped == 2 * sources * PLANE


def test_a_missing_shape_is_named():
    s = load_scenario({"name": "m", "model": {**MODEL, "hidden_size": 128},
                       "pipeline": {"num_stages": 2, "num_microbatches": 2}})
    with pytest.raises(ActivationProfileError, match="has no measurements at scenario 'm'"):
        runner_activation_memory(s, _profile())


def test_a_malformed_profile_names_the_key():
    with pytest.raises(ActivationProfileError,
                       match=r"shapes\.0\.hidden_size required key is missing"):
        load_activation_profile({"device": "x", "shapes": [{}]})
