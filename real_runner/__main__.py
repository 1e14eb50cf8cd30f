"""Run one rank of a measured pipeline run; torchrun starts one process per pipeline stage.

    torchrun --nproc-per-node 2 -m real_runner scenarios/fig3_toy.yaml --out runs/measure/fig3
    # multi-node: torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d \
    #     --rdzv-endpoint HOST:29500 -m real_runner SCENARIO --out DIR
    # CPU, no torchrun: pipesim measure scenarios/fig3_toy.yaml --nproc 4

NCCL with one GPU per local rank when CUDA is available, gloo on the CPU otherwise. Writes
manifest.json and rank-<r>.jsonl under --out (docs/trace-schema.md).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run this rank; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m real_runner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", help="scenario YAML file")
    parser.add_argument("--out", default=None,
                        help="run directory (default: runs/measure/<scenario name>)")
    parser.add_argument("--steps", type=int, default=None,
                        help="measured steps (default: run.num_steps of the scenario)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="warm-up steps (default: run.num_warmup_steps of the scenario)")
    parser.add_argument("--profile", action="store_true",
                        help="also write PyTorch profiler traces, shapes recorded")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds any rank waits for another, and outlives a failed one")
    args = parser.parse_args(argv)
    from real_runner.worker import main_from_args
    from simulator.scenario import load_scenario

    try:
        out = args.out or f"runs/measure/{load_scenario(args.scenario).name}"
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return main_from_args(args.scenario, out, num_steps=args.steps,
                          num_warmup_steps=args.warmup, profile=args.profile,
                          timeout_s=args.timeout)


if __name__ == "__main__":
    sys.exit(main())
