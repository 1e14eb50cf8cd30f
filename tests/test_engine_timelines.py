"""Bounded timelines in written results, and the CSV writers, against independent computations."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest

from simulator.plan import simulate
from simulator.results import SimulationResult
from simulator.scenario import load_scenario
from simulator.timelines import resample_max, resample_mean

TOPOLOGY = {"builder": "multi_rack", "num_racks": 2, "nodes_per_rack": 2, "gpus_per_node": 4,
            "nics_per_node": 4}


def _step_function(rng: random.Random, n: int, end_s: float) -> list[tuple[float, float]]:
    times = sorted(rng.uniform(0.0, end_s) for _ in range(n))
    return [(t, rng.choice([0.0, 1.5, 4.0, 10.0, rng.uniform(0, 20)])) for t in times]


def _value_at(timeline: list[tuple[float, Any]], t: float) -> Any:
    value = 0
    for when, v in timeline:
        if when > t:
            break
        value = v
    return value


def _area(timeline: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Integral of the step function over [lo, hi], by brute force over its pieces."""
    total = 0.0
    for i, (t, v) in enumerate(timeline):
        stop = timeline[i + 1][0] if i + 1 < len(timeline) else hi
        a, b = max(t, lo), min(stop, hi)
        if b > a:
            total += v * (b - a)
    return total


def test_resampled_rates_keep_every_bucket_s_bytes() -> None:
    rng = random.Random(3)
    for _ in range(50):
        end_s, n, points = 7.0, rng.randint(20, 200), rng.randint(2, 19)
        timeline = _step_function(rng, n, end_s)
        out = resample_mean(timeline, end_s, points)
        assert len(out) <= points
        width = end_s / points
        for k in range(points):
            lo, hi = k * width, (k + 1) * width
            assert _value_at(out, lo + width / 2) * width == pytest.approx(
                _area(timeline, lo, hi), rel=1e-9, abs=1e-9)
        assert _area(out, 0.0, end_s) == pytest.approx(_area(timeline, 0.0, end_s), rel=1e-9)


def test_resampled_memory_keeps_every_bucket_s_peak() -> None:
    rng = random.Random(5)
    for _ in range(50):
        end_s, points = 3.0, rng.randint(2, 12)
        times = sorted(rng.uniform(0.0, end_s) for _ in range(rng.randint(20, 100)))
        timeline = [(t, rng.randint(0, 1000)) for t in times]
        out = resample_max(timeline, end_s, points)
        width = end_s / points
        for k in range(points):
            lo, hi = k * width, (k + 1) * width
            inside = [v for t, v in timeline if lo <= t < hi] + [_value_at(timeline, lo)]
            assert _value_at(out, lo + width / 2) == max(inside)
        assert max(v for _, v in out) == max(v for _, v in timeline)


def test_short_timelines_are_kept_as_they_are() -> None:
    timeline = [(0.0, 3.0), (1.0, 0.0)]
    assert resample_mean(timeline, 2.0, 2) == timeline
    assert resample_max([(0.0, 3), (1.0, 1)], 2.0, 5) == [(0.0, 3), (1.0, 1)]


@pytest.fixture(scope="module")
def result() -> SimulationResult:
    return simulate(load_scenario({
        "name": "timelines", "model": {"num_layers": 4, "hidden_size": 256, "num_heads": 4,
                                       "ffn_hidden_size": 1024, "vocab_size": 1000,
                                       "seq_len": 128},
        "residual": {"kind": "block", "block_size": 2},
        "pipeline": {"schedule": "interleaved-1f1b", "num_stages": 2, "num_virtual_stages": 2,
                     "num_microbatches": 8, "comm_mode": "cached"},
        "parallelism": {"data_parallel": 2},
        "hardware": "h100", "topology": TOPOLOGY, "placement": "spread-racks"}))


def test_json_keeps_timelines_of_the_busiest_links_only(result: SimulationResult) -> None:
    recorded = [l for l in result.links if l.rate_timeline]
    assert len(recorded) > 2
    data = result.to_json(max_timeline_links=2, max_timeline_points=None)
    kept = [(row["src"], row["dst"]) for row in data["links"] if row["rate_timeline"]]
    busiest = sorted(recorded, key=lambda l: (-l.total_bytes, l.src, l.dst))[:2]
    assert kept == [(l.src, l.dst) for l in result.links if l in busiest]
    for row, link in zip(data["links"], result.links):
        assert row["pipeline_bytes"] == link.pipeline_bytes  # every figure but the timeline
        if row["rate_timeline"]:
            assert row["rate_timeline"] == link.rate_timeline
    assert data["timelines"] == {"max_links": 2, "max_points": None,
                                 "links_with_rate_timeline": 2,
                                 "links_recorded": len(recorded), "num_resampled": 0}


def test_json_resamples_long_timelines(result: SimulationResult) -> None:
    longest = max(len(r.memory_timeline) for r in result.ranks)
    data = result.to_json(max_timeline_links=None, max_timeline_points=4)
    assert all(len(r["memory_timeline"]) <= 4 for r in data["ranks"])
    assert all(len(l["rate_timeline"]) <= 4 for l in data["links"])
    assert longest > 4 and data["timelines"]["num_resampled"] > 0
    for row, rank in zip(data["ranks"], result.ranks):
        assert max(b for _, b in row["memory_timeline"]) == rank.peak_memory_bytes


def test_small_steps_are_within_the_default_limits(result: SimulationResult) -> None:
    bounded = result.to_json()
    full = result.to_json(max_timeline_links=None, max_timeline_points=None)
    assert bounded.pop("timelines")["num_resampled"] == 0
    full.pop("timelines")
    assert json.dumps(bounded) == json.dumps(full)


def test_csv_files_hold_the_result_s_numbers(result: SimulationResult, tmp_path: Path) -> None:
    result.write(tmp_path)

    def rows(name: str) -> list[dict[str, str]]:
        with (tmp_path / name).open(newline="") as handle:
            return list(csv.DictReader(handle))

    spans = rows("spans.csv")
    assert [(int(r["dp_index"]), r["kind"], float(r["start_s"]), float(r["end_s"]))
            for r in spans] == [(s.dp_index, s.kind, s.start_s, s.end_s) for s in result.spans]
    transfers = rows("transfers.csv")
    assert [(r["label"], int(r["bytes_per_gpu"]), float(r["delivered_s"])) for r in transfers] \
        == [(t.label, t.bytes_per_gpu, t.delivered_s) for t in result.transfers]
    ranks = rows("ranks.csv")
    assert [r["gpus"] for r in ranks] == [" ".join(r.gpus) for r in result.ranks]
    assert [float(r["busy_s"]) for r in ranks] == [r.busy_s for r in result.ranks]
    links = rows("links.csv")
    assert [int(r["allreduce_bytes"]) for r in links] == [l.allreduce_bytes
                                                          for l in result.links]
    memory = rows("memory.csv")
    assert len(memory) == sum(len(r.memory_timeline) for r in result.ranks)
