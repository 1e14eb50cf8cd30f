"""The engine against closed forms: pipeline bubbles, a lone transfer, two flows sharing a link."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from simulator.engine import StepPlan, simulate_plan
from simulator.fabric import Fabric, ideal_fabric
from simulator.schedule import build_schedule


def _all_hops(num_chunks: int, num_bytes: int = 1) -> dict[tuple[str, int], int]:
    forward = {("forward", c): num_bytes for c in range(num_chunks - 1)}
    return forward | {("backward", c): num_bytes for c in range(1, num_chunks)}


@pytest.mark.parametrize("kind", ["gpipe", "1f1b"])
@pytest.mark.parametrize(("P", "M"), [(1, 1), (2, 1), (4, 8), (4, 3), (8, 16), (5, 7)])
def test_gpipe_and_1f1b_step_is_m_plus_p_minus_1_slots(kind: str, P: int, M: int) -> None:
    t_f, t_b = 1.25, 2.5
    schedule = build_schedule(kind, P, 1, M)
    result = simulate_plan(StepPlan(schedule, 1, 1, (t_f,) * P, (t_b,) * P, _all_hops(P)))
    assert result.step_time_s == pytest.approx((M + P - 1) * (t_f + t_b), rel=1e-12)
    assert result.bubble_fraction == pytest.approx((P - 1) / (M + P - 1), rel=1e-12)
    for rank in result.ranks:
        assert rank.busy_s == pytest.approx(M * (t_f + t_b), rel=1e-12)
        assert rank.comm_wait_s == 0.0  # unlimited zero-latency links: only the bubble


@pytest.mark.parametrize(("P", "V", "M"), [(2, 2, 4), (4, 2, 8), (4, 3, 8), (3, 2, 6),
                                           (4, 2, 12), (8, 4, 16)])
def test_interleaved_bubble_is_narayanan_p_minus_1_over_v(P: int, V: int, M: int) -> None:
    """Narayanan et al. SC'21: the bubble shrinks to (P - 1)(t_f + t_b) / V."""
    t_f, t_b = 3.0, 6.0  # per micro-batch for a whole rank; each of its V chunks takes 1/V
    schedule = build_schedule("interleaved-1f1b", P, V, M)
    C = P * V
    result = simulate_plan(StepPlan(schedule, 1, 1, (t_f / V,) * C, (t_b / V,) * C,
                                    _all_hops(C)))
    ideal = M * (t_f + t_b)
    assert result.step_time_s == pytest.approx(ideal + (P - 1) * (t_f + t_b) / V, rel=1e-12)


def test_a_lone_transfer_takes_latency_plus_bytes_over_bandwidth() -> None:
    """P = 2, one micro-batch, no compute: the step is one forward and one backward hop."""
    bandwidth, latency, num_bytes = 25e9, 1.5e-6, 3 << 20
    fabric = ideal_fabric(1, 2, bandwidth_bytes_per_s=bandwidth, latency_s=latency)
    schedule = build_schedule("1f1b", 2, 1, 1)
    result = simulate_plan(StepPlan(schedule, 1, 1, (0.0, 0.0), (0.0, 0.0),
                                    _all_hops(2, num_bytes), fabric=fabric))
    hop_s = 2 * latency + num_bytes / bandwidth  # GPU -> switch -> GPU: two link latencies
    assert [t.delivered_s - t.posted_s for t in result.transfers] == [
        pytest.approx(hop_s, rel=1e-12)] * 2
    assert result.step_time_s == pytest.approx(2 * hop_s, rel=1e-12)
    assert result.ranks[1].comm_wait_s == pytest.approx(hop_s, rel=1e-12)


def _shared_core_fabric(bandwidth: float) -> Fabric:
    """Two replicas whose rank-0 -> rank-1 traffic crosses one shared `core` link."""
    links = {("core_in", "core_out"): (bandwidth, 0.0), ("core_out", "core_in"): (bandwidth, 0.0)}
    for dp in range(2):
        for pp in range(2):
            links[((dp, pp), "core_in")] = (math.inf, 0.0)
            links[("core_out", (dp, pp))] = (math.inf, 0.0)

    def route(src: object, dst: object) -> tuple:
        return ((src, "core_in"), ("core_in", "core_out"), ("core_out", dst))

    return Fabric(links, lambda dp, pp, tp: (dp, pp), route)


def test_two_equal_flows_on_one_link_get_half_the_bandwidth_each() -> None:
    bandwidth, num_bytes = 10e9, 10**9
    schedule = build_schedule("gpipe", 2, 1, 1)
    plan = StepPlan(schedule, 2, 1, (0.0, 0.0), (0.0, 0.0), _all_hops(2, num_bytes),
                    fabric=_shared_core_fabric(bandwidth))
    result = simulate_plan(plan)
    forward = [t for t in result.transfers if t.label == "0SEND_F0"]
    assert len(forward) == 2
    for transfer in forward:  # both start at 0 and share the core: bandwidth / 2 each
        assert transfer.delivered_s == pytest.approx(num_bytes / (bandwidth / 2), rel=1e-12)
    core = next(l for l in result.links if (l.src, l.dst) == ("core_in", "core_out"))
    assert core.peak_concurrent_flows == 2
    assert core.pipeline_bytes == 4 * num_bytes  # two replicas, forward and backward


def test_tensor_parallel_sends_one_flow_per_tp_rank_and_waits_for_all() -> None:
    bandwidth, num_bytes = 1e9, 10**6
    fabric = ideal_fabric(1, 2, 4, bandwidth_bytes_per_s=bandwidth)
    schedule = build_schedule("gpipe", 2, 1, 1)
    result = simulate_plan(StepPlan(schedule, 1, 4, (0.0, 0.0), (0.0, 0.0),
                                    _all_hops(2, num_bytes), fabric=fabric))
    assert {t.num_flows for t in result.transfers} == {4}
    assert sum(l.pipeline_bytes for l in result.links if l.src == "switch") == 2 * 4 * num_bytes
    assert result.step_time_s == pytest.approx(2 * num_bytes / bandwidth, rel=1e-12)


def test_gradient_ring_allreduce_matches_the_alpha_beta_ring_formula() -> None:
    """d replicas on a non-blocking star: 2(d-1) steps of (latency + chunk / bandwidth)."""
    d, bandwidth, latency, grad_bytes = 4, 1e9, 1e-6, 8 * 10**6
    steps = (grad_bytes // d,) * (2 * (d - 1))
    fabric = ideal_fabric(d, 1, bandwidth_bytes_per_s=bandwidth, latency_s=latency)
    schedule = build_schedule("1f1b", 1, 1, 1)
    result = simulate_plan(StepPlan(schedule, d, 1, (1.0,), (2.0,), {},
                                    allreduce_step_bytes=(steps,), fabric=fabric))
    step_s = 2 * latency + grad_bytes / d / bandwidth
    assert result.step_time_s == pytest.approx(3.0 + 2 * (d - 1) * step_s, rel=1e-12)
    assert result.pipeline_time_s == pytest.approx(3.0)
    assert all(r.allreduce_s == pytest.approx(2 * (d - 1) * step_s, rel=1e-12)
               for r in result.ranks)
    # every GPU sends 2(d-1)/d of its gradients up its link
    up = [l for l in result.links if l.dst == "switch"]
    assert {l.allreduce_bytes for l in up} == {2 * (d - 1) * (grad_bytes // d)}


def test_same_plan_same_result() -> None:
    schedule = build_schedule("interleaved-1f1b", 2, 2, 4)
    fabric = ideal_fabric(2, 2, bandwidth_bytes_per_s=3e9, latency_s=1e-6)
    plan = StepPlan(schedule, 2, 1, (1e-3,) * 4, (2e-3,) * 4, _all_hops(4, 5 << 20),
                    allreduce_step_bytes=((10**6,) * 2, (10**6,) * 2), fabric=fabric)
    first, second = simulate_plan(plan).to_json(), simulate_plan(plan).to_json()
    assert "wall_s" not in first["stats"]
    assert json.dumps(first) == json.dumps(second)


@pytest.mark.parametrize(("protocol", "step_s"), [("eager", 7.0), ("rendezvous", 8.0)])
def test_rendezvous_starts_a_transfer_only_once_the_receive_is_posted(protocol: str,
                                                                      step_s: float) -> None:
    """GPipe, P = 2, M = 2, t_f = t_b = 1 s, 0.5 s per transfer, worked by hand.

    Eager: F(1,0) 1.5-2.5, F(1,1) 2.5-3.5 (sent at 2, there at 2.5), B(1,0) 3.5-4.5 and
    B(1,1) 4.5-5.5 on rank 1; rank 0 gets the gradients at 5 and 6: B(0,0) 5-6, B(0,1) 6-7.
    Rendezvous: micro-batch 1's activation, sent at 2, starts when rank 1 asks at 2.5 (there
    at 3): F(1,1) 3-4, B(1,0) 4-5, B(1,1) 5-6; B(0,0) 5.5-6.5; the last gradient, sent at 6,
    starts when rank 0 asks at 6.5 (there at 7): B(0,1) 7-8."""
    fabric = ideal_fabric(1, 2, bandwidth_bytes_per_s=2.0)  # the path's two links: 2 B/s
    plan = StepPlan(build_schedule("gpipe", 2, 1, 2), 1, 1, (1.0, 1.0), (1.0, 1.0),
                    _all_hops(2, 1), fabric=fabric, p2p_protocol=protocol)
    assert simulate_plan(plan).step_time_s == pytest.approx(step_s, rel=1e-12)
    with pytest.raises(ValueError, match=r"p2p_protocol = 'tcp': use one of eager, rendezvous"):
        StepPlan(plan.schedule, 1, 1, (1.0,), (1.0,), {}, p2p_protocol="tcp")


def test_late_receive_overhead_delays_only_receives_posted_after_their_send() -> None:
    """The rendezvous case above with o = 0.25 s per late receive, worked by hand.

    Two receives are late: micro-batch 1's activation (rank 1 asks at 2.5, after the send at
    2) and the last gradient. The first starts at 2.5 + o, so everything after it on both
    ranks moves by o; the gradient, sent at 6 + o, is asked for at 6.5 + o and starts o later
    again: B(0,1) ends at 8 + 2o. The early receives (F(1,0)'s activation, the first
    gradient) cost nothing more, and eager sends ignore the overhead."""
    fabric = ideal_fabric(1, 2, bandwidth_bytes_per_s=2.0)
    overhead_s = 0.25
    plan = StepPlan(build_schedule("gpipe", 2, 1, 2), 1, 1, (1.0, 1.0), (1.0, 1.0),
                    _all_hops(2, 1), fabric=fabric, p2p_protocol="rendezvous",
                    late_receive_overhead_s=overhead_s)
    assert simulate_plan(plan).step_time_s == pytest.approx(8.0 + 2 * overhead_s, rel=1e-12)
    eager = replace(plan, p2p_protocol="eager")
    assert simulate_plan(eager).step_time_s == pytest.approx(7.0, rel=1e-12)
    with pytest.raises(ValueError, match=r"late_receive_overhead_s = -1.0: must be >= 0"):
        replace(plan, late_receive_overhead_s=-1.0)


def _gpipe_half_second_hops(**fields: object) -> StepPlan:
    """Eager GPipe, P = 2, M = 2, t_f = (1, 1.2) s, t_b = (1.1, 1) s, one byte per message at
    2 bytes/s (0.5 s per transfer): the 7.6 s step worked by hand below."""
    return StepPlan(build_schedule("gpipe", 2, 1, 2), 1, 1, (1.0, 1.2), (1.1, 1.0),
                    _all_hops(2, 1), fabric=ideal_fabric(1, 2, bandwidth_bytes_per_s=2.0),
                    **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("send_overhead_s", "recv_overhead_s", "step_s"),
                         [(0.0, 0.0, 7.6), (0.0, 0.1, 7.8), (0.25, 0.0, 7.8)])
def test_host_overheads_hold_the_sender_and_a_receiver_whose_data_is_in_place(
        send_overhead_s: float, recv_overhead_s: float, step_s: float) -> None:
    """Eager GPipe, P = 2, M = 2, t_f = (1, 1.2) s, t_b = (1.1, 1) s, 0.5 s per transfer.

    None: F(1,0) 1.5-2.7; micro-batch 1's activation (sent at 2) is in place at 2.5, so
    F(1,1) 2.7-3.9, B(1,0) 3.9-4.9, B(1,1) 4.9-5.9; the gradients arrive at 5.4 and 6.4;
    B(0,0) 5.4-6.5, B(0,1) 6.5-7.6.
    o_recv = 0.1 s: the two receives that find their data in place (at 2.7 and 6.6) each
    hold their rank 0.1 s more: 7.8. A receive that waited (F(1,0)'s, B(0,0)'s) pays nothing.
    o_send = 0.25 s: rank 0 holds 1-1.25 after its first send, so micro-batch 1 is sent at
    2.25 and there at 2.75 (rank 1 waits from 2.7): F(1,1) 2.75-3.95, B(1,0) 3.95-4.95, held
    to 5.2, B(1,1) 5.2-6.2, gradient there at 6.7; B(0,0) 5.45-6.55, B(0,1) 6.7-7.8."""
    plan = _gpipe_half_second_hops(send_overhead_s=send_overhead_s,
                                   recv_overhead_s=recv_overhead_s)
    result = simulate_plan(plan)
    assert result.step_time_s == pytest.approx(step_s, rel=1e-12)
    with pytest.raises(ValueError, match=r"send_overhead_s = -1.0: must be >= 0"):
        replace(plan, send_overhead_s=-1.0)


@pytest.mark.parametrize(("send_cpu", "recv_cpu", "step_s"),
                         [(0.0, 0.0, 7.6), (0.25, 0.0, 7.85), (0.0, 0.1, 7.8),
                          (0.25, 0.1, 8.05)])
def test_a_transfer_slows_the_compute_it_overlaps(send_cpu: float, recv_cpu: float,
                                                  step_s: float) -> None:
    """The GPipe step above (7.6 s), one byte per message, s / r seconds per byte at the
    sender / receiver, charged to an end's next compute for the share of the flight that
    overlapped its compute.

    Micro-batch 0's activation flies 1-1.5 while rank 0 computes F(0,1): rank 0 owes s (charged
    at 1.5, mid-compute), paid by B(0,0). Micro-batch 1's flies 2-2.5 with rank 0 idle but rank
    1 in F(1,0): rank 1 owes r, paid by F(1,1), which shifts rank 1 by r. The first gradient
    flies while rank 1 computes B(1,1), its last compute (never paid), and rank 0 waits (free);
    the second flies while rank 0 computes B(0,0): r more for B(0,1). Step 7.6 + s + 2r."""
    plan = _gpipe_half_second_hops(send_cpu_s_per_byte=send_cpu, recv_cpu_s_per_byte=recv_cpu)
    result = simulate_plan(plan)
    assert result.step_time_s == pytest.approx(step_s, rel=1e-12)
    with pytest.raises(ValueError, match=r"recv_cpu_s_per_byte = -1.0: must be >= 0"):
        replace(plan, recv_cpu_s_per_byte=-1.0)


def test_message_tensors_add_to_the_send_and_to_posting_the_receives() -> None:
    """The GPipe step above with three tensors per message. 0.125 s per extra tensor at the
    send is the 0.25 s send overhead case (7.8 s). Posting: 0.05 s + 2 x 0.025 s = 0.1 s held
    at each receive before it waits: rank 1 0-0.1 (then waits to 1.5), and at 2.7 (F(1,1)
    2.8-4.0, gradients there at 5.5 and 6.5); rank 0 2-2.1 and at 6.6 (B(0,0) 5.5-6.6, B(0,1)
    6.7-7.8): 7.8 s."""
    base = _gpipe_half_second_hops(send_tensors=dict.fromkeys(_all_hops(2, 1), 3))
    assert simulate_plan(base).step_time_s == pytest.approx(7.6, rel=1e-12)
    sends = replace(base, send_overhead_per_tensor_s=0.125)
    assert simulate_plan(sends).step_time_s == pytest.approx(7.8, rel=1e-12)
    posts = replace(base, recv_post_s=0.05, recv_post_per_tensor_s=0.025)
    assert simulate_plan(posts).step_time_s == pytest.approx(7.8, rel=1e-12)


def test_message_bytes_add_to_the_send() -> None:
    """The GPipe step above (one byte per message) with 0.25 s per byte sent: each send holds
    its rank 0.25 s, the 0.25 s send overhead case (7.8 s); with 0.1 s fixed besides, 0.35 s
    per send, rank 0 sends micro-batch 1 at 2.35 (there at 2.85): F(1,1) 2.85-4.05, B(1,0)
    4.05-5.05, held to 5.4, B(1,1) 5.4-6.4, gradient there at 6.9; B(0,0) 5.55-6.65, B(0,1)
    6.9-8.0."""
    base = _gpipe_half_second_hops()
    assert simulate_plan(replace(base, send_s_per_byte=0.25)).step_time_s == \
        pytest.approx(7.8, rel=1e-12)
    both = replace(base, send_s_per_byte=0.25, send_overhead_s=0.1)
    assert simulate_plan(both).step_time_s == pytest.approx(8.0, rel=1e-12)


def test_host_work_after_a_compute_holds_its_rank_before_the_next_action() -> None:
    """The GPipe step above (7.6 s) with the runner's bookkeeping after computes: 0.2 s after
    each forward of chunk 0, 0.3 s after each backward of chunk 1.

    Rank 0 sends micro-batch 0 at 1.2 (there at 1.7) and micro-batch 1 at 2.4 (2.9): F(1,0)
    1.7-2.9, F(1,1) 2.9-4.1, B(1,0) 4.1-5.1, held to 5.4, gradient there at 5.9; B(1,1)
    5.4-6.4, held to 6.7, gradient there at 7.2; B(0,0) 5.9-7.0, B(0,1) 7.2-8.3."""
    base = _gpipe_half_second_hops()
    plan = replace(base, forward_host_s=(0.2, 0.0), backward_host_s=(0.0, 0.3))
    result = simulate_plan(plan)
    assert result.step_time_s == pytest.approx(8.3, rel=1e-12)
    assert [r.busy_s for r in result.ranks] == pytest.approx(
        [r.busy_s for r in simulate_plan(base).ranks], rel=1e-12)  # compute is unchanged
    assert result.ranks[1].comm_wait_s >= 0.6 - 1e-12  # its two holds (and in-flight waits)
    with pytest.raises(ValueError, match=r"backward_host_s\[1\] = -0.1"):
        replace(base, backward_host_s=(0.0, -0.1))


@pytest.mark.parametrize("M", [1, 4])
def test_one_stage_pays_its_host_work_after_every_compute(M: int) -> None:
    t_f, t_b, h_f, h_b = 1.0, 2.0, 0.125, 0.25
    plan = StepPlan(build_schedule("1f1b", 1, 1, M), 1, 1, (t_f,), (t_b,), {},
                    forward_host_s=(h_f,), backward_host_s=(h_b,))
    result = simulate_plan(plan)
    assert result.step_time_s == pytest.approx(M * (t_f + t_b + h_f + h_b), rel=1e-12)
    assert result.ranks[0].comm_wait_s == pytest.approx(M * (h_f + h_b), rel=1e-12)
