"""Calibration's point-to-point sweep: a transfer timed the way the runner's pipeline meets it.

Run by every calibration process (real_runner/calibration.py) after the compute measurements,
one directed rank pair at a time while the others wait at a barrier. The runner posts every
receive before its send (real_runner/executor.py), so the sweep does too, with the runner's
own `Links`: the receiver's receive is posted, the sender waits SENDER_DELAY_S, times its send
call and the round trip until a one-element ack comes back. Per size the sweep keeps

- the one-way time, send call to data in place at a waiting receiver: the round trip less half
  the round trip of a 4-byte message (no clock is shared between ranks), what the simulator's
  eager protocol charges as latency_s + bytes / bandwidth_bytes_per_s;
- the send call's duration: host time the send holds the sender (StepPlan.send_overhead_s,
  unless the busy probe below ran).

Then, at the sweep's smallest size, how long completing a receive takes when its data is already
in place (the receiver sleeps RECEIVER_DELAY_S first): StepPlan.recv_overhead_s. The smallest
size arrives well within that sleep on any link; a larger one may not on a slow link (1 MiB
takes 85 ms at 100 Mbit/s), and the probe would then time the transfer instead. Then the send
call and the posting of its receives for messages of 1 and 8 small tensors: the host time each
further tensor of a message costs (StepPlan.send_overhead_per_tensor_s, recv_post_per_tensor_s).
Last, the send call again at a small and a large size while both ranks compute, as pipeline
ranks do between their sends: the call writes the message into the kernel's socket, and with
both cores computing that takes longer per byte than with an idle receiver (unshaped loopback
here: 0.5-0.9 ns per byte against 0.4; StepPlan.send_s_per_byte, from the two sizes' slope).
simulator/calibrate.py says why the lower quartile and the fastest of several passes are kept.
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import Tensor

from real_runner.distributed import synchronize
from real_runner.model import TORCH_DTYPES, ModelSpec, Sublayer
from real_runner.p2p import Links
from simulator.calibrate import CalibrationPlan, CalibrationShape, LateReceiveProbe, P2PSweep

__all__ = ["RECEIVER_DELAY_S", "SENDER_DELAY_S", "measure_p2p", "measure_late_receive",
           "sublayer_work"]


SENDER_DELAY_S = 3e-3
"""How long the sender waits before each send, so the receive is always posted first."""
RECEIVER_DELAY_S = 3e-3
"""How much longer than SENDER_DELAY_S the receiver sleeps before completing a receive, so that
its data is surely in place."""
ACK_BYTES = 4
"""Size of the ping whose half round trip is the ack's share of every round trip."""
CALL_TENSOR_COUNTS = (1, 8)
"""Tensors per message at which the send call and the receives' posting are timed."""
BUSY_SEND_LARGE_BYTES = 1 << 20
"""The busy send probe's large size (a pipeline's boundary messages are of this order; a much
larger one would take long on a slow link)."""


class _ComputeLoad:
    """A thread that runs `work` until stopped: the sender's pipeline compute during a sweep.

    PyTorch releases the GIL inside its operators, so the main thread keeps communicating.
    """

    def __init__(self, work: Callable[[], None]) -> None:
        self._work, self._stop = work, threading.Event()
        self._thread = threading.Thread(target=self._loop, name="calibration-load", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._work()

    def __enter__(self) -> _ComputeLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def sublayer_work(shape: CalibrationShape, device: torch.device) -> Callable[[], None]:
    """One forward and backward of the runner's attention sublayer at `shape`."""
    spec = ModelSpec(num_sublayers=2, hidden_size=shape.hidden_size, num_heads=shape.num_heads,
                     ffn_hidden_size=shape.ffn_hidden_size, vocab_size=shape.vocab_size,
                     mlp=shape.mlp, residual_kind="standard", block_size=None, seed=0)
    dtype = TORCH_DTYPES[shape.dtype]
    module = Sublayer(spec, 1).to(device=device, dtype=dtype)
    base = torch.randn(shape.micro_batch_size, shape.seq_len, shape.hidden_size, device=device,
                       dtype=dtype)

    def work() -> None:
        out = module(base.detach().requires_grad_())
        out.backward(torch.ones_like(out))
        synchronize(device)

    return work


def measure_p2p(rank: int, world_size: int, links: Links, device: torch.device,
                plan: CalibrationPlan) -> list[P2PSweep]:
    """Posted-receive sweeps over every directed pair (collective: every rank calls it).

    Each sweep is returned by its sender, which did the timing. The sweep runs
    `plan.num_sweep_passes` times and keeps, per size, the fastest pass: a burst of other work
    on a shared host spoils a pass, not all of them.
    """
    sweeps = []
    work = sublayer_work(plan.shapes[0], device) if plan.sender_busy else None
    busy_work = sublayer_work(plan.shapes[0], device) if plan.busy_send_rounds else None
    sizes = list(plan.message_sizes_bytes)
    for src in range(world_size):
        for dst in range(world_size):
            if src == dst:
                continue
            dist.barrier()
            if rank not in (src, dst):
                continue
            peer = dst if rank == src else src
            sending = rank == src
            load = _ComputeLoad(work) if sending and work is not None \
                else contextlib.nullcontext()
            with load:
                _round_trips(sending, peer, sizes[0], links, device, plan)  # warm-up
                passes = [[_round_trips(sending, peer, size, links, device, plan)
                           for size in [ACK_BYTES, *sizes]]
                          for _ in range(plan.num_sweep_passes)]
                in_place = _in_place_receive(sending, peer, sizes[0], links, device, plan)
                calls = _call_costs(sending, peer, links, device, plan)
            busy_sizes = busy_send_sizes(sizes[0]) if busy_work is not None else []
            busy_calls = [] if busy_work is None else _busy_send_calls(
                sending, peer, busy_sizes, links, device, plan, busy_work)
            if sending:
                best = [min(per_size, key=lambda r: r[0]) for per_size in zip(*passes)]
                (ack_round_trip_s, _), rest = best[0], best[1:]
                sweeps.append(P2PSweep(
                    src_rank=src, dst_rank=dst, sizes_bytes=sizes,
                    one_way_s=[max(rtt - ack_round_trip_s / 2, 1e-9) for rtt, _ in rest],
                    send_call_s=[call for _, call in rest], recv_in_place_s=in_place,
                    tensor_counts=list(CALL_TENSOR_COUNTS), send_calls_by_count_s=calls[0],
                    post_calls_by_count_s=calls[1], sender_busy=plan.sender_busy,
                    busy_sizes_bytes=busy_sizes, busy_send_call_s=busy_calls))
    dist.barrier()
    return sweeps


SENDER_BUSY_S = 20e-3
"""Late-receive probe: how long the sender computes after posting its send."""
RECEIVER_BUSY_S = 5e-3
"""Late-receive probe: how long the receiver computes before posting its receive."""


def measure_late_receive(rank: int, links: Links, device: torch.device,
                         plan: CalibrationPlan) -> LateReceiveProbe | None:
    """What a late receive costs when both ranks computed just before it (collective).

    Ranks 0 -> 1, `plan.late_receive_rounds` rounds per case, each after a barrier: the sender
    posts a message of the sweep's middle size, then either sleeps (idle) or runs the runner's
    sublayer forward and backward (busy) for SENDER_BUSY_S; the receiver sleeps or computes for
    RECEIVER_BUSY_S, then times its receive. On a host whose ranks fill every core, the busy
    case is what a pipeline's steady state meets (docs/accuracy-report.md measured 1.5-3 ms
    more than idle on 2 vCPUs); the difference is the profile's late_receive_overhead_s.
    Returns the probe on rank 1, None elsewhere (and everywhere with 0 rounds).
    """
    if plan.late_receive_rounds == 0 or plan.nproc < 2:
        return None
    work = sublayer_work(plan.shapes[0], device)
    num_bytes = plan.message_sizes_bytes[len(plan.message_sizes_bytes) // 2]
    message = torch.zeros(max(1, num_bytes // 4), dtype=torch.float32, device=device)
    medians = []
    for busy in (False, True):
        waits = []
        for _ in range(plan.late_receive_rounds):
            dist.barrier()
            if rank == 0:
                links.isend(1, [message], lambda _end_s: None)
                _occupy(work if busy else None, SENDER_BUSY_S)
                links.drain()
            elif rank == 1:
                _occupy(work if busy else None, RECEIVER_BUSY_S)
                t0 = time.perf_counter()
                links.recv(0, [message])
                waits.append(time.perf_counter() - t0)
        medians.append(statistics.median(waits) if waits else 0.0)
    dist.barrier()
    if rank != 1:
        return None
    return LateReceiveProbe(src_rank=0, dst_rank=1, num_bytes=message.numel() * 4,
                            idle_s=medians[0], busy_s=medians[1],
                            num_rounds=plan.late_receive_rounds)


def _occupy(work: Callable[[], None] | None, seconds: float) -> None:
    """Run `work` repeatedly (or sleep, without work) for about `seconds`."""
    if work is None:
        time.sleep(seconds)
        return
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        work()


def _round_trips(sender: bool, peer: int, num_bytes: int, links: Links, device: torch.device,
                 plan: CalibrationPlan) -> tuple[float, float]:
    """(round trip, send call): a message of `num_bytes` to a receive posted earlier, answered
    by a one-element ack; lower quartile of the round trips, median of the send calls.

    The sender decides when to stop (enough rounds, or the time budget) and says so in the
    message's first element, so both sides run the same number of rounds. The receiver posts
    its next receive right after answering; the sender waits SENDER_DELAY_S before each send.
    Returns (0.0, 0.0) on the receiver.
    """
    message = torch.ones(max(1, num_bytes // 4), dtype=torch.float32, device=device)
    ack = torch.zeros(1, dtype=torch.float32, device=device)
    round_trips: list[float] = []
    calls: list[float] = []
    if not sender:
        receipt = links.post_recv(peer, [message])
        while True:
            links.wait_recv(peer, receipt)
            done = float(message[0]) == 0.0
            links.isend(peer, [ack], lambda _end_s: None)
            if not done:
                receipt = links.post_recv(peer, [message])
            links.drain()
            if done:
                return 0.0, 0.0
    started = time.perf_counter()
    i = 0
    while True:
        done = i + 1 >= plan.num_warmup + plan.num_repeats or (
            i >= plan.num_warmup + 3
            and time.perf_counter() - started > plan.max_seconds_per_point)
        message[0] = 0.0 if done else 1.0
        call_s, round_trip_s = _send_for_ack(peer, [message], ack, links)
        if i >= plan.num_warmup:
            round_trips.append(round_trip_s)
            calls.append(call_s)
        i += 1
        if done:
            return _lower_quartile(round_trips), statistics.median(calls)


def _send_for_ack(peer: int, tensors: list[Tensor], ack: Tensor, links: Links
                  ) -> tuple[float, float]:
    """The sender's side of one timed round: post the ack's receive, wait SENDER_DELAY_S (so the
    peer's receive is posted), send `tensors` and wait for the ack. Returns (seconds of the send
    call, seconds from the send call to the ack's arrival)."""
    ack_receipt = links.post_recv(peer, [ack])
    time.sleep(SENDER_DELAY_S)
    t0 = time.perf_counter()
    links.isend(peer, tensors, lambda _end_s: None)
    t1 = time.perf_counter()
    links.wait_recv(peer, ack_receipt)
    t2 = time.perf_counter()
    links.drain()
    return t1 - t0, t2 - t0


def _in_place_receive(sender: bool, peer: int, num_bytes: int, links: Links,
                      device: torch.device, plan: CalibrationPlan) -> float:
    """Median seconds to complete a receive posted earlier whose data is in place (the receiver
    sleeps RECEIVER_DELAY_S after the send before it waits); measured by the receiver, returned
    to the sender through the last ack. Returns 0.0 on the receiver."""
    message = torch.ones(max(1, num_bytes // 4), dtype=torch.float32, device=device)
    ack = torch.zeros(1, dtype=torch.float32, device=device)
    rounds = max(3, plan.num_repeats)
    if sender:
        for _ in range(rounds):
            _send_for_ack(peer, [message], ack, links)
        return float(ack[0])
    waits = []
    receipt = links.post_recv(peer, [message])
    for i in range(rounds):
        time.sleep(RECEIVER_DELAY_S + SENDER_DELAY_S)
        t0 = time.perf_counter()
        links.wait_recv(peer, receipt)
        waits.append(time.perf_counter() - t0)
        if i + 1 < rounds:
            receipt = links.post_recv(peer, [message])
        ack[0] = statistics.median(waits)
        links.isend(peer, [ack], lambda _end_s: None)
        links.drain()
    return 0.0


def _call_costs(sender: bool, peer: int, links: Links, device: torch.device,
                plan: CalibrationPlan) -> tuple[list[float], list[float]]:
    """Median host seconds of a send call and of posting its receives, for messages of each of
    CALL_TENSOR_COUNTS small tensors: the runner sends a message's tensors one by one (an
    AttnRes boundary is several), so its host time grows with their number. The receiver
    posts and times its receives, the sender waits SENDER_DELAY_S and times its send; the
    receiver's medians come back in the last ack. Returns ([], []) on the receiver."""
    rounds = max(3, plan.num_repeats)
    ack = torch.zeros(len(CALL_TENSOR_COUNTS), dtype=torch.float64, device=device)
    medians: list[float] = []  # this side's: send calls (sender) or postings (receiver)
    for count in CALL_TENSOR_COUNTS:
        tensors = [torch.ones(1, dtype=torch.float32, device=device) for _ in range(count)]
        timed: list[float] = []
        for _ in range(plan.num_warmup + rounds):
            if sender:
                timed.append(_send_for_ack(peer, tensors, ack, links)[0])
            else:
                t0 = time.perf_counter()
                receipt = links.post_recv(peer, tensors)
                timed.append(time.perf_counter() - t0)
                links.wait_recv(peer, receipt)
                links.isend(peer, [ack], lambda _end_s: None)
                links.drain()
        medians.append(statistics.median(timed[plan.num_warmup:]))
    if sender:  # one more round trip brings the receiver's medians
        links.recv(peer, [ack])
        return medians, [float(x) for x in ack]
    ack.copy_(torch.tensor(medians, dtype=torch.float64))
    links.isend(peer, [ack], lambda _end_s: None)
    links.drain()
    return [], []


def busy_send_sizes(smallest_bytes: int) -> list[int]:
    """The busy send probe's two sizes: the sweep's smallest and BUSY_SEND_LARGE_BYTES (or
    four times the smallest, if that is more)."""
    return [smallest_bytes, max(BUSY_SEND_LARGE_BYTES, 4 * smallest_bytes)]


def _busy_send_calls(sender: bool, peer: int, sizes: list[int], links: Links,
                     device: torch.device, plan: CalibrationPlan,
                     work: Callable[[], None]) -> list[float]:
    """Median seconds of the send call per size while both ranks compute: the sender runs
    `work` (the runner's sublayer) before each send, the receiver runs it in a thread while
    its main thread waits on receives it posted ahead, as a pipeline rank's inbound link does
    while the rank computes. Sizes alternate; `plan.busy_send_rounds` each after warm-up.
    Returns [] on the receiver."""
    messages = [torch.ones(max(1, n // 4), dtype=torch.float32, device=device) for n in sizes]
    order = [i for _ in range(plan.num_warmup + plan.busy_send_rounds)
             for i in range(len(sizes))]
    if not sender:
        receipts = [links.post_recv(peer, [torch.empty_like(messages[i])]) for i in order]
        with _ComputeLoad(work):
            for receipt in receipts:
                links.wait_recv(peer, receipt)
        return []
    timed: list[list[float]] = [[] for _ in sizes]
    time.sleep(SENDER_DELAY_S)  # the receiver posts every receive first
    for n, i in enumerate(order):
        work()
        t0 = time.perf_counter()
        links.isend(peer, [messages[i]], lambda _end_s: None)
        if n >= plan.num_warmup * len(sizes):
            timed[i].append(time.perf_counter() - t0)
    links.drain()
    return [statistics.median(t) for t in timed]


def _lower_quartile(values: list[float]) -> float:
    """The 25th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, (len(ordered) + 3) // 4 - 1)]
