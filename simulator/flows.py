"""The objects the network moves bytes with: links, paths and flows.

A `Link` is one direction of a cable (capacity in bytes/s, ``math.inf`` for unlimited, and a
latency in seconds) with its counters; a `NetPath` is a route resolved to links once and reused;
a `Flow` is one transfer in progress along a path. `simulator/network.py` drives them.
Flows and links are kept in insertion-ordered dicts everywhere, so the order of every
floating-point sum, and so every result, is the same from run to run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["LinkKey", "Link", "Flow", "NetPath", "LinkStats", "ByteCounter"]

LinkKey = tuple[Hashable, Hashable]
"""One direction of a cable: (from node, to node)."""

ByteCounter = dict[int, int]
"""Bytes carried along one path per traffic class. A flow's bytes are counted once, on its
path's counter, rather than on each of its links (a large step ends hundreds of thousands of
flows); a link sums the counters of the paths through it when asked. Integer sums do not
depend on their order."""


class Link:
    """One direction of a cable with its counters."""

    __slots__ = ("key", "index", "capacity_bytes_per_s", "latency_s", "flows", "counters",
                 "peak_num_flows", "busy_s", "_busy_since", "rate_timeline")

    def __init__(self, key: LinkKey, index: int, capacity_bytes_per_s: float,
                 latency_s: float) -> None:
        self.key = key
        self.index = index
        self.capacity_bytes_per_s = capacity_bytes_per_s
        self.latency_s = latency_s
        self.flows: dict[Flow, None] = {}
        """Flows now in their bandwidth phase on this link, in arrival order."""
        self.counters: list[ByteCounter] = []
        """The byte counters of the paths through this link (see `ByteCounter`)."""
        self.peak_num_flows = 0
        self.busy_s = 0.0
        """Time with at least one flow on the link (closed intervals only)."""
        self._busy_since = 0.0
        self.rate_timeline: list[tuple[float, float]] = []
        """(time_s, total rate in bytes/s) at every change, when the network records timelines."""

    @property
    def num_bytes(self) -> int:
        """Bytes carried so far (credited when each flow's bandwidth phase ends)."""
        return sum(sum(counter.values()) for counter in self.counters)

    @property
    def bytes_by_class(self) -> dict[int, int]:
        """The same bytes split by the flows' `traffic_class`."""
        out: dict[int, int] = {}
        for counter in self.counters:
            for traffic_class, num_bytes in counter.items():
                out[traffic_class] = out.get(traffic_class, 0) + num_bytes
        return out

    @property
    def finite(self) -> bool:
        """Whether the link can limit a flow's rate."""
        return self.capacity_bytes_per_s != math.inf

    def __repr__(self) -> str:
        return f"Link({self.key!r}, {self.capacity_bytes_per_s:g} B/s, {self.latency_s:g} s)"


class Flow:
    """One transfer along a path; created by `Network.start_flow`."""

    __slots__ = ("flow_id", "links", "finite", "counter", "num_bytes", "latency_s", "start_s",
                 "bandwidth_end_s", "delivered_s", "rate_bytes_per_s", "_remaining", "_last_s",
                 "_finish_s", "_queued_s", "_on_delivered", "_on_sent", "tag", "traffic_class")

    def __init__(self, flow_id: int, path: NetPath, num_bytes: int, start_s: float,
                 on_delivered: Callable[[Flow], None] | None, tag: object,
                 traffic_class: int = 0, on_sent: Callable[[Flow], None] | None = None) -> None:
        self.flow_id = flow_id
        self.links = path.links
        self.finite = path.finite
        self.counter = path.counter
        self.num_bytes = num_bytes
        self.latency_s = path.latency_s
        self.start_s = start_s
        self.bandwidth_end_s = math.nan
        self.delivered_s = math.nan
        self.rate_bytes_per_s = 0.0
        self._remaining = float(num_bytes)
        self._last_s = start_s
        self._finish_s = math.inf
        """When the bandwidth phase ends at the current rate."""
        self._queued_s = math.inf
        """Time of this flow's earliest entry in the completion heap."""
        self._on_delivered = on_delivered
        self._on_sent = on_sent
        self.tag = tag
        """Anything the caller wants to find again (the engine stores the send it belongs to)."""
        self.traffic_class = traffic_class
        """A small integer the caller uses to split link bytes (e.g. pipeline vs all-reduce)."""

    def __repr__(self) -> str:
        return f"Flow({self.flow_id}, {self.num_bytes} B, tag={self.tag!r})"


class NetPath:
    """A route resolved to links once, reused by every flow along it.

    It counts its flows' bytes and hands its counter to each of its links, which sum them.
    """

    __slots__ = ("links", "finite", "latency_s", "bottleneck_bytes_per_s", "counter")

    def __init__(self, links: tuple[Link, ...], latency_s: float) -> None:
        self.links = links
        self.finite = tuple(link for link in links if link.capacity_bytes_per_s != math.inf)
        """The links that can limit a flow's rate."""
        self.latency_s = latency_s
        self.bottleneck_bytes_per_s = min((link.capacity_bytes_per_s for link in links),
                                          default=math.inf)
        """The rate of a flow alone on the path."""
        self.counter: ByteCounter = {}
        """Bytes of its flows whose bandwidth phase has ended, per traffic class."""
        for link in links:
            link.counters.append(self.counter)

    def __repr__(self) -> str:
        return f"NetPath({[link.key for link in self.links]!r}, {self.latency_s:g} s)"


@dataclass(frozen=True)
class LinkStats:
    """Plain-number summary of one link after a run."""

    key: LinkKey
    capacity_bytes_per_s: float
    latency_s: float
    num_bytes: int
    busy_s: float
    peak_num_flows: int
