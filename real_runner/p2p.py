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
for every outstanding send (the end of a step). A receive blocks the caller until its tensors
are filled; `post_recv` posts one early (the executor posts a header's receive before its
action so that the header never costs a handshake of its own).
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

__all__ = ["Links", "LinkError"]


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


class Links:
    """The process groups and send waiters of one rank."""

    def __init__(self, rank: int, device: torch.device) -> None:
        self.rank, self.device = rank, device
        self._groups: dict[tuple[int, int], dist.ProcessGroup] = {}
        self._created: set[tuple[int, int]] = set()
        self._sends: dict[int, _SendLink] = {}

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
            if self.rank in (src, dst):
                self._groups[(src, dst)] = group
            if self.rank == src:
                self._sends[dst] = _SendLink(group, dst, self.device)

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

    def post_recv(self, src: int, tensors: list[Tensor]) -> list[dist.Work]:
        """Post receives into `tensors` from `src` without waiting; pass the result to
        `wait_recv`. Receives from one peer match its sends in posting order."""
        group = self._groups[(src, self.rank)]
        try:
            return [dist.irecv(t, src, group=group) for t in tensors]
        except Exception as exc:
            raise LinkError(src, f"receive from rank {src} failed: {exc}") from exc

    def wait_recv(self, src: int, works: list[dist.Work]) -> None:
        """Block until receives posted by `post_recv` have filled their tensors."""
        try:
            for work in works:
                work.wait()
            synchronize(self.device)
        except Exception as exc:
            raise LinkError(src, f"receive from rank {src} failed: {exc}") from exc

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
        """Stop the waiter threads (after `drain`)."""
        for link in self._sends.values():
            link.pending.put(None)
        for link in self._sends.values():
            link.thread.join(timeout=5.0)
        self._sends.clear()
