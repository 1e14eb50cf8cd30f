"""Calibration's point-to-point sweep: a transfer timed the way a pipeline meets it.

Run by every calibration process (real_runner/calibration.py) after the compute measurements,
one directed rank pair at a time while the others wait at a barrier. Each round: the sender
posts its send with the runner's own `Links` (one process group per direction, sends
completed by a waiter thread) and goes on; the receiver arrives RECEIVER_DELAY_S later and times
its receive until the data is in place. gloo moves a buffer only once its receive is posted,
so this is what the simulator's rendezvous protocol charges as latency + bytes / bandwidth
(simulator/calibrate.py says why, and why the lower quartile and the fastest of several passes
are kept).
"""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from collections.abc import Callable

import torch
import torch.distributed as dist

from real_runner.distributed import synchronize
from real_runner.model import TORCH_DTYPES, ModelSpec, Sublayer
from real_runner.p2p import Links
from simulator.calibrate import CalibrationPlan, CalibrationShape, LateReceiveProbe, P2PSweep

__all__ = ["RECEIVER_DELAY_S", "measure_p2p", "measure_late_receive"]


RECEIVER_DELAY_S = 3e-3
"""How long the receiver waits before posting its receive, so the send is always posted first."""


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


def _sublayer_work(shape: CalibrationShape, device: torch.device) -> Callable[[], None]:
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
    """Late-receiver sweeps over every directed pair (collective: every rank calls it).

    Each sweep is returned by its receiver, which did the timing. The sweep runs
    `plan.num_sweep_passes` times and keeps, per size, the fastest pass: a burst of other work
    on a shared host spoils a pass, not all of them.
    """
    sweeps = []
    work = _sublayer_work(plan.shapes[0], device) if plan.sender_busy else None
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
                _late_receive(sending, peer, plan.message_sizes_bytes[0], links, device, plan)
                passes = [[_late_receive(sending, peer, size, links, device, plan)
                           for size in plan.message_sizes_bytes]
                          for _ in range(plan.num_sweep_passes)]
            times = [min(per_size) for per_size in zip(*passes)]
            if not sending:
                sweeps.append(P2PSweep(src_rank=src, dst_rank=dst,
                                       sizes_bytes=list(plan.message_sizes_bytes),
                                       one_way_s=times, sender_busy=plan.sender_busy))
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
    work = _sublayer_work(plan.shapes[0], device)
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


def _late_receive(sender: bool, peer: int, num_bytes: int, links: Links, device: torch.device,
                  plan: CalibrationPlan) -> float:
    """Time from posting a receive to its data in place, the send posted earlier.

    Kept: the lower quartile of the rounds. On a shared host a round now and then waits a
    scheduler time slice for a core (other processes); those rounds are the host's noise,
    not the link's, and a median flips to them when a burst of other work covers half the
    rounds. The lower quartile is the link's own time however large that fraction is.

    One round: the sender posts its send; the receiver waits RECEIVER_DELAY_S, then times its
    receive, then answers with a one-element ack that starts the next round. The sender decides
    when to stop (enough rounds, or the time budget) and says so in the message's first
    element, so both sides run the same number of rounds. Returns 0.0 on the sender.
    """
    message = torch.ones(max(1, num_bytes // 4), dtype=torch.float32, device=device)
    ack = torch.zeros(1, dtype=torch.float32, device=device)
    times: list[float] = []
    started = time.perf_counter()
    i = 0
    while True:
        if sender:
            done = i + 1 >= plan.num_warmup + plan.num_repeats or (
                i >= plan.num_warmup + 3
                and time.perf_counter() - started > plan.max_seconds_per_point)
            message[0] = 0.0 if done else 1.0
            links.isend(peer, [message], lambda _end_s: None)
            links.recv(peer, [ack])
            links.drain()
        else:
            time.sleep(RECEIVER_DELAY_S)
            t0 = time.perf_counter()
            links.recv(peer, [message])
            elapsed = time.perf_counter() - t0
            links.isend(peer, [ack], lambda _end_s: None)
            links.drain()
            if i >= plan.num_warmup:
                times.append(elapsed)
            done = float(message[0]) == 0.0
        i += 1
        if done:
            return _lower_quartile(times) if times else 0.0


def _lower_quartile(values: list[float]) -> float:
    """The 25th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, (len(ordered) + 3) // 4 - 1)]
