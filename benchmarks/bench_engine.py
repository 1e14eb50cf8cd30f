"""How fast the discrete-event engine simulates one training step, and how that grows.

    python benchmarks/bench_engine.py            # headline + growth (a few minutes)
    python benchmarks/bench_engine.py --quick    # headline only
    python benchmarks/bench_engine.py --outputs  # headline + what `pipesim run` writes

Headline: one step of a 64-layer (L = 128 sublayers) Block AttnRes model (N = 8, cached), d =
8192, on P = 16, V = 2, M = 64, DP = 64: 1,024 GPUs on the rail-optimized `h100-superpod`
topology (4 SUs of 32 DGX H100, leaf/spine), every flow contending max-min fairly, the ring
gradient all-reduce included. It prints the wall time, events and events per second, then the
same step under the symmetry reduction (one replica on shared-capacity links) with its error
against the full simulation. Growth: wall time against GPUs (DP), micro-batches M and virtual
stages V. Numbers depend on the machine's load; run it on an idle machine. `--outputs` times
the files `pipesim run` writes for the headline step (link timelines recorded, as the CLI
does): the CSVs and summary.json, result.json, the Chrome trace, the JSONL trace and figures,
with their sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from simulator.engine import simulate_plan  # noqa: E402
from simulator.hardware import load_hardware  # noqa: E402
from simulator.plan import build_plan, resolve_fabric  # noqa: E402
from simulator.results import SimulationResult  # noqa: E402
from simulator.scenario import Scenario, load_scenario  # noqa: E402


def scenario(dp: int = 64, M: int = 64, V: int = 2, P: int = 16) -> Scenario:
    """The benchmark model on `h100-superpod`."""
    return load_scenario({
        "name": f"bench_dp{dp}_m{M}_v{V}",
        "model": {"num_layers": 64, "hidden_size": 8192, "num_heads": 64,
                  "ffn_hidden_size": 28672, "vocab_size": 128256, "seq_len": 4096},
        "residual": {"kind": "block", "num_blocks": 8},
        "pipeline": {"schedule": "interleaved-1f1b" if V > 1 else "1f1b", "num_stages": P,
                     "num_virtual_stages": V, "num_microbatches": M, "comm_mode": "cached"},
        "parallelism": {"data_parallel": dp, "tensor_parallel": 1},
        "hardware": "h100", "topology": "h100-superpod", "placement": "packed"})


def timed(s: Scenario, *, symmetric: bool = False, timelines: bool = False
          ) -> tuple[SimulationResult, float, float]:
    """(result, wall seconds to build the plan, wall seconds to simulate)."""
    start = time.perf_counter()
    plan = build_plan(s, load_hardware("h100"), resolve_fabric(s), symmetric=symmetric,
                      record_link_timeline=timelines)
    built = time.perf_counter()
    cpu = time.process_time()
    result = simulate_plan(plan)
    result.stats["cpu_s"] = time.process_time() - cpu
    return result, built - start, time.perf_counter() - built


def row(label: str, result: SimulationResult, build_s: float, sim_s: float) -> str:
    st = result.stats
    return (f"{label:<30} gpus={result.num_replicas * result.num_stages:>5} "
            f"plan={build_s:5.2f} s  simulate={sim_s:6.2f} s (cpu {st['cpu_s']:6.2f} s)  "
            f"events={st['num_events']:>9,} "
            f"({st['num_events'] / sim_s:>9,.0f}/s)  flows={st['num_flows']:>7,}  "
            f"step={result.step_time_s:8.4f} s")


def headline() -> dict[str, Any]:
    s = scenario()
    full, build_s, sim_s = timed(s)
    print(row("full 1,024-GPU step", full, build_s, sim_s))
    st = full.stats
    print(f"  rate recomputations {st['num_rate_recomputations']:,}, largest max-min "
          f"component {st['largest_max_min_component']} flows, pipeline time "
          f"{full.pipeline_time_s:.4f} s, bubble {full.bubble_fraction:.1%}")
    print(f"  target: at most 30 s on the 2-core machine -> "
          f"{'met' if build_s + sim_s <= 30 else 'NOT met'} ({build_s + sim_s:.1f} s wall; "
          f"load average now {os.getloadavg()[0]:.1f})")
    reduced, r_build, r_sim = timed(s, symmetric=True)
    print(row("symmetry-reduced (1 replica)", reduced, r_build, r_sim))
    for name in ("step_time_s", "pipeline_time_s"):
        a, b = getattr(full, name), getattr(reduced, name)
        print(f"  {name}: full {a:.6f} s, reduced {b:.6f} s, error {(b - a) / a:+.4%}")
    ar_full = max(r.allreduce_s for r in full.ranks)
    ar_red = max(r.allreduce_s for r in reduced.ranks)
    speed_up = (build_s + sim_s) / (r_build + r_sim)
    print(f"  longest all-reduce: full {ar_full:.6f} s, reduced {ar_red:.6f} s, "
          f"error {(ar_red - ar_full) / ar_full:+.4%}; speed-up {speed_up:.0f}x")
    return {"wall_s": build_s + sim_s}


def growth() -> None:
    print("\ngrowth with GPUs (M = 16, V = 2):")
    for dp in (8, 16, 32, 64):
        print(row(f"  dp={dp}", *timed(scenario(dp=dp, M=16))))
    print("growth with micro-batches (DP = 16, V = 2):")
    for M in (16, 32, 64):
        print(row(f"  M={M}", *timed(scenario(dp=16, M=M))))
    print("growth with virtual stages (DP = 16, M = 32; 128 sublayers over P x V chunks):")
    for V in (1, 2, 4):
        print(row(f"  V={V}", *timed(scenario(dp=16, M=32, V=V))))


def outputs() -> None:
    """Time what `pipesim run` writes for the headline step."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    from simulator.chrome_trace import write_chrome_trace  # noqa: PLC0415
    from simulator.plots import plot_gantt, plot_link_utilization, plot_memory  # noqa: PLC0415
    from simulator.sim_trace import write_simulated_run  # noqa: PLC0415

    s = scenario()
    result, build_s, sim_s = timed(s, timelines=True)
    print(f"\noutputs of the full step (link timelines recorded: simulate {sim_s:.2f} s, "
          f"cpu {result.stats['cpu_s']:.2f} s):")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)

        def figures() -> list[Path]:
            paths = []
            for name, plot in (("gantt.png", plot_gantt), ("links.png", plot_link_utilization),
                               ("memory.png", plot_memory)):
                fig, ax = plt.subplots(figsize=(12, 5))
                plot(ax, result)
                fig.savefig(out / name, dpi=110)
                plt.close(fig)
                paths.append(out / name)
            return paths

        def result_json() -> list[Path]:
            (out / "result.json").write_text(json.dumps(result.to_json(spans=False)))
            return [out / "result.json"]

        steps = (("summary.json + CSVs", lambda: result.write(out)),
                 ("result.json", result_json),
                 ("trace.json", lambda: [write_chrome_trace(result, out / "trace.json")]),
                 ("sim_run/", lambda: [write_simulated_run(result, s, out / "sim_run")]),
                 ("figures", figures))
        total = 0.0
        for label, write in steps:
            start = time.perf_counter()
            paths = write()
            took = time.perf_counter() - start
            total += took
            size = sum(f.stat().st_size for p in paths
                       for f in ([p] if p.is_file() else p.rglob("*")))
            print(f"  {label:<22} {took:6.2f} s  {size / 1e6:8.1f} MB")
        print(f"  all outputs            {total:6.2f} s; with the simulation "
              f"{build_s + sim_s + total:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="headline only")
    parser.add_argument("--outputs", action="store_true",
                        help="headline, then time the files `pipesim run` writes")
    args = parser.parse_args()
    headline()
    if args.outputs:
        outputs()
    elif not args.quick:
        growth()


if __name__ == "__main__":
    main()
