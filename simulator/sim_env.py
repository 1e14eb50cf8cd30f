"""The SimPy environment the engine runs on: same-instant callbacks share one event.

SimPy processes events in (time, priority, insertion) order, one `Environment.step` each: a
heap pop, a call, and a heap push when the event was made. A 1,024-GPU step schedules about
800,000 of them, and two thirds are scheduled for the same instant as the event scheduled just
before them (64 identical replicas finish the same chunk at the same time). `BatchingEnvironment`
puts such a callback on that previous event instead of making a new one.

This keeps SimPy's order exactly. Say event A was the last one scheduled, for time t, and a
callback c is now scheduled for t as well. As its own event, c would come right after A: no
event was inserted between them, and whatever A's callbacks schedule is inserted after c. On
A, c also runs right after A's callbacks. Two things could come between and are ruled out: an
event scheduled between A and c other than through `call_in` (it ends the batch), and an
urgent event (a process start or an interrupt) that A's callbacks schedule for time t, which
SimPy would run before c: callbacks given to `call_in` must not start or interrupt processes.
The engine's never do, and its results are byte-identical with and without batching (tested).

`gc_paused` pauses Python's cyclic garbage collector while a step runs (see its docstring).

    env = BatchingEnvironment()
    env.call_in(1.5, lambda event: print(env.now))
    env.run()
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import simpy
from simpy.events import NORMAL, EventPriority

__all__ = ["Callback", "Wakeup", "BatchingEnvironment", "call_in", "gc_paused"]

Callback = Callable[[object], None]
"""What SimPy calls when an event is processed; it receives the event."""


class Wakeup:
    """A lighter `simpy.Timeout`: callbacks SimPy's event loop calls at a scheduled time.

    `Environment.step` reads only an event's `callbacks` (and `_ok`, to raise a failed event),
    so a wake-up holds just those: no `__dict__`, no argument checks, no value. Its callbacks
    must not read the event they are given (a batched wake-up is shared).
    """

    __slots__ = ("callbacks",)
    _ok = True

    def __init__(self, callbacks: list[Callback]) -> None:
        self.callbacks: list[Callback] | None = callbacks


class BatchingEnvironment(simpy.Environment):
    """A SimPy environment whose `call_in` batches callbacks due at the same instant."""

    def __init__(self, initial_time: float = 0) -> None:
        super().__init__(initial_time)
        self._last: Wakeup | None = None
        """The event scheduled last, if `call_in` scheduled it; None after any other."""
        self._last_at = 0.0
        """Its time."""

    def schedule(self, event: simpy.Event, priority: EventPriority = NORMAL,
                 delay: float = 0) -> None:
        """SimPy's `schedule`; an event scheduled this way ends the current batch."""
        self._last = None
        super().schedule(event, priority, delay)

    def call_in(self, delay: float, callback: Callback) -> None:
        """Call `callback(event)` `delay` seconds from now, in SimPy's order of events."""
        at = self._now + delay  # the same sum SimPy's schedule makes
        last = self._last
        if last is not None and at == self._last_at and last.callbacks is not None:
            last.callbacks.append(callback)
            return
        wakeup = Wakeup([callback])
        super().schedule(wakeup, NORMAL, delay)  # type: ignore[arg-type]
        self._last, self._last_at = wakeup, at


def call_in(env: simpy.Environment, delay: float, callback: Callback) -> None:
    """`env.call_in` on a `BatchingEnvironment`; one `Wakeup` per call on any other."""
    if isinstance(env, BatchingEnvironment):
        env.call_in(delay, callback)
    else:
        env.schedule(Wakeup([callback]), NORMAL, delay)  # type: ignore[arg-type]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector inside the block (reference counting goes on).

    A large step keeps over a million objects alive until it ends (messages, spans, timelines);
    each full collection walks all of them and finds almost nothing: about a quarter of the run,
    more with two processes sharing the memory bus. On the way out, the objects made inside the
    block are moved to the oldest generation (`gc.freeze()` then `gc.unfreeze()`, which only
    splices lists), so the young-generation collections that follow do not walk them all again.
    Everything stays collectable; a full collection still sees every object.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.unfreeze()
        if enabled:
            gc.enable()
