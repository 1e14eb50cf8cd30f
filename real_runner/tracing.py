"""A rank's recorder: times spans and writes trace records (simulator.trace_schema).

All times are seconds since the rank's time origin (`start_clock`, set right after a barrier).
Compute spans synchronize the device at both edges so that GPU work is inside the span. Records
can come from the main thread and from send-waiter threads, so writes take a lock; the
watchdog may close the file from its own thread when the run is aborted.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from real_runner.distributed import synchronize
from simulator.trace_schema import (
    SCHEMA_VERSION,
    ComputeRecord,
    HeaderRecord,
    MemoryRecord,
    P2PRecord,
    StepRecord,
    TraceWriter,
)

__all__ = ["Recorder"]


class Recorder:
    """Writes one rank's trace; `close` renames it into place."""

    def __init__(self, path: str | Path, *, rank: int, world_size: int, backend: str,
                 device: torch.device, scenario_name: str) -> None:
        self.device = device
        self.rank = rank
        self.step = 0
        self._origin = time.perf_counter()
        self._origin_unix = time.time()
        self._lock = threading.Lock()
        self._writer: TraceWriter | None = None
        self._header = dict(schema_version=SCHEMA_VERSION, rank=rank, world_size=world_size,
                            backend=backend, device=str(device), hostname=socket.gethostname(),
                            pid=os.getpid(), scenario_name=scenario_name)
        self._path = Path(path)

    def start_clock(self) -> None:
        """Set the time origin (call right after a barrier) and open the trace file."""
        self._origin = time.perf_counter()
        self._origin_unix = time.time()
        header = HeaderRecord(time_origin_unix_s=self._origin_unix, **self._header)
        with self._lock:
            self._writer = TraceWriter(self._path, header)

    def now(self) -> float:
        """Seconds since the time origin."""
        return time.perf_counter() - self._origin

    def to_trace_time(self, perf_counter_s: float) -> float:
        """A time.perf_counter() value as seconds since the time origin."""
        return perf_counter_s - self._origin

    def write(self, record: ComputeRecord | P2PRecord | MemoryRecord | StepRecord) -> None:
        """Append a record (thread-safe; dropped once the trace is closed)."""
        with self._lock:
            if self._writer is not None and not self._writer.closed:
                self._writer.write(record)

    @contextmanager
    def compute(self, action: str, kind: str, chunk: int, microbatch: int) -> Iterator[None]:
        """Time a forward or backward; the record is written when the block exits normally."""
        synchronize(self.device)
        start = self.now()
        yield
        synchronize(self.device)
        self.write(ComputeRecord(step=self.step, action=action, kind=kind, chunk=chunk,
                                 microbatch=microbatch, start_s=start, end_s=self.now()))

    def flush(self) -> None:
        """Push records to the OS (end of each step)."""
        with self._lock:
            if self._writer is not None and not self._writer.closed:
                self._writer.flush()

    def close(self, *, complete: bool, status: str, message: str = "",
              failed_rank: int | None = None, lock_timeout_s: float = -1) -> None:
        """Write the end record and move the trace into place (idempotent).

        `lock_timeout_s` >= 0 is for the watchdog thread: it must not hang on a lock held by a
        main thread that is stuck; after the timeout it closes anyway.
        """
        acquired = self._lock.acquire(timeout=lock_timeout_s)
        try:
            if self._writer is None:  # failed before the clock started: still leave a trace
                header = HeaderRecord(time_origin_unix_s=self._origin_unix, **self._header)
                self._writer = TraceWriter(self._path, header)
            self._writer.close(complete=complete, status=status, message=message,
                               failed_rank=failed_rank)
        finally:
            if acquired:
                self._lock.release()
