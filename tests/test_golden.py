"""Every shipped scenario reproduces its golden summary (regenerate: python -m simulator.golden --write)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulator.golden import golden_path, golden_summary
from simulator.scenario import load_scenario

SCENARIOS = sorted((Path(__file__).resolve().parents[1] / "scenarios").glob("*.yaml"))


def test_every_scenario_has_a_golden_summary():
    missing = [p.name for p in SCENARIOS if not golden_path(p).is_file()]
    assert missing == []


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_golden_summary(path):
    expected = json.loads(golden_path(path).read_text())
    actual = json.loads(json.dumps(golden_summary(load_scenario(path)), sort_keys=True))
    assert actual == expected
