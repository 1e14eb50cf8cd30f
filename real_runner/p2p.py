"""Point-to-point links between pipeline ranks: asynchronous sends, blocking receives.

Every directed pair (src, dst) that carries pipeline messages gets its own two-rank process
group. On NCCL a group's point-to-point operations run in order on one stream, so if one group
carried both directions, a send could queue behind a receive whose matching send queues behind
ours on the peer, and both ranks would hang. With one group per direction every stream carries
messages one way only, in the order the schedule sends them (simulator.schedule guarantees
that each pair receives in send order), so no stream ever waits on itself. gloo needs no such
care but gets the same structure, so the CPU tests exercise the GPU's ordering.

A send returns at once. A per-link waiter thread blocks until each send completes and then
calls the caller's `on_complete(end_time)`; sends on one link complete in order, so the
thread's times are the real completion times (to the scheduler's resolution). `drain()` waits
for every outstanding send (the end of a step).

Receives are posted ahead of need (`post_recv`) and waited for later (`wait_recv`); `recv`
does both. On gloo a receive posted after its send costs a handshake through both ranks'
communication threads, which on a host whose cores all compute takes milliseconds
(docs/accuracy-report.md), so the executor posts each receive as soon as the ones before it
from the same peer are posted. A message of many tensors can be posted by the inbound link's
poster thread instead (`background=True`), so the rank does not spend its own time on the
posting calls.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
from torch import Tensor

from real_runner.distributed import synchronize, wait_until_complete

__all__ = ["Links", "LinkError", "Receipt"]


class LinkError(RuntimeError):
    """A transfer with a peer failed (the peer died, or the process group timed out)."""

    def __init__(self, peer: int, message: str) -> None:
        super().__init__(message)
        self.peer = peer


_Item = tuple[list[dist.Work], list[Tensor], Callable[[float], None]]


class _SendLink:
    """One outgoing directed link: its process group and its waiter thread."""

    def __init__(self, group: dist.ProcessGroup, dst: int, device: torch.device) -> None:
        self.group, self.dst, self.device = group, dst, device
        self.pending: queue.Queue[_Item | None] = queue.Queue()
        self.error: LinkError | None = None
        self.thread = threading.Thread(target=self._wait_loop, name=f"send-to-{dst}", daemon=True)
        self.thread.start()

    def _wait_loop(self) -> None:
        while (item := self.pending.get()) is not None:
            works, _keepalive, on_complete = item
            try:
                if self.error is None:
                    for work in works:
                        wait_until_complete(work, self.device)
                    on_complete(time.perf_counter())
            except Exception as exc:  # reported to the main thread by Links.check()
                self.error = LinkError(self.dst, f"send to rank {self.dst} failed: {exc}")
            finally:
                self.pending.task_done()
        self.pending.task_done()


class Receipt:
    """Receives posted on one inbound link: `tensors` fill in order."""

    def __init__(self, tensors: list[Tensor], background: bool) -> None:
        self.tensors, self.background = list(tensors), background
        self.works: list[dist.Work] = []
        """The posted receives not waited for yet."""
        self.posted = threading.Event()
        self.error: LinkError | None = None


class _RecvLink:
    """One inbound directed link: its process group and the thread that posts receives in order.

    A receipt is posted by the caller itself when nothing is queued before it and it is not
    marked `background` (no thread hop); otherwise the poster thread posts it. Either way
    receives are posted in submission order.
    """

    def __init__(self, group: dist.ProcessGroup, src: int, device: torch.device) -> None:
        self.group, self.src, self.device = group, src, device
        self.pending: queue.Queue[Receipt | None] = queue.Queue()
        self.lock = threading.Lock()
        self.queued = 0
        self.error: LinkError | None = None
        self.thread = threading.Thread(target=self._post_loop, name=f"recv-from-{src}",
                                       daemon=True)
        self.thread.start()

    def submit(self, receipt: Receipt) -> None:
        with self.lock:
            if self.queued == 0 and not receipt.background:
                self._post(receipt)
                return
            self.queued += 1
        self.pending.put(receipt)

    def _post(self, receipt: Receipt) -> None:
        try:
            if self.error is not None:
                raise self.error
            receipt.works = self._irecv(receipt.tensors)
        except Exception as exc:  # reported to the waiting caller by Links.wait_recv
            error = exc if isinstance(exc, LinkError) else \
                LinkError(self.src, f"receive from rank {self.src} failed: {exc}")
            self.error = receipt.error = error
        finally:
            receipt.posted.set()

    def _irecv(self, tensors: list[Tensor]) -> list[dist.Work]:
        return [dist.irecv(t, self.src, group=self.group) for t in tensors]

    def _post_loop(self) -> None:
        while (receipt := self.pending.get()) is not None:
            self._post(receipt)
            with self.lock:
                self.queued -= 1


class Links:
    """The process groups and send waiters of one rank."""

    def __init__(self, rank: int, device: torch.device) -> None:
        self.rank, self.device = rank, device
        self._created: set[tuple[int, int]] = set()
        self._sends: dict[int, _SendLink] = {}
        self._recvs: dict[int, _RecvLink] = {}

    def ensure(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Create the groups of the given directed pairs that do not exist yet.

        Collective: every rank must call it with the same pairs (in any order).
        """
        for src, dst in sorted(set(pairs)):
            assert src != dst, "a rank does not send to itself"
            if (src, dst) in self._created:
                continue
            group = dist.new_group([src, dst])  # every rank takes part in creating it
            self._created.add((src, dst))
            if self.rank == src:
                self._sends[dst] = _SendLink(group, dst, self.device)
            if self.rank == dst:
                self._recvs[src] = _RecvLink(group, src, self.device)

    def isend(self, dst: int, tensors: list[Tensor], on_complete: Callable[[float], None]) -> None:
        """Start sending `tensors` to `dst` in order; `on_complete(t)` runs when all are sent."""
        self.check()
        link = self._sends[dst]
        try:
            works = [dist.isend(t, dst, group=link.group) for t in tensors]
        except Exception as exc:
            raise LinkError(dst, f"send to rank {dst} failed: {exc}") from exc
        link.pending.put((works, tensors, on_complete))

    def recv(self, src: int, tensors: list[Tensor]) -> None:
        """Receive into `tensors` from `src`, in order; returns when they are filled."""
        self.wait_recv(src, self.post_recv(src, tensors))

    def post_recv(self, src: int, tensors: list[Tensor],
                  background: bool = False) -> Receipt:
        """Post receives into `tensors` from `src` without waiting; pass the result to
        `wait_recv`. With `background`, the link's poster thread makes the posting calls.
        Receives from one peer match its sends in posting order."""
        receipt = Receipt(tensors, background)
        self._recvs[src].submit(receipt)
        return receipt

    def wait_recv(self, src: int, receipt: Receipt) -> list[Tensor]:
        """Block until the receives of `receipt` have filled their tensors; returns them."""
        receipt.posted.wait()
        if receipt.error is not None:
            raise receipt.error
        try:
            for work in receipt.works:
                work.wait()
            synchronize(self.device)
        except Exception as exc:
            raise LinkError(src, f"receive from rank {src} failed: {exc}") from exc
        return receipt.tensors

    def check(self) -> None:
        """Raise the first send failure a waiter thread has seen."""
        for link in self._sends.values():
            if link.error is not None:
                raise link.error

    def drain(self) -> None:
        """Wait until every send issued so far has completed."""
        for link in self._sends.values():
            link.pending.join()
        self.check()

    def close(self) -> None:
        """Stop the waiter and poster threads (after `drain`)."""
        links: list[_SendLink | _RecvLink] = [*self._sends.values(), *self._recvs.values()]
        for link in links:
            link.pending.put(None)
        for link in links:
            link.thread.join(timeout=5.0)
        self._sends.clear()
        self._recvs.clear()
