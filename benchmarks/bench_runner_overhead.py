"""Step time of Block AttnRes (cached) vs the standard residual on the CPU validation model.

    python benchmarks/bench_runner_overhead.py                 # ~3 min on 2 cores
    python benchmarks/bench_runner_overhead.py --steps 6 --seq-len 128        # quicker

Model: d = 256, 16 sublayers (8 layers), 4 heads, swiglu 1024, vocab 1024, seq 256, b = 1,
fp32; pipeline P = 2, V = 2 (interleaved 1F1B), M = 8; Block AttnRes N = 4 (S = 4). Variants:
standard residual, block-cached, block-cached-own, block-naive, full-cached (Full AttnRes).

One 2-rank gloo process group runs every variant: each variant is a real RunSession (its own
trace under a temporary directory) and the variants take turns step by step, in a rotating
order, so a machine shared with other work loads them alike. Per variant, with ratios to the
standard residual taken step by step (adjacent in time) and then the median:
- wall: step time (the longest rank; ranks start each step together);
- cpu: CPU seconds per step summed over both ranks (process time, gloo threads included),
  which time-slicing by other processes barely moves;
- compute: F and B spans per step on the busier rank;
- MB/step: payload bytes sent per step (headers excluded);
- 1-proc: CPU time of one forward+backward of the unsplit model for one micro-batch in this
  process, variants interleaved: the AttnRes arithmetic without pipeline or communication.
Prints numbers only; nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from real_runner.chunks import ReferenceModel, make_batch
from real_runner.distributed import init_distributed, shutdown
from real_runner.p2p import Links
from real_runner.session import RunnerOptions, RunSession, model_spec
from simulator.scenario import load_scenario
from simulator.trace_schema import read_run

VARIANTS = {
    "standard": ({"kind": "standard"}, "naive"),
    "block-cached": ({"kind": "block", "num_blocks": 4}, "cached"),
    "block-cached-own": ({"kind": "block", "num_blocks": 4}, "cached-own"),
    "block-naive": ({"kind": "block", "num_blocks": 4}, "naive"),
    "full-cached": ({"kind": "full"}, "cached"),
}


def scenario_dict(variant: str, seq_len: int) -> dict:
    residual, mode = VARIANTS[variant]
    return {
        "name": f"bench-{variant}",
        "model": {"num_layers": 8, "hidden_size": 256, "num_heads": 4, "ffn_hidden_size": 1024,
                  "vocab_size": 1024, "seq_len": seq_len, "micro_batch_size": 1,
                  "dtype": "fp32", "mlp": "swiglu"},
        "residual": residual,
        "pipeline": {"schedule": "interleaved-1f1b", "num_stages": 2, "num_virtual_stages": 2,
                     "num_microbatches": 8, "comm_mode": mode},
    }


def _worker(rank: int, port: int, seq_len: int, steps: int, warmup: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), PIPESIM_LAUNCHER_STORE="1")
    torch.set_num_threads(1)
    env = init_distributed(timeout_s=300)
    links = Links(env.rank, env.device)
    sessions = {v: RunSession(env, load_scenario(scenario_dict(v, seq_len)),
                              RunnerOptions(out_dir=Path(out_dir) / v, num_steps=steps,
                                            num_warmup_steps=warmup), links)
                for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    names = list(VARIANTS)
    for session in sessions.values():
        session.begin()
    for step in range(steps + warmup):
        for name in names[step % len(names):] + names[:step % len(names)]:
            start = time.process_time()
            sessions[name].step(step)
            cpu[name].append(time.process_time() - start)
    for session in sessions.values():
        session.end([])
    (Path(out_dir) / f"cpu-rank-{rank}.json").write_text(json.dumps(cpu))
    links.close()
    shutdown()


def single_process_cpu_s(seq_len: int, repeats: int) -> dict[str, float]:
    """Median CPU time of one forward+backward per variant, variants interleaved."""
    models = {}
    for variant in VARIANTS:
        spec = model_spec(load_scenario(scenario_dict(variant, seq_len)))
        models[variant] = (ReferenceModel(spec), make_batch(spec, 0, 1, 1, seq_len))
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(repeats + 2):
        for variant, (model, (inputs, targets)) in models.items():
            start = time.process_time()
            model(inputs[0], targets[0]).backward()
            times[variant].append(time.process_time() - start)
    return {v: statistics.median(t[2:]) for v, t in times.items()}


def _per_step(out_dir: Path, warmup: int) -> dict[str, dict[str, list[float]]]:
    cpu_by_rank = [json.loads((out_dir / f"cpu-rank-{r}.json").read_text()) for r in (0, 1)]
    figures = {}
    for variant in VARIANTS:
        run = read_run(out_dir / variant)
        steps = sorted(s.step for s in run.measured_steps())
        wall = [max(s.duration_s for t in run.ranks for s in t.steps if s.step == i)
                for i in steps]
        compute = [max(sum(c.end_s - c.start_s for c in t.compute if c.step == i)
                       for t in run.ranks) for i in steps]
        cpu = [sum(cpu_by_rank[r][variant][i] for r in (0, 1)) for i in steps]
        sent = sum(r.total_bytes for r in run.p2p() if r.op == "send" and r.step in steps)
        figures[variant] = {"wall": wall, "cpu": cpu, "compute": compute,
                            "bytes": [sent / len(steps)]}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="measured steps per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        store = dist.TCPStore("127.0.0.1", 0, 2, is_master=True, wait_for_workers=False,
                              timeout=timedelta(seconds=300))
        mp.start_processes(_worker, args=(store.port, args.seq_len, args.steps, args.warmup, tmp),
                           nprocs=2, start_method="spawn")
        figures = _per_step(Path(tmp), args.warmup)
    single = single_process_cpu_s(args.seq_len, 20)
    base = figures["standard"]
    print(f"CPU validation model: d=256, L=16 sublayers, seq {args.seq_len}, b=1, fp32; "
          f"interleaved 1F1B P=2 V=2 M=8; gloo; {args.steps} measured steps per variant, "
          f"variants alternating step by step")
    print(f"{'variant':17s}{'wall ms':>9s}{'ratio':>7s}{'cpu s':>8s}{'ratio':>7s}"
          f"{'compute ms':>11s}{'ratio':>7s}{'MB/step':>9s}{'1-proc ms':>10s}{'ratio':>7s}")
    for variant, fig in figures.items():
        ratio = {k: statistics.median(a / b for a, b in zip(fig[k], base[k]))
                 for k in ("wall", "cpu", "compute")}
        print(f"{variant:17s}{statistics.median(fig['wall']) * 1e3:9.1f}{ratio['wall']:7.3f}"
              f"{statistics.median(fig['cpu']):8.3f}{ratio['cpu']:7.3f}"
              f"{statistics.median(fig['compute']) * 1e3:11.1f}{ratio['compute']:7.3f}"
              f"{fig['bytes'][0] / 1e6:9.2f}{single[variant] * 1e3:10.1f}"
              f"{single[variant] / single['standard']:7.3f}")


if __name__ == "__main__":
    main()
