"""The shaped-namespace harness: a tc-tbf-shaped loopback makes local runs communication-bound.

Skips, with the reason, where namespaces or tc are not available (no root, no iproute2).
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from real_runner.netns import (
    LinkShape, NetnsError, run_shaped_validation, shaped_namespace, unavailable_reason,
)

REASON = unavailable_reason()
needs_netns = pytest.mark.skipif(REASON is not None, reason=f"shaped namespaces: {REASON}")


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_a_bucket_smaller_than_a_packet_is_refused():
    with pytest.raises(ValueError, match="burst_bytes = 1500: must exceed one packet"):
        LinkShape(burst_bytes=1500)
    with pytest.raises(ValueError, match="rate_bits_per_s = 0: must be positive"):
        LinkShape(rate_bits_per_s=0)


def test_the_tc_command_carries_the_shape():
    args = LinkShape(rate_bits_per_s=100e6, burst_bytes=20000, queue_latency_s=0.5).tc_args()
    assert args[-6:] == ["rate", "100000000bit", "burst", "20000", "latency", "500ms"]


@needs_netns
def test_the_namespace_is_removed_even_when_the_body_fails():
    with pytest.raises(RuntimeError, match="boom"):
        with shaped_namespace(LinkShape(), name="pipesim-test-cleanup") as ns:
            assert "pipesim-test-cleanup" in _namespaces()
            qdisc = ns.run(["tc", "qdisc", "show", "dev", "lo"]).stdout
            assert "tbf" in qdisc and "rate 200Mbit" in qdisc
            raise RuntimeError("boom")
    assert "pipesim-test-cleanup" not in _namespaces()


@needs_netns
def test_a_failing_command_inside_quotes_its_output():
    with shaped_namespace(LinkShape()) as ns:
        with pytest.raises(NetnsError, match="status 3"):
            ns.run(["sh", "-c", "echo nope; exit 3"])


MODEL = {"num_layers": 2, "hidden_size": 128, "num_heads": 4, "ffn_hidden_size": 128,
         "vocab_size": 64, "seq_len": 64, "dtype": "fp32"}
PIPELINE = {"schedule": "interleaved-1f1b", "num_stages": 2, "num_virtual_stages": 2,
            "num_microbatches": 4}
CASES = {"standard": ({"kind": "standard"}, "naive"),
         "block_naive": ({"kind": "block", "block_size": 1}, "naive"),
         "block_cached": ({"kind": "block", "block_size": 1}, "cached")}


@pytest.mark.slow
@needs_netns
def test_shaped_link_validates_standard_naive_and_cached(tmp_path):
    paths = []
    for name, (residual, mode) in CASES.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({
            "name": name, "model": MODEL, "residual": residual,
            "pipeline": {**PIPELINE, "comm_mode": mode},
            "run": {"num_steps": 2, "num_warmup_steps": 1}}))
        paths.append(path)
    shape = LinkShape(rate_bits_per_s=100e6)
    reports = run_shaped_validation(paths, tmp_path / "out", shape, calibrate_args=[
        "--sizes", "4096,1048576", "--repeats", "3", "--max-seconds-per-point", "0.3"])
    link = [line for line in (tmp_path / "out" / "calibration" / "topology.yaml")
            .read_text().splitlines() if line.startswith("loopback_bytes_per_s")]
    measured_rate = float(link[0].split(":")[1])
    assert 0.7 * shape.bytes_per_s < measured_rate < 1.1 * shape.bytes_per_s
    assert all(r.bytes_exact and r.counts_exact for r in reports)
    by_name = {r.scenario_name: r for r in reports}
    sent = {n: sum(p.simulated_bytes_per_step for p in r.pairs) for n, r in by_name.items()}
    assert sent["block_naive"] > sent["block_cached"] > sent["standard"]
    measured = {n: r.step.measured_s for n, r in by_name.items()}
    simulated = {n: r.step.simulated_s for n, r in by_name.items()}
    # communication-bound: more bytes, longer steps, in the run and in the simulation alike
    assert measured["block_naive"] > measured["block_cached"] > measured["standard"]
    assert simulated["block_naive"] > simulated["block_cached"] > simulated["standard"]
