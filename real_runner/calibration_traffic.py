"""Calibration's traffic-load probe: how much a transfer in flight slows the compute beside it.

On a host whose ranks compute on every core, moving bytes is not free for the compute: the
kernel's TCP and queueing work, the communication library's threads and their wake-ups run on
the same cores (a GPU's analogue is the SMs a NCCL kernel takes). The point-to-point sweep times
the link with the ranks idle, and the compute pieces are timed with the link idle, so neither
shows it; on the 2-vCPU validation host under a 200 Mbit/s token bucket, compute ran 20-34%
slower in runs whose link was busy (docs/accuracy-report.md).

The probe, ranks 0 -> 1, in rounds that alternate idle and loaded (so a slow spell of a shared
host weighs on both alike), each after a barrier: both ranks time the runner's attention
sublayer forward and backward, `calls` times in a row (their window). In a loaded round rank 1
has posted the receives of `calls` messages, and rank 0 sends one after each of its calls, as a
pipeline rank sends between its computes: PLANES_PER_MESSAGE of the scenario's activation
planes, one tensor each, as the runner's boundary messages are (per-message and per-tensor work
count: at the receiver a stream of a few large messages cost 0.2-0.3 ns per byte, this cadence
0.6-0.75, closer to the 1.1 ns a full-naive run's threads took per byte sent or received). The
send calls are not part of the window (the send's own host time is measured apart). The bytes
moved during a rank's window are its length times the rate rank 1's completions show over rank
1's window (linearly interpolated; on a slow link the messages queue and the completions show
the link's rate). Each rank reports, as medians of rounds, its window idle and loaded, the CPU
time its other threads (the communication library's, the link's) took during each, and those
bytes. Per byte moved, by a sender (rank 0) or a receiver (rank 1):

- the compute slowdown: (loaded - idle window) / bytes, what a GPU's kernels lose;
- the communication threads' CPU: (loaded - idle helper CPU) / bytes. On a CPU host whose ranks
  fill the cores every such CPU second is a second some compute waits, and CPU time is not
  moved by the host's speed drifting between rounds as the window's difference is.

StepPlan.send_cpu_s_per_byte / recv_cpu_s_per_byte are the larger of the two on a CPU device (the
kernel's own work, a token bucket's above all, is not the process's CPU: under the 200 Mbit/s
bucket the sender's compute lost 18-24 ns per byte while its threads took 0.7-1.3), the first on a
GPU (simulator/calibrate_files.py); the engine charges them for the part of each transfer that
overlaps its ranks' compute.
"""

from __future__ import annotations

import bisect
import math
import statistics
import threading
import time
from collections.abc import Callable

import torch
import torch.distributed as dist

from real_runner.calibration_p2p import sublayer_work
from real_runner.p2p import Links, Receipt
from simulator.calibrate import CalibrationPlan, TrafficLoadProbe

__all__ = ["measure_traffic_load", "WINDOW_S", "PLANES_PER_MESSAGE"]

WINDOW_S = 0.04
"""About how long each rank computes per round."""
PLANES_PER_MESSAGE = 4
"""Tensors (activation planes) per message: a Block AttnRes boundary carries a few, the standard
residual's one."""


def measure_traffic_load(rank: int, links: Links, device: torch.device,
                         plan: CalibrationPlan) -> TrafficLoadProbe | None:
    """Compute slowdown and threads' CPU under traffic 0 -> 1 (collective: every rank calls it).

    Returns the probe on ranks 0 (sender) and 1 (receiver), None elsewhere and everywhere with
    0 rounds or a single process.
    """
    if plan.traffic_rounds == 0 or plan.nproc < 2:
        return None
    work = sublayer_work(plan.shapes[0], device)
    for _ in range(max(plan.num_warmup, 1)):
        work()
    started = time.perf_counter()
    work()
    calls = max(4, math.ceil(WINDOW_S / max(time.perf_counter() - started, 1e-6)))
    # Everyone agrees on the window's length: rank 0's.
    agreed = torch.tensor([float(calls)], dtype=torch.float64,
                          device=device)  # NCCL broadcasts device tensors
    dist.broadcast(agreed, src=0)
    calls = int(agreed[0])
    tensor_elems = max(1, plan.shapes[0].plane_bytes // 4)
    idle, loaded, moved, idle_cpu, loaded_cpu = [], [], [], [], []
    for round_index in range(2 * plan.traffic_rounds):
        busy = round_index % 2 == 1
        dist.barrier()
        if rank > 1:
            continue
        if not busy:
            start, end, work_s, helper_s = _window(work, calls)
            idle.append(work_s)
            idle_cpu.append(helper_s)
            continue
        stream = _Stream(rank, links, device, tensor_elems, calls)
        start, end, work_s, helper_s = _window(work, calls, stream.send if rank == 0 else None)
        stream.finish()
        loaded.append(work_s)
        loaded_cpu.append(helper_s)
        moved.append(_link_rate(rank, links, device, stream, start, end) * (end - start))
    dist.barrier()
    if rank > 1:
        return None
    return TrafficLoadProbe(
        src_rank=0, dst_rank=1, role="send" if rank == 0 else "recv", calls=calls,
        idle_s=statistics.median(idle), loaded_s=statistics.median(loaded),
        bytes_moved=statistics.median(moved), num_rounds=plan.traffic_rounds,
        tensor_bytes=4 * tensor_elems, idle_helper_cpu_s=statistics.median(idle_cpu),
        loaded_helper_cpu_s=statistics.median(loaded_cpu))


def _link_rate(rank: int, links: Links, device: torch.device, stream: _Stream, start_s: float,
               end_s: float) -> float:
    """Bytes per second the link delivered during the receiver's window, known to both ends.

    A send completes once its bytes are in the socket's buffer, so the sender's completions
    run ahead of the link at first; the receiver's show what the link carried.
    """
    rate = torch.zeros(1, dtype=torch.float64, device=device)
    if rank == 1:
        rate[0] = stream.bytes_between(start_s, end_s) / max(end_s - start_s, 1e-9)
        links.isend(0, [rate], lambda _end_s: None)
        links.drain()
    else:
        links.recv(1, [rate])
    return float(rate[0])


def _window(work: Callable[[], None], calls: int,
            after: Callable[[int], None] | None = None) -> tuple[float, float, float, float]:
    """Run `work` `calls` times on this thread, `after(i)` after the i-th (untimed); (start,
    end) perf_counter seconds, the seconds `work` took, and the CPU seconds the process's other
    threads took meanwhile."""
    process_s, thread_s = time.process_time(), time.thread_time()
    start = time.perf_counter()
    work_s = 0.0
    for i in range(calls):
        t0 = time.perf_counter()
        work()
        work_s += time.perf_counter() - t0
        if after is not None:
            after(i)
    end = time.perf_counter()
    helper_s = (time.process_time() - process_s) - (time.thread_time() - thread_s)
    return start, end, work_s, max(0.0, helper_s)


class _Stream:
    """One loaded round's messages on its rank: rank 0 sends them one at a time (`send`), rank 1
    has posted their receives and records when each completes."""

    def __init__(self, rank: int, links: Links, device: torch.device, tensor_elems: int,
                 num_messages: int) -> None:
        self.message_bytes = tensor_elems * 4 * PLANES_PER_MESSAGE
        self.posted_s = time.perf_counter()
        self.done_s: list[float] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._links = links
        self._messages = [[torch.ones(tensor_elems, dtype=torch.float32, device=device)
                           for _ in range(PLANES_PER_MESSAGE)] for _ in range(num_messages)]
        self._send = rank == 0
        if not self._send:
            receipts = [links.post_recv(0, message) for message in self._messages]
            self._thread = threading.Thread(target=self._wait_all, args=(receipts,),
                                            name="traffic-probe", daemon=True)
            self._thread.start()

    def send(self, index: int) -> None:
        """Rank 0: send message `index`."""
        self._links.isend(1, self._messages[index], lambda _end_s: None)

    def _completed(self, end_s: float) -> None:
        with self._lock:
            self.done_s.append(end_s)

    def _wait_all(self, receipts: list[Receipt]) -> None:
        for receipt in receipts:
            self._links.wait_recv(0, receipt)
            self._completed(time.perf_counter())

    def finish(self) -> None:
        """Wait for the whole stream (untimed)."""
        if self._send:
            self._links.drain()
        else:
            assert self._thread is not None
            self._thread.join()

    def bytes_between(self, start_s: float, end_s: float) -> float:
        """Bytes this side completed between two times (linear between completions; the
        receiver's)."""
        times = [self.posted_s, *sorted(self.done_s)]
        return self.message_bytes * (_completed_at(times, end_s) - _completed_at(times, start_s))


def _completed_at(times: list[float], t: float) -> float:
    """Messages completed by time t, interpolated: times[0] is the post, times[k] the k-th
    completion."""
    k = bisect.bisect_right(times, t)
    if k == 0:
        return 0.0
    if k == len(times):
        return float(len(times) - 1)
    before, after = times[k - 1], times[k]
    return (k - 1) + (t - before) / max(after - before, 1e-12)
