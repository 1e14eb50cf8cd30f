"""The block-size quality model reproduces the paper's ablation points and interpolates sanely."""

from __future__ import annotations

import pytest

from simulator.errors import UserError
from simulator.quality import DEFAULT_QUALITY, load_quality_model

# attnres-paper.md 5.3: normalised to Full AttnRes's gain of 1.766 - 1.737 = 0.029.
PAPER = {1: 0.009 / 0.029, 2: 0.013 / 0.029, 4: 0.018 / 0.029, 8: 0.020 / 0.029,
         16: 0.020 / 0.029, 32: 1.0}


@pytest.mark.parametrize("n", sorted(PAPER))
def test_ablation_points(n):
    assert DEFAULT_QUALITY.gain_fraction(n, 32) == pytest.approx(PAPER[n])


def test_interpolation_is_monotone_and_ends_at_full():
    fractions = [DEFAULT_QUALITY.gain_fraction(n, 54) for n in range(1, 55)]
    assert all(b >= a - 1e-12 for a, b in zip(fractions, fractions[1:]))
    assert fractions[-1] == 1.0
    assert DEFAULT_QUALITY.gain_fraction(6, 32) == pytest.approx((PAPER[4] + PAPER[8]) / 2,
                                                                 rel=0.05)


def test_compute_equivalent_of_full_matches_scaling_exponent():
    expected = (1.766 / 1.737) ** (1 / 0.057)
    assert DEFAULT_QUALITY.compute_equivalent(32, 32) == pytest.approx(expected)
    assert 1.0 < DEFAULT_QUALITY.compute_equivalent(1, 32) < expected


def test_override_from_yaml(tmp_path):
    f = tmp_path / "q.yaml"
    f.write_text("source: mine\nnum_sublayers: 8\nbaseline_loss: 2.0\nfull_loss: 1.9\n"
                 "points: [{num_blocks: 2, loss: 1.95}]\n")
    q = load_quality_model(f)
    assert q.gain_fraction(2, 8) == pytest.approx(0.5)


def test_bad_override(tmp_path):
    f = tmp_path / "q.yaml"
    f.write_text("source: x\nnum_sublayers: 8\nbaseline_loss: 1.0\nfull_loss: 1.9\npoints: []\n")
    with pytest.raises(UserError, match="full_loss \\(1.9\\) must be below baseline_loss"):
        load_quality_model(f)


def test_smaller_target_model_rises_to_full_at_its_own_l():
    # L = 12: the N = 16 point does not apply; N = 11 lies between N = 8 (69%) and N = 12 (100%).
    at_11 = DEFAULT_QUALITY.gain_fraction(11, 12)
    assert PAPER[8] < at_11 < 1.0
    assert DEFAULT_QUALITY.gain_fraction(12, 12) == 1.0
