"""Simulating a measured run as it was executed: calibrated hardware, measured link, gloo protocol.

Validation simulates the scenario with the calibrated profile (`simulator/calibrate_files.py`)
on a fabric that models where the run happened (the scenario's topology, or the host_loopback
topology with the calibrated link for local processes), and one protocol choice the engine
does not make by itself:

- `eager` (the engine's own semantics, simulator/engine.py): a send's flows start when the send
  is posted, whether or not the receiver has asked yet;
- `rendezvous`: a message's flows start only once both its send and its receive are posted.
  This is what gloo does (a TCP pair transmits an unbound buffer only after the receiver has
  announced its receive), so a receiver that arrives late pays the whole transfer after it
  arrives. The measured runs on CPUs use gloo, so validation defaults to it for gloo traces.

The rendezvous variant is a subclass of the engine that defers the flow start; it uses the
engine's internal `_send` / `_post_recv` hooks (see the note in docs/validation.md: this
belongs in the engine as a StepPlan option).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from simulator.engine import _Engine, StepPlan  # noqa: PLC2701 (see the module docstring)
from simulator.engine_results import build_result
from simulator.engine_state import Channel, Slot
from simulator.results import SimulationResult

__all__ = ["PROTOCOLS", "simulate_with_protocol"]

PROTOCOLS: tuple[str, ...] = ("rendezvous", "eager")
"""Point-to-point protocols validation can simulate."""


class _RendezvousEngine(_Engine):
    """The engine with gloo's send semantics: flows start when both ends have posted."""

    def __init__(self, plan: StepPlan) -> None:
        super().__init__(plan, None)
        self._started: set[int] = set()

    def _send(self, w: int, channel: Channel, num_bytes: int, action: object,
              traffic_class: int) -> None:
        slot = channel.post_send(w, action, num_bytes, self.env.now, traffic_class)
        if slot.recv_w >= 0 and (num_bytes != slot.recv_bytes or action != slot.recv_expects):
            raise self._mismatch(slot)
        if slot.recv_w >= 0:
            self._start(channel, slot)

    def _post_recv(self, w: int, channel: Channel, action: object, partner: object,
                   expected: int) -> Slot:
        slot = super()._post_recv(w, channel, action, partner, expected)
        if slot.send_w >= 0 and id(slot) not in self._started:
            self._start(channel, slot)
        return slot

    def _start(self, channel: Channel, slot: Slot) -> None:
        self._started.add(id(slot))
        slot.pending = len(channel.paths)
        for path in channel.paths:
            self.network.start_flow(path, slot.send_bytes, on_delivered=self._on_flow_delivered,
                                    tag=slot, traffic_class=slot.traffic_class)


def simulate_with_protocol(plan: StepPlan, protocol: Literal["rendezvous", "eager"],
                           options: dict[str, Any] | None = None) -> SimulationResult:
    """Simulate one step of `plan` with the given point-to-point protocol."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol = {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    wall_start = time.perf_counter()
    engine = _RendezvousEngine(plan) if protocol == "rendezvous" else _Engine(plan, None)
    engine.run()
    return build_result(engine, time.perf_counter() - wall_start,
                        {**(options or {}), "protocol": protocol})
