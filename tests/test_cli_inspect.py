"""`pipesim inspect`: tables, JSON, and user errors as one message without a traceback."""

from __future__ import annotations

import json

import pytest

from simulator.cli.main import main


def _run(argv, capsys):
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_inspect_json_fig3(capsys):
    code, out, _ = _run(["inspect", "scenarios/fig3_toy.yaml", "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["totals"]["modes"]["naive"]["forward_blocks_per_transition"] == [
        1, 2, 2, 3, 3, 4, 4]
    assert report["totals"]["modes"]["cached"]["forward_blocks_per_transition"] == [
        1, 2, 2, 2, 2, 2, 2]
    hop = report["transitions"][3]
    assert (hop["direction"], hop["src_rank"], hop["dst_rank"]) == ("forward", 3, 0)
    assert [t["name"] for t in hop["tensors"]["cached"]] == ["b1", "b2"]
    assert len(report["memory"]) == 4
    assert all(r["peak_bytes"] > r["weights_bytes"] for r in report["memory"])


def test_inspect_tables(capsys):
    code, out, _ = _run(["inspect", "scenarios/paper_48b_block.yaml"], capsys)
    assert code == 0
    for text in ("Forward transitions", "Boundary traffic totals", "Memory per GPU",
                 "paper Eq. 7 naive 67.50 planes", "Eq. 8 cached 51.75 planes"):
        assert text in out


def test_inspect_user_error_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {num_layers: 2, hidden_size: 8, num_heads: 2, "
                   "ffn_hidden_size: 8, vocab_size: 8, seq_len: 4}\npipeline: {num_stagse: 2}\n")
    code, _, err = _run(["inspect", str(bad)], capsys)
    assert code == 2
    assert err.strip() == (f"error: {bad}: pipeline.num_stagse: unknown key; "
                           "did you mean 'num_stages'?")
    assert "Traceback" not in err


def test_inspect_missing_file(capsys):
    code, _, err = _run(["inspect", "nope.yaml"], capsys)
    assert code == 2 and "scenario file not found: nope.yaml" in err
