"""Failure side channel: when one rank fails, every other rank stops within the timeout.

A rank blocked in a receive cannot notice by itself that its peer is gone (it would wait for the
process-group timeout, or forever). So every rank runs a watchdog thread that talks to the
rendezvous TCPStore on its own connection, every `interval_s`:
- it bumps its heartbeat key `hb/<rank>`;
- if the key `failure` exists and names another rank, it aborts this process;
- if another rank's heartbeat has not changed for `stale_s`, that rank is presumed dead: the
  watchdog records the failure (first writer wins, so everyone names the same rank) and aborts.
A rank that raises records `failure` itself (`report`). The launcher of `pipesim measure`, which
hosts the store, records a rank that exits badly. Aborting means: the `on_abort` callback closes
the trace as incomplete and prints one message naming the failed rank, then the process exits
with ABORT_EXIT_CODE (os._exit: the main thread may be stuck inside a receive).

Bounds: a raised error stops the others within about one interval; a rank killed outright within
stale_s + interval (stale_s = timeout_s / 2); the process-group timeout (timeout_s) backs both up.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch.distributed as dist

from real_runner.distributed import connect_store

__all__ = ["Failure", "Watchdog", "ABORT_EXIT_CODE", "FAILED_EXIT_CODE", "record_failure",
           "read_failure", "store_prefix"]

FAILED_EXIT_CODE = 1
"""Exit status of the rank that failed."""
ABORT_EXIT_CODE = 3
"""Exit status of a rank stopped because another rank failed."""

_FAILURE_KEY = "failure"
_DONE = "done"


@dataclass(frozen=True)
class Failure:
    """The first failure of a run."""

    rank: int | None
    """The failed rank; None if unknown (e.g. the store itself was lost)."""
    message: str

    def describe(self) -> str:
        """One line naming the failed rank."""
        who = f"rank {self.rank}" if self.rank is not None else "an unknown rank"
        return f"{who} failed: {self.message}"


def store_prefix(run_id: str) -> str:
    """Key prefix of one run in a shared store (PrefixStore adds the separating "/")."""
    return f"pipesim/{run_id}"


def record_failure(store: dist.Store, failure: Failure) -> Failure:
    """Record `failure` unless one is recorded already; returns the one that stands."""
    value = json.dumps({"rank": failure.rank, "message": failure.message})
    stood = store.compare_set(_FAILURE_KEY, "", value)
    return _parse(stood)


def read_failure(store: dist.Store) -> Failure | None:
    """The recorded failure, if any (non-blocking)."""
    if not store.check([_FAILURE_KEY]):
        return None
    return _parse(store.get(_FAILURE_KEY))


def _parse(raw: bytes | str) -> Failure:
    data = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    return Failure(data["rank"], data["message"])


class Watchdog:
    """Heartbeat and failure watcher of one rank (see the module docstring)."""

    def __init__(self, *, host: str, port: int, world_size: int, rank: int, run_id: str,
                 timeout_s: float, on_abort: Callable[[Failure], None]) -> None:
        self.rank, self.world_size = rank, world_size
        self.interval_s = min(1.0, timeout_s / 20)
        self.stale_s = timeout_s / 2
        self._on_abort = on_abort
        raw = connect_store(host, port, world_size, timeout_s)
        self.store = dist.PrefixStore(store_prefix(run_id), raw)
        self._stop = threading.Event()
        self._beats = 0
        self._seen: dict[int, tuple[bytes | None, float]] = {}
        self._thread = threading.Thread(target=self._loop, name="watchdog", daemon=True)

    def start(self) -> None:
        """Begin heartbeating and watching."""
        self._beat()
        now = time.monotonic()
        self._seen = {r: (None, now) for r in range(self.world_size) if r != self.rank}
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and mark this rank finished, so no peer mistakes it for dead."""
        self._stop.set()
        self._thread.join(timeout=5 * self.interval_s + 1)
        try:
            self.store.set(f"hb/{self.rank}", _DONE)
        except Exception:  # the store may already be gone at shutdown; nothing to tell then
            pass

    def report(self, message: str, rank: int | None = None) -> Failure:
        """Record a failure (this rank's unless `rank` says otherwise); returns the first one."""
        return record_failure(self.store, Failure(self.rank if rank is None else rank, message))

    def wait_for_failure(self, timeout_s: float) -> Failure | None:
        """Poll for a failure recorded by someone else, up to `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            failure = read_failure(self.store)
            if failure is not None or time.monotonic() >= deadline:
                return failure
            time.sleep(self.interval_s / 4)

    def _beat(self) -> None:
        self._beats += 1
        self.store.set(f"hb/{self.rank}", str(self._beats))

    def _loop(self) -> None:
        unreachable_since: float | None = None
        while not self._stop.wait(self.interval_s):
            try:
                failure = self._poll()
                unreachable_since = None
            except Exception as exc:  # the store is unreachable
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since < self.stale_s:
                    continue
                failure = Failure(None, f"lost the coordination store ({exc}); the launcher or "
                                        f"rank hosting it is gone")
            if failure is not None and failure.rank != self.rank and not self._stop.is_set():
                self._on_abort(failure)
                return

    def _poll(self) -> Failure | None:
        self._beat()
        failure = read_failure(self.store)
        if failure is not None:
            return failure
        now = time.monotonic()
        for peer, (last_value, last_change) in self._seen.items():
            key = f"hb/{peer}"
            value = self.store.get(key) if self.store.check([key]) else None
            if value == _DONE.encode():
                continue
            if value != last_value:
                self._seen[peer] = (value, now)
            elif now - last_change > self.stale_s:
                return record_failure(self.store, Failure(
                    peer, f"no heartbeat for {now - last_change:.0f} s (process died or hung)"))
        return None
