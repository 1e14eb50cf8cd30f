"""A finished plan: one row per candidate, the Pareto front, the recommendation, JSON and CSV.

Definitions (docs/planning.md has the long form):

- overhead: step time against the reference baseline (the scenario's own layout with the
  standard residual), in percent; the layout overhead compares with the standard baseline of
  the candidate's own V and placement instead (what AttnRes alone costs there);
- fits memory: the most loaded GPU's peak <= max_memory_fraction x the GPU's HBM capacity;
- Pareto front: candidates that fit in memory and that no other such candidate dominates in
  (overhead: lower is better, expected gain: higher is better);
- recommendation: among candidates within max_step_overhead_pct and max_memory_fraction, the
  largest expected gain; ties broken by lower overhead, then fewer boundary bytes per step, then
  candidate order. The standard baseline (gain 0) takes part, so "keep the standard residual"
  is the answer when no AttnRes candidate fits.

plan.json and plan.csv hold no wall-clock times, so the same plan writes the same bytes.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.errors import UserError
from simulator.planner_candidates import Candidate, Skipped
from simulator.planner_eval import CandidateMetrics
from simulator.quality import QualityModel
from simulator.units import format_bytes

__all__ = ["PlanConstraints", "PlanRow", "PlanReport", "pareto_front", "recommend", "build_rows"]

_EPS = 1e-9
"""Tolerance (in percent or fraction units) for comparing overheads and gains."""


@dataclass(frozen=True)
class PlanConstraints:
    """What the user accepts: a step-time overhead and a share of GPU memory."""

    max_step_overhead_pct: float = 5.0
    max_memory_fraction: float = 0.9

    def __post_init__(self) -> None:
        if not self.max_step_overhead_pct >= 0:
            raise UserError(f"max_step_overhead = {self.max_step_overhead_pct!r}: must be a "
                            "percentage >= 0, e.g. 5 for +5% step time")
        if not 0 < self.max_memory_fraction <= 1:
            raise UserError(f"max_memory_fraction = {self.max_memory_fraction!r}: must be in "
                            "(0, 1], the share of each GPU's memory a plan may use, e.g. 0.9")


@dataclass
class PlanRow:
    """One simulated candidate with its derived numbers."""

    candidate: Candidate
    metrics: CandidateMetrics
    overhead_pct: float
    """Step time against the reference baseline (the scenario's own layout, standard), in %."""
    layout_overhead_pct: float | None
    """Step time against the standard baseline of the same V and placement, in % (None when
    that baseline could not be simulated): what AttnRes alone costs in this layout."""
    memory_fraction: float
    fits_memory: bool
    within_overhead: bool
    gain_fraction: float
    """Share of Full AttnRes's loss gain (quality model)."""
    expected_loss: float
    """Loss at the quality model's own scale (the 436M ablation by default)."""
    compute_equivalent: float
    on_pareto_front: bool = False
    recommended: bool = False

    @property
    def feasible(self) -> bool:
        """Within both constraints."""
        return self.fits_memory and self.within_overhead

    def to_json(self) -> dict[str, Any]:
        """Every field as JSON-ready data."""
        m = self.metrics
        return {
            **self.candidate.describe(),
            "step_time_s": m.step_time_s, "overhead_pct": self.overhead_pct,
            "layout_overhead_pct": self.layout_overhead_pct,
            "compute_only_step_time_s": m.compute_only_step_time_s,
            "exposed_comm_s": m.exposed_comm_s, "max_comm_wait_s": m.max_comm_wait_s,
            "pipeline_time_s": m.pipeline_time_s, "bubble_fraction": m.bubble_fraction,
            "peak_memory_bytes_per_stage": list(m.peak_memory_bytes_per_stage),
            "max_peak_memory_bytes": m.max_peak_memory_bytes,
            "hbm_capacity_bytes": m.hbm_capacity_bytes, "memory_fraction": self.memory_fraction,
            "fits_memory": self.fits_memory, "within_overhead": self.within_overhead,
            "busiest_link": m.busiest_link, "busiest_link_kind": m.busiest_link_kind,
            "busiest_link_pipeline_bytes": m.busiest_link_pipeline_bytes,
            "busiest_link_bytes": m.busiest_link_bytes,
            "busiest_link_utilization": m.busiest_link_utilization,
            "max_link_utilization": m.max_link_utilization,
            "boundary_bytes_per_step": m.boundary_bytes_per_step,
            "gain_fraction": self.gain_fraction, "expected_loss": self.expected_loss,
            "compute_equivalent": self.compute_equivalent,
            "on_pareto_front": self.on_pareto_front, "recommended": self.recommended,
        }


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (overhead, gain) points: True where no other point is at least as good in both and
    strictly better in one (lower overhead, higher gain). Equal points are all kept."""
    flags = []
    for i, (oi, gi) in enumerate(points):
        dominated = any(
            oj <= oi + _EPS and gj >= gi - _EPS and (oj < oi - _EPS or gj > gi + _EPS)
            for j, (oj, gj) in enumerate(points) if j != i)
        flags.append(not dominated)
    return flags


def _violations(row: PlanRow, constraints: PlanConstraints) -> str:
    parts = []
    if not row.within_overhead:
        parts.append(f"{row.overhead_pct:+.1f}% step time > {constraints.max_step_overhead_pct:g}%")
    if not row.fits_memory:
        limit = constraints.max_memory_fraction * row.metrics.hbm_capacity_bytes
        parts.append(f"peak memory {format_bytes(row.metrics.max_peak_memory_bytes)} > "
                     f"{constraints.max_memory_fraction:.0%} of "
                     f"{format_bytes(row.metrics.hbm_capacity_bytes)} = {format_bytes(limit)}")
    return " and ".join(parts)


def _rank_key(row: PlanRow) -> tuple[float, float, int, int]:
    """Smaller is better: larger gain, then lower overhead, fewer bytes, earlier candidate."""
    return (-round(row.gain_fraction, 9), round(row.overhead_pct, 9),
            row.metrics.boundary_bytes_per_step, row.candidate.index)


def recommend(rows: Sequence[PlanRow], constraints: PlanConstraints) -> tuple[int | None, str]:
    """The recommended row's position in `rows` (or None) and the reason in one sentence."""
    feasible = [i for i, row in enumerate(rows) if row.feasible]
    if not feasible:
        cheapest = min(rows, key=lambda r: (r.metrics.max_peak_memory_bytes, r.overhead_pct))
        return None, (f"nothing fits the constraints: even {cheapest.candidate.label}, the "
                      f"smallest in memory, has {_violations(cheapest, constraints)}")
    best = min(feasible, key=lambda i: _rank_key(rows[i]))
    row = rows[best]
    # The next larger gain, and of the candidates with it the one with the lowest overhead.
    better = sorted((r for r in rows if r.gain_fraction > row.gain_fraction + _EPS),
                    key=lambda r: (round(r.gain_fraction, 9), r.overhead_pct))
    blocker = (f"; the next larger gain, {better[0].candidate.label} "
               f"({better[0].gain_fraction:.0%}), is ruled out by "
               f"{_violations(better[0], constraints)}" if better else "")
    within = (f"within +{constraints.max_step_overhead_pct:g}% step time and "
              f"{constraints.max_memory_fraction:.0%} of GPU memory")
    if row.candidate.kind == "standard":
        return best, (f"keep the standard residual ({row.candidate.label}): no AttnRes candidate "
                      f"fits {within}{blocker}")
    ties = [i for i in feasible if i != best
            and abs(rows[i].gain_fraction - row.gain_fraction) <= _EPS]
    tie_note = (f", ahead of {len(ties)} candidate(s) with the same gain by lower overhead or "
                "fewer boundary bytes") if ties else ""
    return best, (f"{row.candidate.label} buys {row.gain_fraction:.0%} of Full AttnRes's expected "
                  f"gain for {row.overhead_pct:+.1f}% step time at {row.memory_fraction:.0%} of "
                  f"GPU memory, the largest gain {within}{tie_note}{blocker}")


def build_rows(pairs: Sequence[tuple[Candidate, CandidateMetrics]], reference_step_s: float,
               constraints: PlanConstraints, quality: QualityModel) -> list[PlanRow]:
    """Derived numbers, Pareto flags and the recommendation flag for simulated candidates."""
    layout_step = {(c.num_virtual_stages, c.placement): m.step_time_s
                   for c, m in pairs if c.kind == "standard"}
    rows = []
    for cand, m in pairs:
        L = cand.scenario.model.num_sublayers
        n = cand.num_blocks
        if cand.kind == "standard":
            gain, loss, equiv = 0.0, quality.baseline_loss, 1.0
        else:
            assert n is not None
            gain = quality.gain_fraction(n, L)
            loss, equiv = quality.expected_loss(n, L), quality.compute_equivalent(n, L)
        overhead = (m.step_time_s / reference_step_s - 1.0) * 100.0
        own = layout_step.get((cand.num_virtual_stages, cand.placement))
        layout_overhead = None if own is None else (m.step_time_s / own - 1.0) * 100.0
        fraction = m.max_peak_memory_bytes / m.hbm_capacity_bytes
        rows.append(PlanRow(
            candidate=cand, metrics=m, overhead_pct=overhead,
            layout_overhead_pct=layout_overhead, memory_fraction=fraction,
            fits_memory=fraction <= constraints.max_memory_fraction + _EPS,
            within_overhead=overhead <= constraints.max_step_overhead_pct + _EPS,
            gain_fraction=gain, expected_loss=loss, compute_equivalent=equiv))
    fitting = [i for i, r in enumerate(rows) if r.fits_memory]
    front = pareto_front([(rows[i].overhead_pct, rows[i].gain_fraction) for i in fitting])
    for i, on in zip(fitting, front):
        rows[i].on_pareto_front = on
    return rows


@dataclass
class PlanReport:
    """Everything `pipesim plan` prints and writes."""

    scenario_name: str
    num_sublayers: int
    num_gpus: int
    reference_label: str
    reference_step_time_s: float
    constraints: PlanConstraints
    quality_source: str
    symmetric: bool
    rows: list[PlanRow]
    skipped: list[Skipped] = field(default_factory=list)
    recommended_index: int | None = None
    """Position in `rows` of the recommendation."""
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    """Caveats printed with the plan (quality model scale, symmetry reduction)."""
    verification: dict[str, Any] | None = None
    """After a symmetry-reduced sweep: the reference and the recommendation simulated with every
    replica, with the reduction's step-time error."""

    @property
    def recommended(self) -> PlanRow | None:
        """The recommended row, if any."""
        return None if self.recommended_index is None else self.rows[self.recommended_index]

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON-ready data (no wall-clock times: reruns write the same bytes)."""
        rec = self.recommended
        return {
            "scenario": self.scenario_name, "num_sublayers": self.num_sublayers,
            "num_gpus": self.num_gpus,
            "reference": {"label": self.reference_label,
                          "step_time_s": self.reference_step_time_s},
            "constraints": {"max_step_overhead_pct": self.constraints.max_step_overhead_pct,
                            "max_memory_fraction": self.constraints.max_memory_fraction},
            "quality_source": self.quality_source, "symmetric": self.symmetric,
            "notes": list(self.notes), "verification": self.verification,
            "recommendation": {"label": None if rec is None else rec.candidate.label,
                               "index": None if rec is None else rec.candidate.index,
                               "reason": self.reason},
            "pareto_front": [r.candidate.label for r in self.rows if r.on_pareto_front],
            "candidates": [r.to_json() for r in self.rows],
            "skipped": [{"label": s.label, "reason": s.reason} for s in self.skipped],
        }

    def csv_rows(self) -> list[dict[str, Any]]:
        """One flat dict per candidate (lists joined by spaces)."""
        out = []
        for row in self.rows:
            flat = row.to_json()
            for key in ("peak_memory_bytes_per_stage", "sublayers_per_chunk"):
                flat[key] = " ".join(map(str, flat[key]))
            out.append(flat)
        return out

    def write(self, out_dir: str | Path) -> list[Path]:
        """plan.json and plan.csv in `out_dir`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        json_path, csv_path = out / "plan.json", out / "plan.csv"
        json_path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        rows = self.csv_rows()
        with csv_path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return [json_path, csv_path]
