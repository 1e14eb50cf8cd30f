"""A real (short) calibration: two gloo processes measure the runner's model and the link."""

from __future__ import annotations

import pytest

from simulator.calibrate import CalibrationPlan
from simulator.calibrate_files import CALIBRATION_FILES, load_calibration
from simulator.hardware import load_hardware
from simulator.scenario import load_scenario

pytestmark = pytest.mark.slow

SCENARIO = {"name": "tiny", "model": {"num_layers": 2, "hidden_size": 64, "num_heads": 4,
                                      "ffn_hidden_size": 128, "vocab_size": 64, "seq_len": 16,
                                      "dtype": "fp32"},
            "residual": {"kind": "block", "block_size": 2},
            "pipeline": {"num_stages": 2, "num_microbatches": 2}}


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    from real_runner.calibration_launch import run_calibration

    out = tmp_path_factory.mktemp("calib")
    plan = CalibrationPlan.for_scenarios([load_scenario(SCENARIO)], 2,
                                         message_sizes_bytes=[1024, 16 << 20],
                                         num_repeats=5, num_warmup=1, max_seconds_per_point=0.2,
                                         min_compute_seconds=0.2, late_receive_rounds=4,
                                         traffic_rounds=3, busy_send_rounds=3)
    return run_calibration(plan, out), out


def test_every_file_is_written_and_reads_back(calibrated):
    calibration, out = calibrated
    assert all((out / name).is_file() for name in CALIBRATION_FILES)
    loaded = load_calibration(out)
    assert loaded.hardware == load_hardware("hardware.yaml", base_dir=out)
    assert loaded.profile == calibration.profile
    assert loaded.fits.keys() == {"0->1", "1->0"}


def test_profile_times_every_piece_and_aggregation(calibrated):
    profile = calibrated[0].profile
    assert sorted(s.kind for s in profile.sublayers) == ["attention", "embedding", "head", "mlp"]
    assert all(s.forward_s > 0 and s.backward_s > 0 for s in profile.sublayers)
    # N = 2 blocks: the final aggregation reads b0, b1, b2
    assert [a.num_sources for a in profile.aggregation] == [1, 2, 3]
    assert {(e.src_gpu, e.dst_gpu) for e in profile.p2p} == {("proc0", "proc1"),
                                                             ("proc1", "proc0")}
    assert all(e.bandwidth_bytes_per_s > 0 and e.latency_s >= 0 for e in profile.p2p)


def test_compute_pieces_take_turns_in_rounds(calibrated):
    """Every piece and aggregation point is sampled once per round, so all have as many
    samples, at least num_repeats."""
    counts = {p["num_samples"] for shape in
              calibrated[0].record["shapes"] for p in shape["pieces"]}
    assert len(counts) <= 2 and min(counts) >= 5  # one count per rank at most


def test_the_late_receive_probe_sets_the_overhead(calibrated):
    probes = calibrated[0].record["late_receive"]
    assert [(p["src_rank"], p["dst_rank"]) for p in probes] == [(0, 1)]
    probe = probes[0]
    assert probe["idle_s"] > 0 and probe["busy_s"] > 0 and probe["num_rounds"] == 4
    assert calibrated[0].profile.late_receive_overhead_s == \
        pytest.approx(max(0.0, probe["busy_s"] - probe["idle_s"]))


def test_saved_bytes_are_measured_per_piece(calibrated):
    shape = calibrated[0].activations.shapes[0]
    plane = 16 * 64 * 4
    assert shape.plane_bytes == plane
    # an attention sublayer keeps at least its QKV output (3 planes) and its norm output
    assert shape.attention.internal_bytes >= 4 * plane and shape.attention.input_saved
    assert shape.mlp_sublayer.internal_bytes > shape.attention.internal_bytes - plane
    assert shape.embedding.input_saved and shape.targets_saved
    assert shape.index_bytes_per_token == 8
    grows = [shape.aggregation_bytes(k) for k in (1, 2, 3)]
    assert grows == sorted(grows) and grows[0] > 0


def test_the_sweep_times_posted_receives_and_the_host_overheads(calibrated):
    """Each sweep comes from its sender: one send-call time per size and the in-place receive;
    the profile's overheads are their medians over the two directions."""
    import statistics

    sweeps = calibrated[0].record["p2p"]
    assert sorted((s["src_rank"], s["dst_rank"]) for s in sweeps) == [(0, 1), (1, 0)]
    for sweep in sweeps:
        assert len(sweep["send_call_s"]) == len(sweep["sizes_bytes"]) == 2
        assert all(t > 0 for t in sweep["send_call_s"] + sweep["one_way_s"])
        assert sweep["recv_in_place_s"] > 0
        assert sweep["one_way_s"][1] > sweep["one_way_s"][0]  # 16 MiB takes longer than 1 KiB
    profile = calibrated[0].profile
    assert profile.recv_overhead_s == pytest.approx(
        statistics.median([s["recv_in_place_s"] for s in sweeps]))


def test_the_sweep_times_send_calls_and_postings_per_tensor(calibrated):
    """Send calls and receive postings are timed for 1 and 8 tensors per message; the profile
    keeps the one-tensor posting and the slopes, medians over the two directions."""
    import statistics

    from simulator.calibrate import end_slope

    sweeps = calibrated[0].record["p2p"]
    for sweep in sweeps:
        assert sweep["tensor_counts"] == [1, 8]
        assert all(t > 0 for t in sweep["send_calls_by_count_s"] + sweep["post_calls_by_count_s"])
    profile = calibrated[0].profile
    assert profile.recv_post_s == pytest.approx(
        statistics.median([s["post_calls_by_count_s"][0] for s in sweeps]))
    assert profile.send_overhead_per_tensor_s == pytest.approx(statistics.median(
        [end_slope(s["tensor_counts"], s["send_calls_by_count_s"]) for s in sweeps]))
    assert profile.recv_post_per_tensor_s == pytest.approx(statistics.median(
        [end_slope(s["tensor_counts"], s["post_calls_by_count_s"]) for s in sweeps]))


def test_the_busy_probe_times_send_calls_while_both_ranks_compute(calibrated):
    """Each sender times its send call at 1 KiB and 1 MiB with both ranks computing; the
    profile's send cost is the fixed part and the per-byte slope, medians over directions."""
    import statistics

    from simulator.calibrate import P2PSweep

    sweeps = [P2PSweep(**s) for s in calibrated[0].record["p2p"]]
    for sweep in sweeps:
        assert sweep.busy_sizes_bytes == [1024, 1 << 20]
        assert all(t > 0 for t in sweep.busy_send_call_s)
        assert sweep.busy_send_overhead_s is not None
    profile = calibrated[0].profile
    assert profile.send_s_per_byte == pytest.approx(
        statistics.median([s.busy_send_s_per_byte for s in sweeps]))
    assert profile.send_overhead_s == pytest.approx(
        statistics.median([s.busy_send_overhead_s for s in sweeps]))


def test_the_traffic_probe_times_both_ends_idle_and_loaded(calibrated):
    """Rank 0 (sender) and rank 1 (receiver) each report their window idle and loaded, their
    communication threads' CPU in each and the bytes the link moved meanwhile; on CPU the
    profile's per-byte costs are the larger of the slowdown and the threads' CPU per byte. The
    messages' tensors are the scenario's activation planes (16 x 64 fp32: 4 KiB)."""
    from simulator.calibrate import TrafficLoadProbe

    probes = [TrafficLoadProbe(**p) for p in calibrated[0].record["traffic_load"]]
    assert sorted(p.role for p in probes) == ["recv", "send"]
    for probe in probes:
        assert probe.num_rounds == 3 and probe.calls >= 4
        assert probe.idle_s > 0 and probe.loaded_s > 0 and probe.bytes_moved > 0
        assert probe.tensor_bytes == 16 * 64 * 4  # one activation plane per tensor
        assert probe.loaded_helper_cpu_s > 0  # gloo's threads moved the stream
    profile = calibrated[0].profile
    by_role = {p.role: max(p.cpu_s_per_byte, p.helper_cpu_s_per_byte) for p in probes}
    assert profile.send_cpu_s_per_byte == pytest.approx(by_role["send"])
    assert profile.recv_cpu_s_per_byte == pytest.approx(by_role["recv"])


def test_the_executor_probe_times_the_runners_work_after_each_compute(calibrated):
    """The tiny model at P = 2 has chunks of 2 sublayers: one probe, a one-stage run of one
    layer; each measured step of 8 micro-batches gives 8 gaps after forwards and 7 after
    backwards (the warm-up step none)."""
    from simulator.calibrate_executor import PROBE_MICROBATCHES, PROBE_STEPS

    calibration, out = calibrated
    [entry] = calibration.profile.executor_overhead
    assert (entry.residual_kind, entry.num_sublayers) == ("block", 2)
    assert entry.num_samples == PROBE_STEPS * (2 * PROBE_MICROBATCHES - 1)
    assert 0 < entry.after_forward_s < 0.05 and 0 < entry.after_backward_s < 0.05
    assert (out / "executor-probes" / "executor_probe_block_2" / "rank-0.jsonl").is_file()
    assert calibration.record["executor_overhead"] == [entry.model_dump(mode="json")]


def _slower_copy(src, dst, factor: float):
    """A copy of a calibration directory whose compute pieces and the runner's work after
    each compute took `factor` times as long."""
    import json
    import shutil

    shutil.copytree(src, dst)
    for raw in dst.glob("raw-rank-*.json"):
        data = json.loads(raw.read_text())
        for shape in data["shapes"]:
            for piece in shape["pieces"] + shape["aggregation"]:
                piece["forward_s"] *= factor
                piece["backward_s"] *= factor
        raw.write_text(json.dumps(data))
    raw = dst / "raw-executor.json"
    data = json.loads(raw.read_text())
    for probe in data["probes"]:
        probe["after_forward_s"] *= factor
        probe["after_backward_s"] *= factor
    raw.write_text(json.dumps(data))
    return dst


def test_averaging_brackets_two_calibrations(calibrated, tmp_path):
    """A calibration averaged with a copy whose compute took twice as long has 1.5 times the
    compute and the same link; the result is a calibration directory that averages again."""
    from simulator.calibrate_average import average_calibrations

    original = calibrated[0].profile
    slower = _slower_copy(calibrated[1], tmp_path / "slower", 2.0)
    averaged = average_calibrations([calibrated[1], slower], tmp_path / "avg")
    for before, after in zip(original.sublayers, averaged.profile.sublayers):
        assert after.forward_s == pytest.approx(1.5 * before.forward_s)
        assert after.backward_s == pytest.approx(1.5 * before.backward_s)
    assert averaged.profile.p2p == original.p2p
    [before], [after] = original.executor_overhead, averaged.profile.executor_overhead
    assert after.after_forward_s == pytest.approx(1.5 * before.after_forward_s)
    assert after.after_backward_s == pytest.approx(1.5 * before.after_backward_s)
    assert averaged.record["averaged_from"] == [str(calibrated[1]), str(slower)]
    assert load_calibration(tmp_path / "avg").profile == averaged.profile
    again = average_calibrations([tmp_path / "avg", calibrated[1]])
    assert again.profile.sublayers[0].forward_s == pytest.approx(
        1.25 * original.sublayers[0].forward_s)


def test_averaging_refuses_what_it_cannot_average(calibrated, tmp_path):
    import json
    import shutil

    from simulator.calibrate import CalibrationError
    from simulator.calibrate_average import average_calibrations

    with pytest.raises(CalibrationError, match="at least two calibration directories"):
        average_calibrations([calibrated[1]])
    with pytest.raises(CalibrationError, match=r"plan.json: not found"):
        average_calibrations([calibrated[1], tmp_path])
    other = shutil.copytree(calibrated[1], tmp_path / "other")
    plan = json.loads((other / "plan.json").read_text())
    plan["num_repeats"] += 1
    (other / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(CalibrationError, match="calibrated with another plan"):
        average_calibrations([calibrated[1], other])
    (other / "plan.json").write_text((calibrated[1] / "plan.json").read_text())
    (other / "raw-rank-1.json").unlink()
    with pytest.raises(CalibrationError, match=r"raw-rank-1.json: not found"):
        average_calibrations([calibrated[1], other])
