"""Expected quality gain of Block AttnRes with N blocks: the paper's block-size ablation.

The shipped default is the paper's Fig. 6 ablation on ONE 436M-parameter model (L = 32
sublayers; attnres-paper.md 5.3): validation loss 1.757 (N = 1), 1.753 (N = 2), 1.748 (N = 4),
1.746 (N = 8), 1.746 (N = 16), 1.737 (N = 32 = Full AttnRes), baseline 1.766. The gain of N
blocks is expressed as a fraction of Full AttnRes's gain, interpolated linearly in log2(N), and
N = L always counts as Full AttnRes. Between the largest measured N below L and L the fraction
rises linearly in log2(N) to 1. The compute-equivalent multiplier uses the paper's scaling-law
exponent (baseline fit L = 1.891 C^-0.057): the compute the baseline would need to reach the
same loss, (loss_baseline / loss_N)^(1 / 0.057).

Override any of it from YAML (`pipesim plan --quality FILE`) with the same keys.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from simulator.errors import UserError

__all__ = ["QualityPoint", "QualityModel", "DEFAULT_QUALITY", "load_quality_model"]


class QualityPoint(BaseModel):
    """One measured (N, validation loss) pair."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_blocks: int = Field(ge=1)
    loss: float = Field(gt=0)


class QualityModel(BaseModel):
    """Loss against number of blocks, normalised to Full AttnRes's gain."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    """Where the numbers come from; printed with every plan."""
    num_sublayers: int = Field(ge=1)
    """L of the model the points were measured on."""
    baseline_loss: float = Field(gt=0)
    full_loss: float = Field(gt=0)
    points: list[QualityPoint]
    scaling_exponent: float = Field(default=0.057, gt=0)
    """Exponent alpha of the baseline's fit loss = A C^-alpha (for compute equivalents)."""

    @model_validator(mode="after")
    def _check(self) -> QualityModel:
        if self.full_loss >= self.baseline_loss:
            raise ValueError(f"full_loss ({self.full_loss}) must be below baseline_loss "
                             f"({self.baseline_loss}): Full AttnRes is the reference gain")
        if not self.points:
            raise ValueError("points: give at least one (num_blocks, loss) pair")
        return self

    def gain_fraction(self, num_blocks: int, num_sublayers: int) -> float:
        """Fraction of Full AttnRes's loss gain that N blocks buy, for a model of L sublayers."""
        if num_blocks >= num_sublayers:
            return 1.0
        # Measured points strictly below Full AttnRes, as (log2 N, fraction).
        span = self.baseline_loss - self.full_loss
        known = sorted((math.log2(p.num_blocks), (self.baseline_loss - p.loss) / span)
                       for p in self.points if p.num_blocks < min(self.num_sublayers, num_sublayers))
        known.append((math.log2(num_sublayers), 1.0))
        x = math.log2(num_blocks)
        if x <= known[0][0]:
            return known[0][1]
        for (x0, y0), (x1, y1) in zip(known, known[1:]):
            if x <= x1:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        return 1.0

    def expected_loss(self, num_blocks: int, num_sublayers: int) -> float:
        """Loss at the ablation's scale for N blocks."""
        span = self.baseline_loss - self.full_loss
        return self.baseline_loss - span * self.gain_fraction(num_blocks, num_sublayers)

    def compute_equivalent(self, num_blocks: int, num_sublayers: int) -> float:
        """Baseline compute needed to match N blocks' loss, as a multiple of the actual compute."""
        loss = self.expected_loss(num_blocks, num_sublayers)
        return (self.baseline_loss / loss) ** (1 / self.scaling_exponent)


DEFAULT_QUALITY = QualityModel(
    source="Kimi Team, Attention Residuals (arXiv 2603.15031), Fig. 6 block-size ablation on one "
           "436M-parameter model (L = 32 sublayers); not measured at other scales",
    num_sublayers=32,
    baseline_loss=1.766,
    full_loss=1.737,
    points=[QualityPoint(num_blocks=n, loss=loss) for n, loss in
            ((1, 1.757), (2, 1.753), (4, 1.748), (8, 1.746), (16, 1.746))],
)


def load_quality_model(path: str | Path) -> QualityModel:
    """A quality model from YAML with the same keys as `QualityModel`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"quality model file not found: {path}")
    try:
        return QualityModel.model_validate(yaml.safe_load(path.read_text()))
    except (ValidationError, yaml.YAMLError) as exc:
        first = exc.errors()[0] if isinstance(exc, ValidationError) else None
        where = ".".join(map(str, first["loc"])) if first else ""
        why = first["msg"] if first else str(exc)
        raise UserError(f"{path}: {where or 'file'}: {why}") from None
