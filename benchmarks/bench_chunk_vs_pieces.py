"""Does the cost model's sum of calibrated pieces predict the runner's own chunk? (no network)

The accuracy benchmark finds a run's compute 5-18% slower than calibration predicts on the
unshaped loopback (docs/accuracy-report.md). This script separates the model from the run's
environment: in one process with one thread, with no process group and no other rank, it
alternates rounds of

1. calibration's own piece timing (real_runner.calibration.measure_shape: pieces in turns, in
   the runner's saved-tensor tracker, and the roofline), turned into the cost model's chunk
   prediction, and
2. the runner's chunk forward and backward (real_runner/chunks.py), `--calls` times in a row,
   with inputs made as the previous chunks would make them; trimmed means.

It prints one line per round: the runner's forward and backward against the model's. Run two
copies at once to see what a second computing process costs (as on a 2-core host).

    python benchmarks/bench_chunk_vs_pieces.py scenarios/cpu_standard_1f1b.yaml --chunk 0
    python benchmarks/bench_chunk_vs_pieces.py scenarios/cpu_full_naive_interleaved.yaml --chunk 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from real_runner.calibration import measure_roofline, measure_shape  # noqa: E402
from real_runner.residual import ResidualState  # noqa: E402
from real_runner.session import build_chunks, model_spec  # noqa: E402
from simulator.calibrate import CalibrationPlan, RankMeasurements, trimmed_mean  # noqa: E402
from simulator.calibrate_files import build_calibration  # noqa: E402
from simulator.costs import CostModel  # noqa: E402
from simulator.layout import build_layout  # noqa: E402
from simulator.scenario import Scenario, load_scenario  # noqa: E402


def _leaves(state: ResidualState) -> ResidualState:
    """A chunk's received state as fresh leaves (as the executor makes them)."""
    def leaf(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor.detach().clone().requires_grad_()

    return ResidualState(hidden=leaf(state.hidden), partial=leaf(state.partial),
                         blocks={j: leaf(t) for j, t in state.blocks.items()})  # type: ignore


class _ChunkTimer:
    """The runner's chunk `c` of a scenario, with the input its predecessors produce."""

    def __init__(self, scenario: Scenario, chunk: int) -> None:
        self.layout = build_layout(scenario)
        spec = model_spec(scenario)
        device, m = torch.device("cpu"), scenario.model
        gen = torch.Generator().manual_seed(0)
        self.tokens = torch.randint(m.vocab_size, (m.micro_batch_size, m.seq_len), generator=gen)
        self.targets = torch.randint(m.vocab_size, (m.micro_batch_size, m.seq_len), generator=gen)
        state = None
        for c in range(chunk + 1):
            built = build_chunks(spec, self.layout, self.layout.chunk_rank(c), device,
                                 torch.float32)[c]
            if c == chunk:
                self.chunk, self.received = built, state
                break
            with torch.no_grad():
                state = built.run_sublayers(built.embed(self.tokens) if c == 0 else state)
        self.index = chunk

    def sample(self) -> tuple[float, float]:
        """One forward and backward: (seconds, seconds)."""
        state = None if self.received is None else _leaves(self.received)
        t0 = time.perf_counter()
        out = self.chunk.run_sublayers(self.chunk.embed(self.tokens) if state is None else state)
        if self.index == self.layout.num_chunks - 1:
            root = self.chunk.loss(out, self.targets)
        else:
            made = [t for t in (out.hidden, out.partial) if t is not None]
            made += [t for j, t in out.blocks.items() if state is None or j not in state.blocks]
            root = sum(t.sum() for t in made)
        t1 = time.perf_counter()
        root.backward()  # type: ignore[union-attr]
        return t1 - t0, time.perf_counter() - t1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--chunk", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--compute-seconds", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    scenario = load_scenario(args.scenario)
    timer = _ChunkTimer(scenario, args.chunk)
    plan = CalibrationPlan.for_scenarios([scenario], 1, min_compute_seconds=args.compute_seconds,
                                         late_receive_rounds=0, traffic_rounds=0)
    for _ in range(5):
        timer.sample()
    print(f"{scenario.name}, chunk {args.chunk}: runner chunk vs cost model of calibrated "
          "pieces (1 process, 1 thread)")
    for round_index in range(args.rounds):
        measured = measure_shape(plan.shapes[0], torch.device("cpu"), plan)
        flops_per_s, bytes_per_s = measure_roofline(plan.shapes[0], torch.device("cpu"), plan)
        raw = RankMeasurements(rank=0, world_size=1, backend="gloo", device="cpu",
                               hostname="local", num_threads=1, device_memory_bytes=1,
                               shapes=[measured], matmul_flops_per_s=flops_per_s,
                               elementwise_bytes_per_s=bytes_per_s, p2p=[])
        hardware = build_calibration(plan, [raw]).hardware
        model = CostModel(scenario, hardware, layout=timer.layout).chunk_costs()[args.chunk]
        samples = [timer.sample() for _ in range(args.calls)]
        forward_s = trimmed_mean([f for f, _ in samples])
        backward_s = trimmed_mean([b for _, b in samples])
        forward_pct = 100 * (model.forward_s / forward_s - 1)
        backward_pct = 100 * (model.backward_s / backward_s - 1)
        print(f"round {round_index}: runner forward {1e3 * forward_s:.2f} ms, backward "
              f"{1e3 * backward_s:.2f} ms | model forward {1e3 * model.forward_s:.2f} ms "
              f"({forward_pct:+.1f}%), backward {1e3 * model.backward_s:.2f} ms "
              f"({backward_pct:+.1f}%)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
