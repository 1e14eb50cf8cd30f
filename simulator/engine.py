"""The discrete-event engine: one SimPy process per pipeline rank of every replica.

Each rank process walks its schedule's action list (`simulator.schedule`). A forward or backward
holds the rank for the chunk's duration from the cost model. A send is asynchronous: it starts
one flow per TP rank on the network (`simulator/network.py`) and the rank goes on. A receive
blocks only until its message is delivered. Messages are matched per channel, i.e. per (replica,
sending rank, receiving rank, direction), in posting order, the way NCCL matches point-to-point
operations per peer; the receiver then checks that the message is the one it expects (the
partner action and the byte count) and raises a `ScheduleError` naming both ends otherwise.
A delivered message may also lengthen each end's next compute by what moving its bytes took
from the cores that end computed on (StepPlan.send_cpu_s_per_byte, recv_cpu_s_per_byte; zero by
default). When a rank finishes its last backward it joins the ring all-reduce of its gradients
(2(d-1) steps per (pipeline rank, TP rank) position, each a flow to the next replica) while
other ranks may still compute. If the event queue empties while a process still waits, the schedule
deadlocked: the error lists every rank's blocked action.

How it stays fast (a 1,024-GPU step is about 1.8 million events; docs/simulator.md, Speed):
a rank's process is a generator that yields the seconds to hold the rank or the message slot
to wait for, and `_drive` resumes it from a SimPy callback: `simpy.Process` minus what a step
does not use (interrupts, return values, the active process). Callbacks due at the same instant
share one SimPy event (`simulator/sim_env.py`), action lists are compiled once per pipeline rank
(`simulator/engine_ops.py`), and the cyclic garbage collector is paused while the step runs.
None of this changes the order of events, so results are byte-identical to an engine with one
`simpy.Process` per rank and one `simpy.Timeout` per wake-up.

The memory timeline follows `simulator/memory.py`: model states from the start; a chunk's
received boundary tensors at its RECV_F, its activations at its forward, all of it released at
the end of its backward. Depth sources reused from a rank's cache were never received again, so
they are stored once per rank (the manifest's cached modes).

    result = simulate_plan(plan)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator

from simulator.engine_ops import B, F, SEND, ChannelKey, compile_rank
from simulator.engine_state import Channel, EngineState, Slot
from simulator.errors import ScheduleError
from simulator.fabric import ideal_fabric
from simulator.network import Flow, NetPath, Network
from simulator.results import ComputeSpan, SimulationResult
from simulator.sim_env import BatchingEnvironment, gc_paused
from simulator.step_plan import P2P_PROTOCOLS, RankMemoryPlan, StepPlan

__all__ = ["P2P_PROTOCOLS", "RankMemoryPlan", "StepPlan", "simulate_plan"]

PIPELINE, ALLREDUCE = 0, 1
"""Traffic classes of flows."""
_NAN = math.nan


def simulate_plan(plan: StepPlan, *, progress: Callable[[int, int], None] | None = None,
                  options: dict[str, object] | None = None) -> SimulationResult:
    """Simulate one training step of `plan`.

    Raises:
        ScheduleError: a size or order mismatch between a send and its receive, or a deadlock.
    """
    from simulator.engine_results import build_result  # noqa: PLC0415 (keeps this module small)

    wall_start = time.perf_counter()
    with gc_paused():
        runner = _Engine(plan, progress)
        runner.run()
        return build_result(runner, time.perf_counter() - wall_start, options or {})


class _Engine:
    """The processes, channels and network of one simulated step."""

    def __init__(self, plan: StepPlan, progress: Callable[[int, int], None] | None) -> None:
        schedule = plan.schedule
        self.plan = plan
        self.env = BatchingEnvironment()
        self.network = Network(self.env, record_timeline=plan.record_link_timeline)
        fabric = plan.fabric or ideal_fabric(plan.num_replicas, schedule.num_stages,
                                             plan.tensor_parallel)
        for key, (capacity, latency) in fabric.links.items():
            self.network.add_link(key, capacity, latency)
        self.fabric = fabric
        self._route = fabric.cached_route()
        self.P = schedule.num_stages
        self.state = EngineState(plan.num_replicas * self.P)
        self._progress = progress
        self._num_compute_total = sum(
            1 for acts in schedule.actions.values() for a in acts if a.kind.is_compute
        ) * plan.num_replicas
        self._rendezvous = plan.p2p_protocol == "rendezvous"
        self._cpu_costs = plan.send_cpu_s_per_byte > 0 or plan.recv_cpu_s_per_byte > 0
        """Whether transfers slow the compute beside them (then ranks track their compute)."""
        self._channels: dict[tuple[object, ...], Channel] = {}
        self._paths: dict[tuple[object, object], NetPath] = {}
        compiled = [compile_rank(plan, pp) for pp in range(self.P)]
        self._ops = [ops for ops, _ in compiled]
        """Per pipeline rank: its compiled actions (`simulator/engine_ops.py`)."""
        self._channel_keys = [keys for _, keys in compiled]
        """Per pipeline rank: the channel key of each channel index its ops use."""
        num_ring_steps = max(map(len, plan.allreduce_step_bytes), default=0)
        self._ring_actions = tuple(("AR", step) for step in range(num_ring_steps))
        """The action of each ring all-reduce step, shared by every rank and both ends."""

    # -- channels and paths ----------------------------------------------------------------
    def _channel(self, dp: int, key: ChannelKey) -> Channel:
        full = (dp,) + key
        channel = self._channels.get(full)
        if channel is None:
            src_pp, dst_pp, _ = key
            paths = [self._path(dp, src_pp, dp, dst_pp, tp)
                     for tp in range(self.plan.tensor_parallel)]
            channel = self._channels[full] = Channel(dp * self.P + src_pp, dp * self.P + dst_pp,
                                                     paths)
        return channel

    def _path(self, src_dp: int, src_pp: int, dst_dp: int, dst_pp: int, tp: int) -> NetPath:
        """The network path of one TP rank's flows between two ranks (one object per GPU pair,
        so a measured per-pair bandwidth cap is shared by all flows of the pair)."""
        gpu_of = self.fabric.gpu_of
        src, dst = gpu_of(src_dp, src_pp, tp), gpu_of(dst_dp, dst_pp, tp)
        path = self._paths.get((src, dst))
        if path is None:
            latency_s, cap = self.fabric.pair_overrides.get((src, dst), (None, None))
            path = self._paths[(src, dst)] = self.network.make_path(
                self._route(src, dst), latency_s=latency_s, rate_cap_bytes_per_s=cap)
        return path

    # -- running ----------------------------------------------------------------------------
    def run(self) -> None:
        with gc_paused():
            for w in range(self.plan.num_replicas * self.P):
                self._drive(self._rank_process(w))
            self.env.run()
        if not all(self.state.done):
            raise ScheduleError(self._deadlock_message())
        for channel in self._channels.values():
            channel.release()

    def _drive(self, process: Generator[float | Slot, None, None]) -> None:
        """Run a rank's `process`: it yields a number of seconds to hold the rank, or a
        message slot to wait for (`_on_flow_delivered` resumes it). Starting every rank in
        order before `env.run()` matches SimPy's urgent process starts at time 0, which all run
        before anything else."""
        advance, call_in = process.__next__, self.env.call_in

        def resume(_event: object = None) -> None:
            try:
                wait = advance()
            except StopIteration:
                return
            if wait.__class__ is Slot:
                wait.waiter = resume  # type: ignore[union-attr]
            else:
                call_in(wait, resume)  # type: ignore[arg-type]

        resume()

    def _rank_process(self, w: int) -> Generator[float | Slot, None, None]:
        env, state = self.env, self.state
        dp, pp = divmod(w, self.P)
        memory = self.plan.memory[pp] if self.plan.memory is not None else None
        if memory is not None:
            state.alloc(w, 0.0, memory.base_bytes)
        keys = self._channel_keys[pp]
        channels: list[Channel | None] = [None] * len(keys)
        position, busy_s, compute_end_s = state.position, state.busy_s, state.compute_end_s
        add_span, alloc, progress = state.spans.append, state.alloc, self._progress
        make = tuple.__new__  # ComputeSpan(...) less its Python-level __new__
        send, post_recv = self._send, self._post_recv
        recv_overhead_s = self.plan.recv_overhead_s
        comm_wait_s, cpu_costs = state.comm_wait_s, self._cpu_costs
        compute_start_s, cpu_debt_s = state.compute_start_s, state.cpu_debt_s
        for index, op in enumerate(self._ops[pp]):
            code = op[0]
            if code <= B:
                start = env.now
                if code == F and op[4]:
                    alloc(w, start, op[4])
                position[w] = index
                if cpu_costs:
                    compute_start_s[w] = start
                    debt_s, cpu_debt_s[w] = cpu_debt_s[w], 0.0
                    yield op[3] + debt_s
                    compute_start_s[w] = _NAN
                else:
                    yield op[3]
                end = env.now
                busy_s[w] += end - start
                add_span(make(ComputeSpan, (dp, pp, "F" if code == F else "B", op[1], op[2],
                                            start, end)))
                if code == B and op[4]:
                    alloc(w, end, -op[4])
                compute_end_s[w] = end
                state.num_compute_done += 1
                if progress is not None and state.num_compute_done % 4096 == 0:
                    progress(state.num_compute_done, self._num_compute_total)
                if op[6]:  # the runner's own work before its next action
                    comm_wait_s[w] += op[6]
                    yield op[6]
                continue
            channel = channels[op[3]]
            if channel is None:
                channel = channels[op[3]] = self._channel(dp, keys[op[3]])
            host_s = op[6]
            if code == SEND:
                send(w, channel, op[4], op[5], PIPELINE)
                if host_s:
                    position[w] = index
                    comm_wait_s[w] += host_s
                    yield host_s
                continue
            if host_s:  # posting the receives
                position[w] = index
                comm_wait_s[w] += host_s
                yield host_s
            expected, num_bytes, partner = op[4]
            if num_bytes:
                alloc(w, env.now, num_bytes)
            slot = post_recv(w, channel, op[5], partner, expected)
            if slot.delivered_s != slot.delivered_s:  # NaN: not delivered yet
                wait_start = env.now
                position[w] = index
                yield slot
                self._account_wait(w, wait_start, slot.posted_s)
            elif recv_overhead_s:
                position[w] = index
                comm_wait_s[w] += recv_overhead_s
                yield recv_overhead_s
            slot.received_s = env.now
        yield from self._allreduce(w, dp, pp)
        state.end_s[w] = env.now
        state.done[w] = True

    def _send(self, w: int, channel: Channel, num_bytes: int, action: object,
              traffic_class: int) -> None:
        slot = channel.post_send(w, action, num_bytes, self.env.now, traffic_class)
        if slot.recv_w >= 0 and (num_bytes != slot.recv_bytes or action != slot.recv_expects):
            raise self._mismatch(slot)
        if not self._rendezvous or slot.recv_w >= 0:
            if channel.in_flight is None:  # as _ready
                self._start(channel, slot)
            else:
                channel.queue.append(slot)

    def _ready(self, channel: Channel, slot: Slot) -> None:
        """Transmit now, or after the messages before it on the channel."""
        if channel.in_flight is None:
            self._start(channel, slot)
        else:
            channel.queue.append(slot)

    def _start(self, channel: Channel, slot: Slot) -> None:
        """Transmit a message: one flow per TP rank."""
        channel.in_flight = slot
        slot.started_s = now = self.env.now
        if self._cpu_costs:
            slot.src_busy_s = self.state.busy_now(channel.src_w, now)
            slot.dst_busy_s = self.state.busy_now(channel.dst_w, now)
        slot.pending = slot.unsent = len(channel.paths)
        start_flow, num_bytes, cls = self.network.start_flow, slot.send_bytes, slot.traffic_class
        delivered, sent = self._on_flow_delivered, self._on_flow_sent
        for path in channel.paths:
            start_flow(path, num_bytes, delivered, sent, slot, cls)

    def _on_flow_sent(self, flow: Flow) -> None:
        slot: Slot = flow.tag
        slot.unsent -= 1
        if slot.unsent == 0:
            channel = slot.channel
            channel.in_flight = None
            if channel.queue:
                self._start(channel, channel.queue.popleft())

    def _post_recv(self, w: int, channel: Channel, action: object, partner: object,
                   expected: int) -> Slot:
        slot = channel.post_recv(w, action, partner, expected, self.env.now)
        if slot.send_w >= 0:
            if slot.send_bytes != expected or slot.send_action != partner:
                raise self._mismatch(slot)
            if self._rendezvous:  # the sender was waiting for this receive
                delay_s = self.plan.late_receive_overhead_s
                if delay_s > 0:
                    self.env.call_in(delay_s, lambda _event: self._ready(channel, slot))
                else:
                    self._ready(channel, slot)
        return slot

    def _account_wait(self, w: int, wait_start: float, posted_s: float) -> None:
        """Split a receive's wait: before the peer posted (idle), after it (communication)."""
        in_flight_from = posted_s if posted_s > wait_start else wait_start
        self.state.idle_wait_s[w] += in_flight_from - wait_start
        self.state.comm_wait_s[w] += self.env.now - in_flight_from

    def _on_flow_delivered(self, flow: Flow) -> None:
        slot: Slot = flow.tag
        slot.pending -= 1
        if slot.pending == 0:
            slot.delivered_s = self.env.now
            if self._cpu_costs:
                self._charge_cpu(slot)
            if slot.waiter is not None:  # as Event.succeed(): now, after what is queued
                self.env.call_in(0.0, slot.waiter)

    def _charge_cpu(self, slot: Slot) -> None:
        """Add a delivered message's CPU cost to each end's next compute, for the share of its
        flight that overlapped that end's compute."""
        now, state, plan = self.env.now, self.state, self.plan
        flight_s = now - slot.started_s
        if flight_s <= 0:
            return
        channel = slot.channel
        for w, busy_then, per_byte in ((channel.src_w, slot.src_busy_s, plan.send_cpu_s_per_byte),
                                       (channel.dst_w, slot.dst_busy_s, plan.recv_cpu_s_per_byte)):
            overlap_s = state.busy_now(w, now) - busy_then
            if per_byte and overlap_s > 0:
                state.cpu_debt_s[w] += per_byte * slot.send_bytes * min(1.0, overlap_s / flight_s)

    def _allreduce(self, w: int, dp: int, pp: int) -> Generator[float | Slot, None, None]:
        steps = self.plan.allreduce_step_bytes[pp] if self.plan.allreduce_step_bytes else ()
        if not steps:
            return
        self.state.allreduce_start_s[w] = self.env.now
        out_channel, in_channel = self._ring_channels(dp, pp)
        base = len(self._ops[pp])
        for step, num_bytes in enumerate(steps):
            self.state.position[w] = base + step
            action = self._ring_actions[step]
            self._send(w, out_channel, num_bytes, action, ALLREDUCE)
            slot = self._post_recv(w, in_channel, action, action, num_bytes)
            if slot.delivered_s != slot.delivered_s:
                wait_start = self.env.now
                yield slot
                self._account_wait(w, wait_start, slot.posted_s)
            slot.received_s = self.env.now

    def _ring_channels(self, dp: int, pp: int) -> tuple[Channel, Channel]:
        d, replicas = self.plan.ring_size or self.plan.num_replicas, self.plan.num_replicas
        t = self.plan.tensor_parallel
        if replicas == 1:  # the symmetry reduction (or d == 1): my successor is like me
            key = (dp, "ring", pp, dp)
            channel = self._channels.get(key)
            if channel is None:
                rep = self.fabric.allreduce_route
                paths = []
                for tp in range(t):
                    keys, latency_s = rep(dp, pp, tp) if rep else ((), 0.0)
                    paths.append(self.network.make_path(keys, latency_s=latency_s))
                channel = self._channels[key] = Channel(dp * self.P + pp, dp * self.P + pp, paths)
            return channel, channel
        assert d == replicas, "a partial ring needs the symmetry reduction"
        nxt, prv = (dp + 1) % d, (dp - 1) % d
        channels = []
        for src, dst in ((dp, nxt), (prv, dp)):
            key = (src, "ring", pp, dst)
            channel = self._channels.get(key)
            if channel is None:
                paths = [self._path(src, pp, dst, pp, tp) for tp in range(t)]
                channel = self._channels[key] = Channel(src * self.P + pp, dst * self.P + pp,
                                                        paths)
            channels.append(channel)
        return channels[0], channels[1]

    # -- errors -----------------------------------------------------------------------------
    def _where(self, w: int) -> str:
        dp, pp = divmod(w, self.P)
        return f"rank {pp} of replica {dp}" if self.plan.num_replicas > 1 else f"rank {pp}"

    def _mismatch(self, slot: Slot) -> ScheduleError:
        """The error for a receiver and the message matched to it by channel order."""
        send, recv, partner = slot.send_action, slot.recv_action, slot.recv_expects
        sender, receiver = self._where(slot.send_w), self._where(slot.recv_w)
        if slot.send_bytes != slot.recv_bytes:
            return ScheduleError(
                f"size mismatch: {sender} {send} sends {slot.send_bytes} bytes per GPU but "
                f"{receiver} {recv} expects {slot.recv_bytes} bytes; messages between two "
                "ranks are matched in posting order, so the receive order must equal the send "
                "order and both ends must use the same boundary manifest")
        return ScheduleError(
            f"order mismatch: {receiver} {recv} expects {partner} from {sender}, but the next "
            f"message on that channel is {send}; post receives in the peer's send order")

    def _deadlock_message(self) -> str:
        state, lines = self.state, []
        for w in range(len(state.done)):
            if state.done[w]:
                continue
            dp, pp = divmod(w, self.P)
            index = state.position[w]
            ops = self._ops[pp]
            what = (str(ops[index][5]) if index < len(ops)
                    else f"gradient all-reduce step {index - len(ops)}")
            lines.append(f"{self._where(w)} blocked at {what} (action {index} of {len(ops)})")
        return ("deadlock: the simulation ran out of events with ranks still waiting; "
                + "; ".join(lines) + ". Check that every receive has a matching send that can "
                "be reached before it")
