"""Plans on tiny scenarios whose answer follows from arithmetic, and engine-independence.

Shared shape: 4 transformer layers = L = 8 sublayers, d = 64, T = 64, b = 1, fp32, so one
plane U = 64 x 64 x 4 = 16,384 bytes.
"""

from __future__ import annotations

import json

import pytest

from simulator.memory import memory_model
from simulator.planner import run_plan
from simulator.planner_report import PlanConstraints
from simulator.scenario import load_scenario

U = 64 * 64 * 4
MODEL = {"num_layers": 4, "hidden_size": 64, "num_heads": 4, "ffn_hidden_size": 128,
         "vocab_size": 128, "seq_len": 64, "dtype": "fp32"}


def _by_label(report):
    return {row.candidate.residual_label: row for row in report.rows}


# -- 1. a link so slow that only N = 1 fits the overhead budget ---------------------------------
LINK_BYTES_PER_S = 1e6
LINK_LATENCY_S = 1e-6
SLOW_STAR = {
    "name": "slow-star",
    "nodes": ([{"id": f"g{i}", "kind": "gpu"} for i in range(4)]
              + [{"id": "sw", "kind": "nvswitch"}]),
    "links": [{"src": f"g{i}", "dst": "sw", "bandwidth_bytes_per_s": LINK_BYTES_PER_S,
               "latency_s": LINK_LATENCY_S, "link_kind": "network"} for i in range(4)],
}
INSTANT_GPU = {"name": "instant", "peak_flops_per_s": 1e30, "hbm_bytes_per_s": 1e30,
               "hbm_capacity_bytes": 1e12, "compute_efficiency": 1.0, "memory_efficiency": 1.0,
               "tensor_parallel_bandwidth_bytes_per_s": 1e30, "tensor_parallel_latency_s": 0.0}


def test_slow_link_only_n1_fits_the_budget():
    # P = 4 ranks, V = 1, M = 1, 1F1B: the step is serial, F0 F1 F2 F3 B3 B2 B1 B0 with one
    # transfer between neighbours, 3 forward + 3 backward, each over two links (gpu -> switch
    # -> gpu): 2 x latency + planes x U / bandwidth. Compute is ~1e-23 s on the "instant" GPU.
    # Chunks hold 2 sublayers each; transitions follow sublayers 2, 4, 6 (forward planes,
    # naive mode; the backward sends the same again):
    #   standard:        1 + 1 + 1 = 3
    #   N=1 (S=8):  b0+partial each time       2 + 2 + 2 = 6
    #   N=2 (S=4):  b0+p | b0,b1 | b0,b1+p     2 + 2 + 3 = 7
    #   N=4 (S=2):  b0,b1 | b0..b2 | b0..b3    2 + 3 + 4 = 9
    #   full:       3 | 5 | 7 layer outputs incl. b0 = 15
    # Overheads (latency aside): 100%, 133%, 200%, 400%. A 110% budget admits only N=1.
    scenario = load_scenario({"name": "slow", "model": MODEL, "hardware": INSTANT_GPU,
                              "topology": SLOW_STAR,
                              "pipeline": {"schedule": "1f1b", "num_stages": 4,
                                           "num_microbatches": 1}})
    report = run_plan(scenario, blocks=[1, 2, 4, 8], modes=["naive"], jobs=1,
                      constraints=PlanConstraints(max_step_overhead_pct=110))
    rows = _by_label(report)
    planes = {"standard": 3, "block N=1 naive": 6, "block N=2 naive": 7, "block N=4 naive": 9,
              "full naive": 15}

    def step_s(forward_planes: int) -> float:
        return 6 * 2 * LINK_LATENCY_S + 2 * forward_planes * U / LINK_BYTES_PER_S

    for label, n in planes.items():
        assert rows[label].metrics.step_time_s == pytest.approx(step_s(n), rel=1e-9), label
        assert rows[label].overhead_pct == pytest.approx(
            100 * (step_s(n) / step_s(3) - 1), rel=1e-9)
        assert rows[label].metrics.boundary_bytes_per_step == 2 * n * U
        # Everything but ~1e-23 s of compute is exposed communication.
        assert rows[label].metrics.exposed_comm_s == pytest.approx(step_s(n), rel=1e-9)
    assert [r.within_overhead for r in rows.values()] == [True, True, False, False, False]
    assert report.recommended is rows["block N=1 naive"]
    assert "the next larger gain, block N=2 naive, V=1, packed (45%), is ruled out by " \
           "+133.3% step time > 110%" in report.reason
    # Busiest pipeline link under full AttnRes: rank 2 sends 7 planes forward and 5 backward
    # (g2 -> sw), and receives 5 forward and 7 backward (sw -> g2): 12 U either way; the other
    # links carry at most 3 + 5 = 8 U (g1) or 7 U (g3).
    full = rows["full naive"].metrics
    assert full.busiest_link_pipeline_bytes == 12 * U
    assert full.busiest_link in ("g2->sw", "sw->g2")


# -- 2. unlimited bandwidth: cached and naive tie ---------------------------------------------
def _free_links_scenario(**training):
    return load_scenario({
        "name": "free", "model": MODEL, "hardware": "h100", "topology": "ideal",
        "training": training,
        "pipeline": {"schedule": "interleaved-1f1b", "num_stages": 2, "num_virtual_stages": 2,
                     "num_microbatches": 2}})


def test_unlimited_bandwidth_cached_and_naive_tie():
    # P = 2, V = 2: chunks c0..c3 of 2 sublayers on ranks 0, 1, 0, 1. N = 4 (S = 2): after
    # c0 {b0,b1}, after c1 {b0,b1,b2}, after c2 {b0..b3}; no cut is mid-block.
    #   naive:       2 + 3 + 4 = 9 planes forward
    #   cached:      rank 1 has nothing: b0,b1; rank 0 holds b0: b1,b2; rank 1 holds b0,b1:
    #                b2,b3 -> 2 + 2 + 2 = 6
    #   cached-own:  rank 0 also keeps b1 it made: 2 + 1 (b2) + 1 (b3) = 4
    # per micro-batch and direction; x 2 directions x M = 2 micro-batches. Links are free, so
    # all three modes take exactly the same time and expose no communication; the tie in gain
    # and overhead goes to the fewest bytes.
    report = run_plan(_free_links_scenario(), blocks=[4], jobs=1,
                      constraints=PlanConstraints(max_step_overhead_pct=1000))
    rows = _by_label(report)
    naive, cached, own = (rows[f"block N=4 {m}"] for m in ("naive", "cached", "cached-own"))
    assert naive.metrics.step_time_s == cached.metrics.step_time_s == own.metrics.step_time_s
    assert naive.overhead_pct == cached.overhead_pct > 0
    for row, planes in ((naive, 9), (cached, 6), (own, 4)):
        assert row.metrics.boundary_bytes_per_step == planes * 2 * 2 * U
        assert row.metrics.exposed_comm_s == 0.0
    assert report.recommended is own
    assert "ahead of 2 candidate(s) with the same gain" in report.reason


# -- 3. a memory limit that rules out the largest N --------------------------------------------
def test_memory_limit_rules_out_the_largest_n():
    # With full recomputation Block AttnRes keeps every completed block and Full AttnRes every
    # sublayer output for later layers, so the peak grows with N. Put the limit halfway between
    # the largest peak of any N=4 candidate and the smallest peak of any Full AttnRes (N = L = 8)
    # candidate, by the analytic memory model, which the engine's timeline must reproduce.
    scenario = _free_links_scenario(recompute="full")
    first = run_plan(scenario, blocks=[2, 4, 8], jobs=1)
    for row in first.rows:
        analytic = [r.peak_bytes for r in memory_model(row.candidate.scenario).ranks]
        assert list(row.metrics.peak_memory_bytes_per_stage) == analytic
    rows = _by_label(first)
    n4 = max(rows[f"block N=4 {m}"].metrics.max_peak_memory_bytes
             for m in ("naive", "cached", "cached-own"))
    full = min(rows[f"full {m}"].metrics.max_peak_memory_bytes
               for m in ("naive", "cached", "cached-own"))
    assert n4 < full
    capacity = rows["standard"].metrics.hbm_capacity_bytes
    fraction = (n4 + full) / 2 / capacity
    report = run_plan(scenario, blocks=[2, 4, 8], jobs=1,
                      constraints=PlanConstraints(max_step_overhead_pct=1000,
                                                  max_memory_fraction=fraction))
    for row in report.rows:
        assert row.fits_memory == (row.candidate.kind != "full"), row.candidate.label
        assert row.on_pareto_front is False or row.fits_memory
    assert report.recommended.candidate.num_blocks == 4
    assert "is ruled out by peak memory" in report.reason


# -- engines and determinism --------------------------------------------------------------------
def test_process_pool_gives_the_same_plan_as_one_process():
    scenario = _free_links_scenario()
    one = run_plan(scenario, blocks=[1, 2], modes=["naive", "cached"], jobs=1)
    pool = run_plan(scenario, blocks=[1, 2], modes=["naive", "cached"], jobs=2)
    assert json.dumps(one.to_json()) == json.dumps(pool.to_json())


def test_dask_local_cluster_gives_the_same_plan():
    distributed = pytest.importorskip("dask.distributed")
    scenario = _free_links_scenario()
    local = run_plan(scenario, blocks=[2], modes=["naive", "cached"], jobs=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        remote = run_plan(scenario, blocks=[2], modes=["naive", "cached"], engine="dask",
                          scheduler=cluster.scheduler_address)
    assert json.dumps(local.to_json()) == json.dumps(remote.to_json())


def test_quality_override_changes_the_gain(tmp_path):
    from simulator.quality import load_quality_model

    path = tmp_path / "q.yaml"
    # Gain fraction of N = 2 at L = 8: (2.0 - 1.95) / (2.0 - 1.9) = 0.5.
    path.write_text("source: my own ablation\nnum_sublayers: 8\nbaseline_loss: 2.0\n"
                    "full_loss: 1.9\npoints: [{num_blocks: 2, loss: 1.95}]\n")
    report = run_plan(_free_links_scenario(), blocks=[2], modes=["cached"], jobs=1,
                      quality=load_quality_model(path))
    assert _by_label(report)["block N=2 cached"].gain_fraction == pytest.approx(0.5)
    assert report.notes[0] == "expected gain: my own ablation"


def test_symmetry_reduction_is_verified_with_every_replica():
    from simulator.planner_eval import EvalTask, evaluate_candidate

    # DP = 2 replicas of a P = 2 pipeline on the two-rack cluster, spread over racks so that
    # boundaries cross the spine. The sweep uses the symmetry reduction; the reference and the
    # recommendation are then simulated with both replicas and the error is reported.
    scenario = load_scenario({
        "name": "sym", "model": MODEL, "hardware": "h100", "topology": "two-rack-h100",
        "placement": "spread-racks", "parallelism": {"data_parallel": 2},
        "pipeline": {"schedule": "1f1b", "num_stages": 2, "num_microbatches": 2}})
    report = run_plan(scenario, blocks=[2], modes=["naive"], jobs=1, symmetry="on",
                      constraints=PlanConstraints(max_step_overhead_pct=1000))
    assert report.symmetric and all(r.metrics.symmetric for r in report.rows)
    entries = report.verification["candidates"]
    assert [e["label"] for e in entries] == ["standard, V=1, spread-racks",
                                             "block N=2 naive, V=1, spread-racks"]
    for entry, row in zip(entries, report.rows):
        full = evaluate_candidate(EvalTask(0, row.candidate.scenario, symmetric=False)).metrics
        assert entry["step_time_s"] == full.step_time_s
        assert entry["symmetric_step_time_s"] == row.metrics.step_time_s
        assert entry["error_pct"] == pytest.approx(
            100 * (row.metrics.step_time_s / full.step_time_s - 1))
    assert report.notes[-1].startswith("verified with every replica simulated")
    off = run_plan(scenario, blocks=[2], modes=["naive"], jobs=1, symmetry="off")
    assert not off.symmetric and off.verification is None
