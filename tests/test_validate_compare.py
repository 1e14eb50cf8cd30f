"""The comparison logic of `pipesim validate`, on synthetic runs built from a simulation.

A fake runner trace is written from a simulated step (every span, message and step time copied
into the trace schema), so validation of that trace against the same simulation must find
exact bytes and counts and zero errors; each test then perturbs one thing and checks that the
comparison sees exactly that.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from simulator.ingest.model import CommOp, assemble_run
from simulator.manifest import build_manifest
from simulator.memory import memory_model
from simulator.plan import build_plan, resolve_fabric
from simulator.hardware import load_hardware
from simulator.scenario import load_scenario
from simulator.schedule_ir import Action
from simulator.trace_schema import (
    SCHEMA_VERSION, ComputeRecord, HeaderRecord, P2PRecord, RunManifest, StepRecord,
    TraceWriter, rank_trace_name, write_manifest,
)
from simulator.engine import simulate_plan
from simulator.validate import ValidationError, validate_run
from simulator.validate_compare import compare_generic_pairs, error_pct

SCENARIO = {
    "name": "synthetic",
    "model": {"num_layers": 4, "hidden_size": 64, "num_heads": 4, "ffn_hidden_size": 256,
              "vocab_size": 128, "seq_len": 32, "dtype": "fp32"},
    "residual": {"kind": "block", "block_size": 3},
    "pipeline": {"schedule": "interleaved-1f1b", "num_stages": 2, "num_virtual_stages": 2,
                 "num_microbatches": 4, "comm_mode": "cached"},
    "hardware": "h100",
    "topology": {"builder": "host_loopback", "num_processes": 2,
                 "loopback_bytes_per_s": 5e8, "loopback_latency_s": 1e-4},
    "run": {"num_steps": 2, "num_warmup_steps": 1},
}


def _simulate(scenario, protocol="eager"):
    hw = load_hardware(scenario.hardware)
    plan = build_plan(scenario, hw, resolve_fabric(scenario))
    return simulate_plan(dataclasses.replace(plan, p2p_protocol=protocol))


def write_fake_run(run_dir: Path, scenario, result, *, time_scale: float = 1.0,
                   tamper_bytes: bool = False, drop_compute: bool = False) -> None:
    """A runner trace whose every record is copied from `result` (one step, repeated)."""
    manifest = build_manifest(scenario)
    run = scenario.run
    num_steps = run.num_warmup_steps + run.num_steps
    peaks = [r.peak_activation_bytes for r in memory_model(scenario).ranks]
    step_s = result.step_time_s * time_scale
    writers = {}
    run_dir.mkdir(parents=True, exist_ok=True)
    for rank in range(scenario.pipeline.num_stages):
        header = HeaderRecord(schema_version=SCHEMA_VERSION, rank=rank, world_size=2,
                              backend="gloo", device="cpu", hostname="fake", pid=1,
                              time_origin_unix_s=1000.0, scenario_name=scenario.name)
        writers[rank] = TraceWriter(run_dir / rank_trace_name(rank), header)
    tampered = False
    for step in range(num_steps):
        t0 = step * 2 * step_s
        for span in result.spans:
            if drop_compute and step == num_steps - 1 and span is result.spans[0]:
                continue
            action = f"{span.chunk_index}{span.kind}{span.microbatch_index}"
            writers[span.pp_index].write(ComputeRecord(
                step=step, action=action, kind=span.kind, chunk=span.chunk_index,
                microbatch=span.microbatch_index, start_s=t0 + span.start_s * time_scale,
                end_s=t0 + span.end_s * time_scale))
        for tr in result.transfers:
            send = Action.from_str(tr.label)
            direction = "forward" if "SEND_F" in tr.label else "backward"
            src_chunk = send.stage_index
            dst_chunk = src_chunk + (1 if direction == "forward" else -1)
            hop = manifest.transition(direction, src_chunk)
            names = list(hop.names(manifest.comm_mode))
            sizes = [manifest.plane_bytes] * len(names)
            if tamper_bytes and not tampered and step == num_steps - 1:
                sizes[0] += 4
                tampered = True
            common = dict(step=step, direction=direction, src_rank=tr.src_pp, dst_rank=tr.dst_pp,
                          src_chunk=src_chunk, dst_chunk=dst_chunk,
                          microbatch=send.microbatch_index, tensor_names=names,
                          tensor_bytes=sizes, total_bytes=sum(sizes), header_bytes=72)
            writers[tr.src_pp].write(P2PRecord(
                action=tr.label, op="send", peer=tr.dst_pp, start_s=t0 + tr.posted_s * time_scale,
                end_s=t0 + tr.delivered_s * time_scale, **common))
            writers[tr.dst_pp].write(P2PRecord(
                action=str(send.partner()), op="recv", peer=tr.src_pp,
                start_s=t0 + tr.posted_s * time_scale, end_s=t0 + tr.received_s * time_scale,
                **common))
        for rank, writer in writers.items():
            writer.write(StepRecord(step=step, warmup=step < run.num_warmup_steps, start_s=t0,
                                    end_s=t0 + step_s, duration_s=step_s, loss=None,
                                    peak_saved_bytes=peaks[rank], peak_saved_bytes_by_chunk={},
                                    device_max_allocated_bytes=None))
    for writer in writers.values():
        writer.close(complete=True, status="ok")
    write_manifest(run_dir, RunManifest(
        schema_version=SCHEMA_VERSION, complete=True, scenario_name=scenario.name,
        scenario=scenario.model_dump(mode="json"), world_size=2, backend="gloo", device="cpu",
        versions={}, num_steps=run.num_steps, num_warmup_steps=run.num_warmup_steps,
        started_unix_s=1000.0, finished_unix_s=1001.0, options={}, failure=None,
        trace_files=[rank_trace_name(r) for r in range(2)]))


@pytest.fixture(scope="module")
def scenario():
    return load_scenario(SCENARIO)


@pytest.fixture(scope="module")
def result(scenario):
    return _simulate(scenario)


def test_a_copy_of_the_simulation_validates_exactly(tmp_path, scenario, result):
    write_fake_run(tmp_path, scenario, result)
    report = validate_run(scenario, tmp_path, protocol="eager")
    assert report.bytes_exact and report.counts_exact
    assert report.step_time_error_pct == pytest.approx(0.0, abs=1e-9)
    # the run's own compute medians are the simulated ones: the same step again
    assert report.step.with_run_compute_error_pct == pytest.approx(0.0, abs=1e-6)
    assert all(d.error_pct == pytest.approx(0.0, abs=1e-6) for d in report.durations)
    kinds = {d.what.split()[0] for d in report.durations}
    assert kinds == {"forward", "backward", "transfer"}
    assert len(report.transitions) == 2 * (scenario.num_chunks - 1)
    assert all(m.analytic_error_pct == 0.0 and m.calibrated_bytes is None for m in report.memory)
    pair_header = {(p.src_rank, p.dst_rank): p.header_bytes_per_step for p in report.pairs}
    sends_per_step = {pair: 0 for pair in pair_header}
    for tr in result.transfers:
        sends_per_step[(tr.src_pp, tr.dst_pp)] += 1
    assert pair_header == {pair: 72 * n for pair, n in sends_per_step.items()}


def test_one_changed_message_breaks_bytes_exactness(tmp_path, scenario, result):
    write_fake_run(tmp_path, scenario, result, tamper_bytes=True)
    report = validate_run(scenario, tmp_path, protocol="eager")
    assert not report.bytes_exact and report.counts_exact
    assert sum(t.num_mismatched for t in report.transitions) == 1
    assert sum(not p.exact for p in report.pairs) == 1


def test_a_missing_operation_breaks_counts(tmp_path, scenario, result):
    write_fake_run(tmp_path, scenario, result, drop_compute=True)
    report = validate_run(scenario, tmp_path, protocol="eager")
    assert not report.counts_exact
    bad = [c for c in report.counts if not c.exact]
    assert len(bad) == 1 and bad[0].measured == [bad[0].simulated - 1, bad[0].simulated]


def test_slower_measurement_gives_the_step_error(tmp_path, scenario, result):
    write_fake_run(tmp_path, scenario, result, time_scale=1.25)
    report = validate_run(scenario, tmp_path, protocol="eager")
    assert report.step_time_error_pct == pytest.approx(100 * (1 / 1.25 - 1))
    assert all(d.error_pct == pytest.approx(-20.0) for d in report.durations)
    # with the run's 1.25x compute the simulated step grows; only the links stay fast
    assert report.step.simulated_s < report.step.with_run_compute_s < report.step.measured_s
    assert report.to_json()["step"]["with_run_compute_error_pct"] < 0


def test_rendezvous_makes_late_receivers_pay_the_transfer(scenario, result):
    rendezvous = _simulate(scenario, "rendezvous")
    assert rendezvous.step_time_s > result.step_time_s
    by_label = {t.label: t for t in result.transfers}
    for t in rendezvous.transfers:  # a message never arrives sooner than its transfer allows
        eager = by_label[t.label]
        assert t.delivered_s - t.posted_s >= eager.delivered_s - eager.posted_s - 1e-12
    assert [t.bytes_per_gpu for t in rendezvous.transfers] == \
        [t.bytes_per_gpu for t in result.transfers]


def test_a_trace_of_another_scenario_is_refused(tmp_path, scenario, result):
    write_fake_run(tmp_path, scenario, result)
    other = load_scenario({**SCENARIO, "pipeline": {**SCENARIO["pipeline"],
                                                    "num_microbatches": 6}})
    with pytest.raises(ValidationError, match=r"pipeline\.num_microbatches = 4 but the "
                                              r"scenario says 6"):
        validate_run(other, tmp_path)


def test_no_hardware_and_no_calibration_is_refused(tmp_path, scenario, result):
    write_fake_run(tmp_path, scenario, result)
    bare = load_scenario({k: v for k, v in SCENARIO.items() if k != "hardware"})
    with pytest.raises(ValidationError, match="pass --calibration DIR"):
        validate_run(bare, tmp_path)


def test_error_pct():
    assert error_pct(110.0, 100.0) == pytest.approx(10.0)
    assert error_pct(0.0, 0.0) is None


def test_generic_traces_compare_per_pair_as_multisets(scenario, result):
    ops, order = [], {0: 0, 1: 0}

    def add(rank, op, peer, num_bytes):
        ops.append(CommOp(rank=rank, op=op, num_bytes=num_bytes, order_index=order[rank],
                          peer_rank=peer))
        order[rank] += 1

    for _ in range(2):  # two steps
        for tr in result.transfers:
            add(tr.src_pp, "send", tr.dst_pp, tr.bytes_per_gpu)
            add(tr.dst_pp, "recv", tr.src_pp, tr.bytes_per_gpu)
    pairs, counts, notes = compare_generic_pairs(result, assemble_run("nccl_log", 2, ops))
    assert all(p.exact and p.num_steps == 2 for p in pairs)
    assert all(c.exact for c in counts)
    assert "read as 2 steps" in notes[0]
    first = ops[0]
    ops[0] = dataclasses.replace(first, num_bytes=first.num_bytes + 2)
    pairs, _, _ = compare_generic_pairs(result, assemble_run("nccl_log", 2, ops))
    assert sum(not p.exact for p in pairs) == 1


def test_generic_messages_split_into_batched_ops_count_once(scenario, result):
    ops, order, batch = [], {0: 0, 1: 0}, 0
    for tr in result.transfers:  # each message sent as two halves in one batch
        for rank, op, peer in ((tr.src_pp, "send", tr.dst_pp), (tr.dst_pp, "recv", tr.src_pp)):
            for half in (tr.bytes_per_gpu // 2, tr.bytes_per_gpu - tr.bytes_per_gpu // 2):
                ops.append(CommOp(rank=rank, op=op, num_bytes=half, order_index=order[rank],
                                  peer_rank=peer, batch_index=batch))
                order[rank] += 1
        batch += 1
    pairs, counts, _ = compare_generic_pairs(result, assemble_run("nccl_log", 2, ops))
    assert all(p.exact and p.num_steps == 1 for p in pairs)
    assert all(c.exact for c in counts)
