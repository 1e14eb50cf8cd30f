"""The dependency direction topologies <- simulator <- real_runner holds at import time."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import importlib, sys
for name in {modules!r}:
    importlib.import_module(name)
bad = sorted(m for m in {forbidden!r} if m in sys.modules)
print(",".join(bad))
"""


def _imported(modules: list[str], forbidden: list[str]) -> list[str]:
    code = PROBE.format(modules=modules, forbidden=forbidden)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_simulator_does_not_import_torch():
    assert _imported(["simulator"], ["torch"]) == []


@pytest.mark.parametrize("module", [
    "simulator.scenario", "simulator.manifest", "simulator.memory", "simulator.inspect_report",
    "simulator.schedule", "simulator.engine", "simulator.plan", "simulator.network",
    "simulator.costs", "simulator.hardware", "simulator.chrome_trace", "simulator.plots",
    "simulator.sim_trace", "simulator.planner", "simulator.plot_plan", "simulator.plot_topology",
    "simulator.ingest", "simulator.quality", "simulator.golden", "simulator.cli.main",
    "simulator.cli.run_cmd", "simulator.cli.inspect_cmd", "simulator.cli.plan_cmd",
    "simulator.cli.topology_cmd", "simulator.trace_schema", "simulator.cli.measure_cmd"])
def test_core_modules_import_neither_torch_nor_matplotlib(module):
    assert _imported([module], ["torch", "matplotlib"]) == []


def test_topologies_import_only_networkx():
    assert _imported(["topologies"], ["torch", "simpy", "matplotlib", "simulator"]) == []
