"""Benchmark `pipesim plan`: a sweep of 8 block counts on a 1,024-GPU scenario.

The scenario: 64 layers (L = 128 sublayers, d = 4096, T = 4096, bf16), P = 16, V = 2, M = 64,
DP = 64, TP = 1, on the rail-optimized `h100-superpod` preset (128 DGX H100, 1,024 GPUs). The
sweep: N = 1, 2, 4, ..., 128 (N = 128 is Full AttnRes) in one boundary mode, plus the baseline.
The target is 2 minutes wall on a 2-core machine. Prints the wall time, the per-candidate
simulation time, and (with --check-symmetry) how far the symmetry reduction is from simulating
all 64 replicas for the baseline and one candidate.

    python benchmarks/bench_plan.py
    python benchmarks/bench_plan.py --symmetry off --jobs 2          # every replica (slow)
    python benchmarks/bench_plan.py --check-symmetry                 # adds ~2 x 40 s
    python benchmarks/bench_plan.py --profile                        # cProfile one candidate
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simulator.planner import run_plan  # noqa: E402
from simulator.planner_eval import EvalTask, evaluate_candidate  # noqa: E402
from simulator.scenario import Scenario, load_scenario  # noqa: E402

BLOCKS = [1, 2, 4, 8, 16, 32, 64, 128]


def scenario_1024(num_blocks: int | None = None, mode: str = "cached") -> Scenario:
    """The 1,024-GPU benchmark scenario (standard residual unless num_blocks is given)."""
    residual = {"kind": "standard"} if num_blocks is None else (
        {"kind": "full"} if num_blocks == 128 else {"kind": "block", "num_blocks": num_blocks})
    return load_scenario({
        "name": "bench-1024",
        "description": "L = 128 sublayers, P = 16, V = 2, M = 64, DP = 64 on h100-superpod",
        "model": {"num_layers": 64, "hidden_size": 4096, "num_heads": 32,
                  "ffn_hidden_size": 14336, "vocab_size": 128256, "seq_len": 4096,
                  "micro_batch_size": 1, "dtype": "bf16"},
        "residual": residual,
        "pipeline": {"schedule": "interleaved-1f1b", "num_stages": 16, "num_virtual_stages": 2,
                     "num_microbatches": 64, "comm_mode": mode},
        "parallelism": {"data_parallel": 64, "tensor_parallel": 1},
        "training": {"recompute": "full", "distributed_optimizer": True},
        "hardware": "h100", "topology": "h100-superpod", "placement": "packed"})


def sweep(args: argparse.Namespace) -> None:
    scenario = scenario_1024(8, args.mode)
    finished: list[float] = []
    start = time.perf_counter()

    def progress(done: int, total: int, label: str) -> None:
        finished.append(time.perf_counter() - start)
        print(f"  [{done}/{total}] {finished[-1]:7.2f} s  {label}", flush=True)

    report = run_plan(scenario, blocks=BLOCKS, modes=[args.mode], jobs=args.jobs,
                      symmetry=args.symmetry, progress=progress, verify=not args.no_verify)
    wall = time.perf_counter() - start
    rows = report.rows
    print(f"\nplan of {len(rows)} candidates ({len(BLOCKS)} N values + baseline) on "
          f"{report.num_gpus} GPUs, jobs = {args.jobs}, symmetry reduction: {report.symmetric}")
    print(f"{'candidate':34s} {'sim wall s':>10s} {'events':>9s} {'step s':>9s} "
          f"{'overhead':>9s} {'exposed s':>9s}")
    for row in rows:
        m = row.metrics
        print(f"{row.candidate.label:34s} {m.sim_wall_s:10.2f} {m.num_events:9d} "
              f"{m.step_time_s:9.4f} {row.overhead_pct:+8.2f}% {m.exposed_comm_s:9.4f}")
    sim_total = sum(r.metrics.sim_wall_s for r in rows)
    sweep_s = finished[len(rows) - 1] if len(finished) >= len(rows) else wall
    after = ("verification of the baseline and the recommendation with every replica"
             if report.verification else "report and process-pool shutdown")
    print(f"\nsweep: {sweep_s:.1f} s; {after}: {wall - sweep_s:.1f} s")
    print(f"wall time: {wall:.1f} s (target 120 s); simulation inside workers: "
          f"{sim_total:.1f} s in all, {sim_total / len(rows):.2f} s per candidate; "
          f"{wall / len(rows):.2f} s wall per candidate")
    print(f"recommendation: {report.recommended.candidate.label if report.recommended else None}")
    for note in report.notes[1:]:
        print(f"note: {note}")


def check_symmetry(num_blocks_list: list[int | None]) -> None:
    for n in num_blocks_list:
        s = scenario_1024(n)
        out = {}
        for symmetric in (True, False):
            t = time.perf_counter()
            m = evaluate_candidate(EvalTask(0, s, symmetric)).metrics
            assert m is not None
            out[symmetric] = (m.step_time_s, m.pipeline_time_s, time.perf_counter() - t)
        (s_step, s_pipe, s_wall), (f_step, f_pipe, f_wall) = out[True], out[False]
        label = "standard" if n is None else f"N={n}"
        print(f"{label:9s} step: symmetric {s_step:.4f} s vs all replicas {f_step:.4f} s "
              f"({100 * (s_step / f_step - 1):+.2f}%); pipeline phase {s_pipe:.4f} vs "
              f"{f_pipe:.4f} s ({100 * (s_pipe / f_pipe - 1):+.2f}%); wall {s_wall:.1f} s vs "
              f"{f_wall:.1f} s")


def profile_one(symmetric: bool) -> None:
    task = EvalTask(0, scenario_1024(8), symmetric)
    evaluate_candidate(task)  # warm the per-process fabric cache, as a worker would be
    profiler = cProfile.Profile()
    profiler.enable()
    evaluate_candidate(task)
    profiler.disable()
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--mode", default="cached", choices=["naive", "cached", "cached-own"])
    parser.add_argument("--symmetry", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--check-symmetry", action="store_true",
                        help="compare the symmetry reduction with all replicas (baseline, N=8)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip re-simulating the baseline and recommendation in full")
    parser.add_argument("--profile", action="store_true", help="cProfile one candidate")
    args = parser.parse_args()
    if args.profile:
        profile_one(args.symmetry != "off")
        return
    sweep(args)
    if args.check_symmetry:
        check_symmetry([None, 8])


if __name__ == "__main__":
    main()
