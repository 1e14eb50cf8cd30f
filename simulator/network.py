"""Flows on links: max-min fair bandwidth sharing, recomputed whenever a flow starts or ends.

A *link* is one direction of a cable, keyed by its `(u, v)` node pair, with a capacity in bytes
per second (``math.inf`` for an unlimited link) and a propagation latency in seconds. A *flow*
moves `num_bytes` along a path of links. While a flow is in its bandwidth phase it gets a rate;
the rates of all flows are max-min fair: computed by progressive filling (raise every unfrozen
flow's rate together until some link is full, freeze the flows on that link, repeat). When the
last byte has left, the flow is *delivered* one path latency later, so a lone transfer takes
``latency_s + num_bytes / capacity`` exactly (the alpha-beta model).

Speed matters (a 1,024-GPU step starts several hundred thousand flows), so:
- rates are recomputed only for the connected component of flows that share a finite link
  with a flow that started or ended; unlimited links couple nothing;
- all starts and ends of one instant are batched into one recomputation;
- completions wait in one heap, and one scheduled callback wakes the network at the earliest
  (SimPy events cannot be cancelled: a superseded wake-up finds its time is no longer the
  network's and returns). A flow whose finish moved later keeps its old, earlier heap entry,
  which re-queues it when it pops; only a finish that moved earlier is pushed anew;
- callbacks go through `simulator.sim_env.call_in`, which on the engine's
  `BatchingEnvironment` shares one SimPy event among the callbacks due at the same instant;
- a flow's bytes are counted once on its path's `ByteCounter`, which the path's links sum;
- flows and links keep insertion-ordered dicts, so the order of every floating-point sum, and
  so every result, is the same from run to run.

Per link the network counts bytes (exact integers, credited when a flow's bandwidth phase
ends), busy time, the peak number of concurrent flows and, on request, a timeline of the total
rate for utilization plots. Like SimPy's `Cable` example, latency lives in the network, not in
the sending and receiving processes.

    env = simpy.Environment()
    net = Network(env)
    net.add_link(("gpu0", "sw"), capacity_bytes_per_s=50e9, latency_s=1e-6)
    done = net.transfer([("gpu0", "sw")], 1 << 20)
    env.run(done)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Sequence
from functools import partial

import simpy

from simulator.flows import Flow, Link, LinkKey, LinkStats, NetPath
from simulator.maxmin import component, max_min_rates
from simulator.sim_env import BatchingEnvironment, call_in

__all__ = ["LinkKey", "Link", "Flow", "NetPath", "LinkStats", "Network"]

# A flow is complete when its scheduled finish is within this relative distance of "now":
# SimPy adds delays to the clock, which can land one ulp short of the finish we computed.
_FINISH_REL_TOL = 1e-12


class Network:
    """Links, flows and the max-min fair rates between them, driven by a SimPy environment."""

    def __init__(self, env: simpy.Environment, *, record_timeline: bool = False) -> None:
        self.env = env
        self.record_timeline = record_timeline
        self.links: dict[LinkKey, Link] = {}
        self.num_flows_started = 0
        self.num_recomputations = 0
        """Max-min recomputations over a component of flows."""
        self.num_lone_starts = 0
        """Flows that started alone on their links and skipped the recomputation."""
        self.largest_component = 0
        self._next_flow_id = 0
        self._heap: list[tuple[float, int, Flow]] = []  # (finish_s, flow_id, flow)
        self._wake_at = math.inf
        self._dirty: dict[Link, None] = {}
        self._recompute_pending = False
        self._private_links = 0
        self._deliveries: dict[float, list[Flow]] = {}
        self._call_in = (env.call_in if isinstance(env, BatchingEnvironment)
                         else partial(call_in, env))
        """Schedule a callback (batched with others due at the same instant, if possible)."""

    # -- building ---------------------------------------------------------------------------
    def add_link(self, key: LinkKey, capacity_bytes_per_s: float, latency_s: float = 0.0) -> Link:
        """Add one link direction; capacity may be ``math.inf`` (never a bottleneck)."""
        if key in self.links:
            raise ValueError(f"link {key!r} is already in the network; add each direction once")
        if not capacity_bytes_per_s > 0:
            raise ValueError(f"link {key!r}: capacity_bytes_per_s = {capacity_bytes_per_s!r} must "
                             "be > 0 (use math.inf for an unlimited link)")
        if not latency_s >= 0:
            raise ValueError(f"link {key!r}: latency_s = {latency_s!r} must be >= 0")
        link = Link(key, len(self.links), float(capacity_bytes_per_s), float(latency_s))
        self.links[key] = link
        return link

    def path(self, keys: Iterable[LinkKey]) -> tuple[Link, ...]:
        """Resolve link keys to links (raises KeyError naming an unknown key)."""
        try:
            return tuple(self.links[key] for key in keys)
        except KeyError as exc:
            raise KeyError(f"link {exc.args[0]!r} is not in the network") from None

    def make_path(self, keys: Iterable[LinkKey], *, latency_s: float | None = None,
                  rate_cap_bytes_per_s: float | None = None) -> NetPath:
        """A reusable path: its links, latency (default: their sum) and an optional rate cap.

        A rate cap (e.g. a measured per-pair bandwidth) is a private link of that capacity
        shared by every flow on this path object.
        """
        links = self.path(keys)
        if latency_s is None:
            latency_s = sum(link.latency_s for link in links)
        if rate_cap_bytes_per_s is not None:
            self._private_links += 1  # negative indices: private, not reported
            links = links + (Link(("rate-cap", self._private_links), -self._private_links,
                                  rate_cap_bytes_per_s, 0.0),)
        return NetPath(links, latency_s)

    # -- flows ------------------------------------------------------------------------------
    def transfer(self, keys: Sequence[LinkKey], num_bytes: int, *,
                 latency_s: float | None = None, tag: object = None) -> simpy.Event:
        """Start a flow along link keys; the returned event succeeds with the Flow on delivery."""
        done = self.env.event()
        self.start_flow(self.make_path(keys, latency_s=latency_s), num_bytes,
                        on_delivered=done.succeed, tag=tag)
        return done

    def start_flow(self, path: NetPath, num_bytes: int,
                   on_delivered: Callable[[Flow], None] | None = None,
                   on_sent: Callable[[Flow], None] | None = None,
                   tag: object = None, traffic_class: int = 0) -> Flow:
        """Start a flow of `num_bytes` along `path` now.

        `on_sent(flow)` is called when its last byte has left (the bandwidth phase ends),
        `on_delivered(flow)` one path latency later.
        """
        if num_bytes < 0:
            raise ValueError(f"num_bytes = {num_bytes!r} must be >= 0")
        now = self.env.now
        flow_id = self._next_flow_id
        flow = Flow(flow_id, path, num_bytes, now, on_delivered, tag, traffic_class, on_sent)
        self._next_flow_id = flow_id + 1
        self.num_flows_started += 1
        finite = path.finite
        if num_bytes == 0 or not finite:
            flow.rate_bytes_per_s = math.inf
            self._end_bandwidth_phase(flow, now)
            return flow
        shared = False  # with another flow on a link that could limit it
        for link in path.links:
            flows = link.flows
            flows[flow] = None
            num_flows = len(flows)
            if num_flows == 1:
                link._busy_since = now
            elif not shared and link.capacity_bytes_per_s != math.inf:
                shared = True
            if num_flows > link.peak_num_flows:
                link.peak_num_flows = num_flows
        if not shared:  # alone on every link that could limit it: its own component, no recompute
            rate = flow.rate_bytes_per_s = path.bottleneck_bytes_per_s
            finish = flow._finish_s = flow._queued_s = now + flow._remaining / rate
            heapq.heappush(self._heap, (finish, flow_id, flow))
            self.num_lone_starts += 1
            if self.record_timeline:
                self._record_rates((flow,), now)
            if finish < self._wake_at:
                self._schedule_wake(finish, now)
            return flow
        dirty = self._dirty
        for link in finite:
            dirty[link] = None
        if not self._recompute_pending:
            self._recompute_pending = True
            self._call_in(0.0, self._recompute)
        return flow

    def stats(self) -> list[LinkStats]:
        """Per-link counters, in the order links were added."""
        return [LinkStats(link.key, link.capacity_bytes_per_s, link.latency_s, link.num_bytes,
                          link.busy_s, link.peak_num_flows) for link in self.links.values()]

    @property
    def num_active_flows(self) -> int:
        """Flows still in their bandwidth phase."""
        return len({flow for link in self.links.values() for flow in link.flows})

    # -- internals --------------------------------------------------------------------------
    def _recompute(self, _event: object = None) -> None:
        """Recompute rates of every component touching a dirty link; queue completions."""
        self._recompute_pending = False
        seeds, self._dirty = self._dirty, {}
        now = self.env.now
        flows = component(seeds)
        if not flows:
            return
        self.num_recomputations += 1
        if len(flows) > self.largest_component:
            self.largest_component = len(flows)
        heap = self._heap
        earliest = self._wake_at
        for flow, rate in max_min_rates(flows):
            if rate == flow.rate_bytes_per_s:
                continue
            assert rate > 0.0, f"max-min gave {flow!r} no bandwidth"
            flow._remaining -= flow.rate_bytes_per_s * (now - flow._last_s)
            flow._last_s = now
            flow.rate_bytes_per_s = rate
            remaining = flow._remaining
            finish = now + (remaining if remaining > 0.0 else 0.0) / rate
            flow._finish_s = finish
            if finish < flow._queued_s:  # a later finish keeps its earlier entry
                flow._queued_s = finish
                heapq.heappush(heap, (finish, flow.flow_id, flow))
                if finish < earliest:
                    earliest = finish
        if self.record_timeline:
            self._record_rates(flows, now)
        if earliest < self._wake_at:
            self._schedule_wake(earliest, now)

    def _schedule_wake(self, at_s: float, now: float) -> None:
        self._wake_at = at_s
        self._call_in(max(at_s - now, 0.0), partial(self._wake, at_s))

    def _wake(self, at_s: float, _event: object = None) -> None:
        """End every bandwidth phase due now; re-queue flows that were slowed; wake again."""
        if at_s != self._wake_at:
            return  # superseded by an earlier wake-up; nothing can be due before _wake_at
        now = self.env.now
        heap = self._heap
        limit = now + abs(now) * _FINISH_REL_TOL
        done: list[Flow] = []
        pop, push = heapq.heappop, heapq.heappush
        while heap and heap[0][0] <= limit:
            queued, _, flow = pop(heap)
            if queued != flow._queued_s:
                continue  # superseded by an earlier entry of the same flow
            if flow._finish_s <= limit:
                flow._queued_s = -1.0  # never matches again
                done.append(flow)
            else:  # slowed down since it was queued
                flow._queued_s = flow._finish_s
                push(heap, (flow._finish_s, flow.flow_id, flow))
        self._wake_at = math.inf
        dirty = self._dirty
        record = self.record_timeline
        end_phase = self._end_bandwidth_phase
        for flow in done:
            for link in flow.links:
                flows = link.flows
                del flows[flow]
                if not flows:
                    link.busy_s += now - link._busy_since
                    if record and link.index >= 0:
                        link.rate_timeline.append((now, 0.0))
                elif link.capacity_bytes_per_s != math.inf:
                    dirty[link] = None
            end_phase(flow, now)
        if dirty and not self._recompute_pending:
            self._recompute_pending = True
            self._call_in(0.0, self._recompute)
        if heap:
            self._schedule_wake(heap[0][0], now)

    def _end_bandwidth_phase(self, flow: Flow, now: float) -> None:
        flow.bandwidth_end_s = now
        flow._remaining = 0.0
        counter, cls = flow.counter, flow.traffic_class  # the path's; its links sum them
        counter[cls] = counter.get(cls, 0) + flow.num_bytes
        if flow._on_sent is not None:
            flow._on_sent(flow)
        latency_s = flow.latency_s
        if latency_s > 0:
            # flows ending together with the same latency share one delivery event
            at = now + latency_s
            batch = self._deliveries.get(at)
            if batch is None:
                self._deliveries[at] = [flow]
                self._call_in(latency_s, self._deliver)  # due at now + latency_s = at
            else:
                batch.append(flow)
        else:
            flow.delivered_s = now
            if flow._on_delivered is not None:
                flow._on_delivered(flow)

    def _deliver(self, _event: object = None) -> None:
        now = self.env.now
        for flow in self._deliveries.pop(now):
            flow.delivered_s = now
            if flow._on_delivered is not None:
                flow._on_delivered(flow)

    def _record_rates(self, flows: Sequence[Flow], now: float) -> None:
        """Append the total rate of every reported link the flows cross, where it changed."""
        if len(flows) == 1:
            touched: Iterable[Link] = flows[0].links  # a path crosses a link once
        else:
            touched = {link: None for flow in flows for link in flow.links}
        for link in touched:
            if link.index < 0:
                continue
            link_flows = link.flows
            if len(link_flows) == 1:  # the sum of one positive rate (lone flows: most)
                total = next(iter(link_flows)).rate_bytes_per_s
            else:
                total = sum(f.rate_bytes_per_s for f in link_flows)
            timeline = link.rate_timeline
            if timeline and timeline[-1][0] == now:
                timeline[-1] = (now, total)
            elif not timeline or timeline[-1][1] != total:
                timeline.append((now, total))
