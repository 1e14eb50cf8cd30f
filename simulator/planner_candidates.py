"""The configurations a block-size plan compares: residual kind, N, boundary mode, V, placement.

A plan starts from one scenario and varies only what the planner is asked to vary:

- the residual: the standard-residual baseline, Block AttnRes with N blocks, or Full AttnRes
  (N = L is always Full AttnRes, so it is labelled "full");
- the boundary communication mode (naive, cached, cached-own) of every AttnRes candidate;
- the number of virtual stages V (V > 1 runs interleaved-1f1b, V = 1 runs 1f1b; when L does not
  divide by P x V a balanced `sublayers_per_chunk` puts the extra sublayers in the middle chunks,
  away from the embedding and the LM head);
- the placement policy.

Every candidate is re-validated through `load_scenario`, so a combination the scenario rules
forbid (an N that cannot form exactly N blocks, a schedule rule, ...) is returned as `Skipped`
with the validator's own message instead of crashing the sweep. Candidate 0 is always the
reference baseline: the scenario's own layout with the standard residual, against which every
overhead is measured. For every other (V, placement) layout its own standard-residual baseline
is simulated as well, so the table shows what that layout costs without AttnRes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from simulator.errors import UserError
from simulator.manifest import ATTNRES_MODES
from simulator.scenario import Scenario, load_scenario

__all__ = [
    "Candidate",
    "Skipped",
    "valid_block_counts",
    "default_block_counts",
    "balanced_sublayers",
    "generate_candidates",
]


@dataclass(frozen=True)
class Candidate:
    """One configuration to simulate, with its validated scenario."""

    index: int
    kind: str
    """"standard", "block" or "full"."""
    num_blocks: int | None
    """N; L for Full AttnRes; None for the standard residual."""
    comm_mode: str | None
    """Boundary mode; None for the standard residual (it sends one hidden state)."""
    num_virtual_stages: int
    placement: str
    """Placement policy name, or "explicit" for a mapping."""
    scenario: Scenario

    @property
    def residual_label(self) -> str:
        """"standard", "block N=8 cached", "full naive"."""
        if self.kind == "standard":
            return "standard"
        if self.kind == "full":
            return f"full {self.comm_mode}"
        return f"block N={self.num_blocks} {self.comm_mode}"

    @property
    def label(self) -> str:
        """The residual label plus the layout: "block N=8 cached, V=2, packed"."""
        return f"{self.residual_label}, V={self.num_virtual_stages}, {self.placement}"

    def describe(self) -> dict[str, Any]:
        """The identifying fields as JSON-ready data (the scenario itself left out)."""
        return {"index": self.index, "label": self.label, "kind": self.kind,
                "num_blocks": self.num_blocks, "block_size": self.scenario.block_size(),
                "comm_mode": self.comm_mode, "num_virtual_stages": self.num_virtual_stages,
                "schedule": self.scenario.pipeline.schedule, "placement": self.placement,
                "sublayers_per_chunk": self.scenario.chunk_sublayer_counts()}


@dataclass(frozen=True)
class Skipped:
    """A requested configuration that cannot run, with the reason."""

    label: str
    reason: str


def valid_block_counts(num_sublayers: int) -> list[int]:
    """Every N in 1..L that forms exactly N blocks of size ceil(L/N) (a shorter last block)."""
    L = num_sublayers
    return [n for n in range(1, L + 1) if -(-L // -(-L // n)) == n]


def default_block_counts(scenario: Scenario) -> list[int]:
    """For each power of two below L the largest valid N not above it, the scenario's own N,
    and L (Full AttnRes). With L = 54: 1, 2, 4, 8, 14, 27, 54 (and 9 for a scenario with N = 9)."""
    L = scenario.model.num_sublayers
    valid = valid_block_counts(L)
    counts = {max(n for n in valid if n <= 2**k) for k in range(L.bit_length()) if 2**k < L}
    counts.add(L)
    own = scenario.num_blocks()
    if own is not None:
        counts.add(own)
    return sorted(counts)


def balanced_sublayers(num_sublayers: int, num_chunks: int) -> list[int]:
    """L sublayers over C chunks, the L mod C extra sublayers in the middle chunks."""
    if num_chunks > num_sublayers:
        raise UserError(f"pipeline: P x V = {num_chunks} chunks exceed L = {num_sublayers} "
                        "sublayers; every chunk needs at least one sublayer; use fewer stages "
                        "or virtual stages")
    base, extra = divmod(num_sublayers, num_chunks)
    start = (num_chunks - extra) // 2
    return [base + (1 if start <= c < start + extra else 0) for c in range(num_chunks)]


def _placement_name(placement: str | dict[str, Any]) -> str:
    return placement if isinstance(placement, str) else "explicit"


def _layout_pipeline(scenario: Scenario, num_virtual_stages: int) -> dict[str, Any]:
    """Pipeline keys for V virtual stages: the scenario's own when V is unchanged."""
    p = scenario.pipeline
    if num_virtual_stages == p.num_virtual_stages:
        return {}
    if num_virtual_stages > 1:
        schedule = "interleaved-1f1b"
    else:
        schedule = "1f1b" if p.schedule == "interleaved-1f1b" else p.schedule
    L, C = scenario.model.num_sublayers, p.num_stages * num_virtual_stages
    counts = None if L % C == 0 or C > L else balanced_sublayers(L, C)
    return {"schedule": schedule, "num_virtual_stages": num_virtual_stages,
            "sublayers_per_chunk": counts}


def _residual(kind: str, num_blocks: int | None) -> dict[str, Any]:
    if kind == "block":
        return {"kind": "block", "num_blocks": num_blocks, "block_size": None}
    return {"kind": kind, "num_blocks": None, "block_size": None}


def _build(scenario: Scenario, kind: str, num_blocks: int | None, mode: str | None,
           num_virtual_stages: int, placement: str | dict[str, Any]) -> Scenario:
    """The candidate scenario, re-validated from scratch (raises ScenarioError)."""
    pipeline = _layout_pipeline(scenario, num_virtual_stages)
    if mode is not None:
        pipeline["comm_mode"] = mode
    data = scenario.model_dump()
    data["residual"] = _residual(kind, num_blocks)
    data["pipeline"] = {**data["pipeline"], **pipeline}
    data["placement"] = placement
    data["name"] = scenario.name
    return load_scenario(data)


def generate_candidates(
    scenario: Scenario, *, blocks: Sequence[int] | str | None = None,
    modes: Sequence[str] | None = None, virtual_stages: Sequence[int] | None = None,
    placements: Sequence[str] | None = None,
) -> tuple[list[Candidate], list[Skipped]]:
    """The reference baseline, per-layout baselines and every AttnRes candidate asked for.

    Args:
        blocks: N values, "all" (every valid N), or None (`default_block_counts`).
        modes: boundary modes (default: all three).
        virtual_stages: V values (default: the scenario's V).
        placements: placement policy names (default: the scenario's placement).

    Raises:
        UserError: an unknown mode, N < 1, or the reference baseline itself is invalid.
    """
    L = scenario.model.num_sublayers
    if blocks is None:
        block_list = default_block_counts(scenario)
    elif isinstance(blocks, str):
        if blocks != "all":
            raise UserError(f"blocks = {blocks!r}: give a list of block counts or 'all'")
        block_list = valid_block_counts(L)
    else:
        block_list = sorted(set(blocks))
        if any(n < 1 for n in block_list):
            raise UserError(f"blocks = {list(blocks)}: every block count N must be >= 1")
    mode_list = list(dict.fromkeys(modes)) if modes else list(ATTNRES_MODES)
    for mode in mode_list:
        if mode not in ATTNRES_MODES:
            raise UserError(f"modes: {mode!r} is not a boundary mode; use "
                            f"{', '.join(ATTNRES_MODES)}")
    own_v = scenario.pipeline.num_virtual_stages
    v_list = sorted(set(virtual_stages)) if virtual_stages else [own_v]
    if any(v < 1 for v in v_list):
        raise UserError(f"virtual_stages = {list(v_list)}: every V must be >= 1")
    own_placement = scenario.placement
    placement_list: list[str | dict[str, Any]] = (
        list(dict.fromkeys(placements)) if placements else [own_placement])

    candidates: list[Candidate] = []
    skipped: list[Skipped] = []
    seen: set[tuple[Any, ...]] = set()

    def add(kind: str, n: int | None, mode: str | None, v: int,
            placement: str | dict[str, Any]) -> None:
        name = _placement_name(placement)
        key = (kind, n, mode, v, name if isinstance(placement, str) else repr(placement))
        if key in seen:
            return
        seen.add(key)
        probe = Candidate(-1, kind, n, mode, v, name, scenario)
        try:
            built = _build(scenario, kind, n, mode, v, placement)
        except UserError as exc:
            if not candidates:
                raise UserError(f"the standard-residual baseline of the scenario is invalid: "
                                f"{exc}") from None
            skipped.append(Skipped(probe.label, str(exc)))
            return
        candidates.append(Candidate(len(candidates), kind, n, mode, v, name, built))

    add("standard", None, None, own_v, own_placement)
    for v in v_list:
        for placement in placement_list:
            add("standard", None, None, v, placement)
            for n in block_list:
                kind = "full" if n == L else "block"
                for mode in mode_list:
                    if n > L:
                        label = Candidate(-1, "block", n, mode, v, _placement_name(placement),
                                          scenario).label
                        skipped.append(Skipped(label, f"N = {n} exceeds L = {L} sublayers; "
                                                      f"N = L = {L} is Full AttnRes"))
                        continue
                    add(kind, n if kind == "block" else L, mode, v, placement)
    return candidates, skipped
