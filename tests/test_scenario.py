"""Scenario loading: valid files load, and every user mistake gets its one clear message."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from simulator.errors import ScenarioError
from simulator.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]

BASE = {
    "name": "t",
    "model": {"num_layers": 4, "hidden_size": 64, "num_heads": 4, "ffn_hidden_size": 128,
              "vocab_size": 100, "seq_len": 16},
    "residual": {"kind": "block", "num_blocks": 4},
    "pipeline": {"schedule": "1f1b", "num_stages": 2, "num_microbatches": 4},
}


def _with(path: str, value):
    data = copy.deepcopy(BASE)
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return data


_DELETE = object()


@pytest.mark.parametrize("path", sorted((ROOT / "scenarios").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_scenarios_load(path):
    scenario = load_scenario(path)
    assert scenario.name == path.stem


def test_derived_quantities():
    s = load_scenario(BASE)
    assert s.model.num_sublayers == 8
    assert (s.block_size(), s.num_blocks()) == (2, 4)
    assert s.plane_bytes() == 16 * 64 * 2
    assert s.chunk_sublayer_counts() == [4, 4]


def test_full_is_block_size_one():
    s = load_scenario(_with("residual", {"kind": "full"}))
    assert (s.block_size(), s.num_blocks()) == (1, 8)


def test_uneven_last_block_from_block_size():
    s = load_scenario(_with("residual", {"kind": "block", "block_size": 3}))
    assert (s.block_size(), s.num_blocks()) == (3, 3)  # blocks of 3, 3 and 2 sublayers


def test_sequence_parallel_shards_plane():
    data = _with("parallelism", {"tensor_parallel": 2, "sequence_parallel": True})
    assert load_scenario(data).plane_bytes() == 16 * 64 * 2 // 2


ERRORS = [
    ("unknown key with did-you-mean", _with("pipeline.num_stage", 2),
     "pipeline.num_stage: unknown key; did you mean 'num_stages'?"),
    ("unknown top-level key", _with("modle", {}), "modle: unknown key; did you mean 'model'?"),
    ("missing required key", _with("model.hidden_size", _DELETE),
     "model.hidden_size: required key is missing"),
    ("bad enum", _with("residual.kind", "blocks"), "residual.kind = 'blocks': Input should be"),
    ("negative", _with("model.num_layers", 0), "model.num_layers = 0: Input should be greater"),
    ("L not splittable over P x V", _with("pipeline.num_stages", 3),
     r"pipeline.num_stages = 3: L = 8 sublayers do not split evenly over P x V = 3 chunks; "
     r"use P x V dividing 8, or give pipeline.sublayers_per_chunk explicitly, e.g. \[3, 3, 2\]"),
    ("more chunks than sublayers", _with("pipeline.num_stages", 16),
     "cannot be split over P x V = 16 x 1 = 16 chunks; every chunk needs at least one sublayer"),
    ("map of wrong length", _with("pipeline.sublayers_per_chunk", [4, 2, 2]),
     "pipeline.sublayers_per_chunk = \\[4, 2, 2\\]: needs one entry per chunk, P x V = 2"),
    ("map of wrong sum", _with("pipeline.sublayers_per_chunk", [4, 3]),
     "entries sum to 7 but the model has L = 8 sublayers; make them sum to 8"),
    ("block without N or S", _with("residual", {"kind": "block"}),
     "block AttnRes needs residual.num_blocks \\(N\\) or residual.block_size \\(S\\)"),
    ("both N and S", _with("residual", {"kind": "block", "num_blocks": 2, "block_size": 4}),
     "give num_blocks or block_size, not both"),
    ("N for standard", _with("residual", {"kind": "standard", "num_blocks": 2}),
     "residual.num_blocks = 2: only applies to residual.kind 'block', not 'standard'"),
    ("N too large", _with("residual.num_blocks", 9),
     "residual.num_blocks = 9: exceeds L = 8 sublayers"),
    ("N impossible", _with("model.num_layers", 5) | {"residual": {"kind": "block", "num_blocks": 6}},
     "cannot form exactly 6 blocks"),
    ("heads do not divide d", _with("model.num_heads", 5),
     "model.num_heads = 5: must divide model.hidden_size \\(64\\)"),
    ("TP does not divide heads", _with("parallelism", {"tensor_parallel": 3}),
     "parallelism.tensor_parallel = 3: must divide model.num_heads \\(4\\)"),
    ("SP without TP", _with("parallelism", {"sequence_parallel": True}),
     "parallelism.sequence_parallel = True: has no effect with tensor_parallel = 1"),
    ("V > 1 without interleaving", _with("pipeline.num_virtual_stages", 2),
     "pipeline: .*1f1b"),
    ("unknown schedule", _with("pipeline.schedule", "zb-h1"), "pipeline.schedule = 'zb-h1'"),
]


@pytest.mark.parametrize("label,data,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_user_errors(label, data, message):
    with pytest.raises(ScenarioError, match=message):
        load_scenario(data)


def test_interleaved_microbatch_rule():
    data = _with("pipeline", {"schedule": "interleaved-1f1b", "num_stages": 2,
                              "num_virtual_stages": 2, "num_microbatches": 5})
    with pytest.raises(ScenarioError, match=r"pipeline: .*num_microbatches|pipeline: .*M"):
        load_scenario(data)


def test_bad_yaml_names_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match=re.escape(str(bad)) + ": not valid YAML"):
        load_scenario(bad)


def test_top_level_not_mapping(tmp_path):
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ScenarioError, match="the top level must be a mapping"):
        load_scenario(bad)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="scenario file not found"):
        load_scenario("no/such/file.yaml")


def test_scenarios_readme_key_table_is_current():
    from simulator.scenario_docs import scenario_keys_markdown

    text = (ROOT / "scenarios" / "README.md").read_text()
    table = text.split("<!-- keys:start -->\n", 1)[1].split("<!-- keys:end -->", 1)[0]
    assert table == scenario_keys_markdown()


def test_scenarios_readme_lists_every_scenario():
    text = (ROOT / "scenarios" / "README.md").read_text()
    missing = [p.name for p in (ROOT / "scenarios").glob("*.yaml") if f"`{p.name}`" not in text]
    assert missing == []
