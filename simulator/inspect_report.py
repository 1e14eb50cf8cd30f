"""What `pipesim inspect` reports, as plain data: schedule summary, transitions, memory, totals.

The CLI renders this dict as rich tables or dumps it as JSON, so the two views can never disagree.
"""

from __future__ import annotations

from typing import Any

from simulator.layout import build_layout
from simulator.manifest import Manifest, build_manifest, paper_eq7_planes, paper_eq8_planes
from simulator.memory import memory_model
from simulator.scenario import Scenario

__all__ = ["inspect_scenario", "compact_names"]


def inspect_scenario(scenario: Scenario) -> dict[str, Any]:
    """Everything `pipesim inspect` shows, JSON-ready."""
    from simulator.schedule import ActionKind, build_schedule

    p = scenario.pipeline
    layout = build_layout(scenario)
    manifest = build_manifest(scenario)
    schedule = build_schedule(p.schedule, p.num_stages, p.num_virtual_stages, p.num_microbatches)
    memory = memory_model(scenario)
    ranks = []
    for rank in range(p.num_stages):
        actions = schedule.actions[rank]
        first_backward = next(i for i, a in enumerate(
            a for a in actions if a.kind in (ActionKind.FORWARD, ActionKind.BACKWARD))
            if a.kind == ActionKind.BACKWARD)
        ranks.append({"rank": rank, "chunks": layout.rank_chunks(rank),
                      "num_actions": len(actions), "warmup_forwards": first_backward})
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "model": {"num_layers": scenario.model.num_layers,
                  "num_sublayers": scenario.model.num_sublayers,
                  "hidden_size": scenario.model.hidden_size, "dtype": scenario.model.dtype},
        "residual": {"kind": scenario.residual.kind, "num_blocks": scenario.num_blocks(),
                     "block_size": scenario.block_size()},
        "pipeline": {"schedule": p.schedule, "num_stages": p.num_stages,
                     "num_virtual_stages": p.num_virtual_stages,
                     "num_microbatches": p.num_microbatches, "num_chunks": layout.num_chunks,
                     "chunk_sublayers": [[r.start, r.stop - 1] for r in map(
                         layout.chunk_sublayers, range(layout.num_chunks))],
                     "comm_mode": manifest.comm_mode},
        "plane_bytes": manifest.plane_bytes,
        "schedule": {"ranks": ranks},
        "transitions": _transitions(manifest),
        "totals": _totals(scenario, manifest),
        "memory": [_rank_memory(r) for r in memory.ranks],
    }


def _transitions(manifest: Manifest) -> list[dict[str, Any]]:
    rows = []
    for hop in manifest.transitions:
        rows.append({
            "direction": hop.direction, "src_chunk": hop.src_chunk, "dst_chunk": hop.dst_chunk,
            "src_rank": hop.src_rank, "dst_rank": hop.dst_rank,
            "tensors": {mode: [{"name": t.name, "bytes": t.num_bytes} for t in specs]
                        for mode, specs in hop.tensors.items()},
            "bytes": {mode: hop.num_bytes(mode) for mode in manifest.modes},
        })
    return rows


def _totals(scenario: Scenario, manifest: Manifest) -> dict[str, Any]:
    m = scenario.pipeline.num_microbatches
    per_mode = {}
    for mode in manifest.modes:
        per_mb = manifest.total_bytes(mode)
        per_mode[mode] = {
            "forward_bytes_per_microbatch": manifest.total_bytes(mode, "forward"),
            "bytes_per_microbatch": per_mb,
            "bytes_per_step": per_mb * m,
            "peak_transition_bytes": manifest.peak_bytes(mode),
            "forward_blocks_per_transition": (manifest.block_counts(mode)
                                              if mode != "standard" else None),
        }
    totals: dict[str, Any] = {"modes": per_mode}
    n = scenario.num_blocks()
    if n is not None:
        p, v = scenario.pipeline.num_stages, scenario.pipeline.num_virtual_stages
        eq7, eq8 = paper_eq7_planes(p, v, n), paper_eq8_planes(p, v, n)
        totals["paper"] = {
            "note": "paper Eq. 7 / Eq. 8: forward block planes per micro-batch, partials excluded",
            "eq7_naive_planes": eq7, "eq8_cached_planes": eq8,
            "eq7_naive_bytes": eq7 * manifest.plane_bytes,
            "eq8_cached_bytes": eq8 * manifest.plane_bytes,
            "exact_forward_blocks": {mode: sum(manifest.block_counts(mode))
                                     for mode in manifest.modes if mode != "standard"},
        }
    return totals


def _rank_memory(rank) -> dict[str, Any]:  # noqa: ANN001 - RankMemory
    return {
        "rank": rank.rank, "parameter_count": rank.parameter_count,
        "weights_bytes": rank.weights_bytes, "gradients_bytes": rank.gradients_bytes,
        "optimizer_bytes": rank.optimizer_bytes,
        "activation_bytes_per_microbatch": {
            str(c): {"sublayers": a.sublayers_bytes, "attnres": a.attnres_bytes,
                     "received": a.received_bytes, "total": a.total_bytes}
            for c, a in rank.chunk_bytes.items()},
        "peak_in_flight": rank.peak_in_flight,
        "peak_activation_bytes": rank.peak_activation_bytes,
        "recompute_working_bytes": rank.recompute_working_bytes,
        "peak_bytes": rank.peak_bytes,
    }


def compact_names(names: list[str]) -> str:
    """b0, b1, b2, b3, partial -> 'b0-b3 +partial': long histories stay readable."""
    blocks = [int(n[1:]) for n in names if n.startswith("b")]
    others = [n for n in names if not n.startswith("b")]
    parts, run = [], []
    for n in blocks:
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            parts.append(_run_text(run))
        run = [n]
    if run:
        parts.append(_run_text(run))
    return " ".join(parts + [f"+{o}" if parts else o for o in others]) or "-"


def _run_text(run: list[int]) -> str:
    return f"b{run[0]}" if len(run) == 1 else f"b{run[0]}-b{run[-1]}"
