"""`pipesim topology show|list` through click's test runner."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from simulator.cli.main import main
from simulator.cli.topology_cmd import topology_group


def run(*args: str):
    result = CliRunner().invoke(topology_group, list(args), catch_exceptions=True)
    return result


def test_list_presets():
    result = run("list")
    assert result.exit_code == 0
    assert "h100-superpod" in result.output and "host-loopback" in result.output


def test_show_summary_and_placement(tmp_path):
    png, out = tmp_path / "fig" / "two.png", tmp_path / "two.json"
    result = run("show", "two-rack-h100", "--placement", "spread-racks", "--dp", "2", "--pp", "4",
                 "--tp", "8", "--virtual-stages", "2", "--png", str(png), "--json", str(out))
    assert result.exit_code == 0, result.output
    text = result.output
    assert "64 / 8 / 2" in text and "800.00 GB/s per direction" in text and "2:1" in text
    assert "3 -> 0 (wrap)" in text and "cross-rack" in text and "nic, leaf, spine" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(out.read_text())
    assert data["summary"]["bisection_bytes_per_s"] == 800e9
    assert [b["scope"] for b in data["boundaries"]] == ["cross-rack"] * 4
    assert data["placement"]["ranks"]["0,1,0"] == "n4/gpu0"


def test_dp_pp_tp_alone_mean_packed():
    result = run("show", "dgx-h100", "--pp", "2", "--tp", "4")
    assert result.exit_code == 0, result.output
    assert "placement packed: dp=1 pp=2 tp=4 V=1" in result.output
    assert "intra-node" in result.output and "nvswitch" in result.output


def test_explicit_placement_file_and_custom_topology(tmp_path):
    topo = tmp_path / "pair.yaml"
    topo.write_text(
        "nodes: [{id: a, kind: gpu}, {id: b, kind: gpu}, {id: s, kind: leaf}]\n"
        "link_defaults: {bandwidth_bytes_per_s: 1.0e+9, latency_s: 1.0e-6, link_kind: network}\n"
        "links: [{src: a, dst: s}, {src: b, dst: s}]\n")
    ranks = tmp_path / "ranks.yaml"
    ranks.write_text('"0,0,0": b\n"0,1,0": a\n')
    result = run("show", str(topo), "--placement", str(ranks), "--pp", "2")
    assert result.exit_code == 0, result.output
    assert "placement explicit" in result.output and "1.00 GB/s" in result.output
    assert "max-flow" in result.output  # custom graph: bisection by max-flow


@pytest.mark.parametrize(("args", "message"), [
    (["topology", "show", "nope"], "error: topology 'nope': not a preset"),
    (["topology", "show", "dgx-h100", "--dp", "3", "--pp", "3"],
     "error: placement: dp*pp*tp = 3*3*1 = 9 ranks exceed the 8 GPUs"),
    (["topology", "show", "dgx-h100", "--placement", "missing.yaml"],
     "error: --placement 'missing.yaml': no such file"),
])
def test_user_errors_exit_2_with_one_line(capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
