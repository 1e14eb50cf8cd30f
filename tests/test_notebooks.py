"""The notebooks in notebooks/ run top to bottom and show their results; git holds them clean.

Why: the notebooks are a newcomer's path through the project (notebooks/README.md), and a
notebook that no longer runs against the current API is worse than none. Each one is executed
with nbclient in a fresh kernel with a per-cell timeout, and its printed key result is checked
against an independent computation or a property it must have. The quickstart runs with the
repository root as working directory and the others from notebooks/ (a Jupyter kernel starts
in the notebook's folder), so both ways of finding the scenarios stay tested. The measurement
notebook writes its runs into a temporary directory through PIPESIM_NOTEBOOK_RUNS.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from simulator.plan import simulate
from simulator.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = ("01_quickstart.ipynb", "02_planning_block_sizes.ipynb",
             "03_simulator_vs_measurement.ipynb")
CELL_TIMEOUT_S = 300
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _execute(name: str, cwd: Path, env: dict[str, str] | None = None) -> nbformat.NotebookNode:
    """Run a notebook in a fresh python3 kernel; a failing cell raises CellExecutionError."""
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    client.execute(env={**os.environ, **(env or {})})
    return nb


def _text(nb: nbformat.NotebookNode) -> str:
    """Everything the notebook printed or displayed as text, ANSI colours removed."""
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif "data" in out and "text/plain" in out.data:
                parts.append(out.data["text/plain"])
    return _ANSI.sub("", "\n".join(parts))


def _num_images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells
               for out in cell.get("outputs", []))


def test_the_readme_lists_every_notebook():
    shipped = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
    assert shipped == sorted(NOTEBOOKS)
    readme = (NOTEBOOK_DIR / "README.md").read_text()
    assert [name for name in NOTEBOOKS if f"`{name}`" not in readme] == []


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_valid_and_has_no_outputs(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             and (cell.outputs or cell.execution_count is not None)]
    assert dirty == [], f"{name}: clear the outputs of cells {dirty} (notebooks/README.md)"
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_quickstart_simulates_the_48b_scenario_and_draws_its_figures():
    nb = _execute("01_quickstart.ipynb", cwd=ROOT)
    text = _text(nb)
    # The paper's Fig. 3: completed blocks per forward transition in each mode.
    assert "naive: [1, 2, 2, 3, 3, 4, 4]" in text
    assert "cached: [1, 2, 2, 2, 2, 2, 2]" in text
    printed = float(re.search(r"step time (\d+\.\d+) s", text).group(1))
    expected = simulate(load_scenario(ROOT / "scenarios" / "paper_48b_block.yaml")).step_time_s
    assert printed == pytest.approx(expected, abs=5e-5)
    assert re.search(r"paper_48b_full\s+full\s+cached", text)
    assert _num_images(nb) == 4  # Gantt, zoomed Gantt, links, memory


def test_planning_notebook_recommends_within_every_budget():
    nb = _execute("02_planning_block_sizes.ipynb", cwd=NOTEBOOK_DIR)
    text = _text(nb)
    label = re.search(r"^recommendation: (.+)$", text, re.MULTILINE).group(1)
    assert label != "none" and f"│ {label} " in text  # a row of the printed plan table
    what_ifs = re.findall(r"^budget \+([\d.]+)%, memory (\d+)%: (.+) \(overhead ([+-][\d.]+)%, "
                          r"gain (\d+)%, memory (\d+)%\)$", text, re.MULTILINE)
    assert len(what_ifs) == 5
    for budget, limit, _, overhead, _, memory in what_ifs:
        assert float(overhead) <= float(budget) and int(memory) <= int(limit)
    gains = [int(gain) for budget, limit, _, _, gain, _ in what_ifs if limit == "90"]
    assert gains == sorted(gains) and gains[0] < gains[-1]  # a looser budget buys more gain
    assert _num_images(nb) == 3  # topology, Pareto, overhead against N


@pytest.mark.slow
def test_measurement_notebook_validates_a_real_run(tmp_path):
    nb = _execute("03_simulator_vs_measurement.ipynb", cwd=NOTEBOOK_DIR,
                  env={"PIPESIM_NOTEBOOK_RUNS": str(tmp_path)})
    text = _text(nb)
    assert "bytes exact: True" in text
    assert "operation counts exact: True" in text
    simulated_ms, measured_ms = map(float, re.search(
        r"step time: simulated ([\d.]+) ms, measured ([\d.]+) ms", text).groups())
    assert simulated_ms > 0 and measured_ms > 0
    assert (tmp_path / "calib" / "profile.yaml").is_file()
    assert (tmp_path / "measure" / "manifest.json").is_file()
    assert _num_images(nb) == 3  # both timelines, bytes per boundary, simulated step
