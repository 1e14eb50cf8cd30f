"""Max-min fair rates by progressive filling, over one connected component of flows.

Progressive filling raises every unfrozen flow's rate together until some link is full, freezes
the flows on that link at that rate, and repeats. Only finite links constrain, and only flows
that share a finite link can change each other's rates, so the network recomputes one component
at a time: `component` finds it from the links that changed, `max_min_rates` fills it.
"""

from __future__ import annotations

import heapq

from simulator.flows import Flow, Link

__all__ = ["component", "max_min_rates"]


def component(seeds: dict[Link, None]) -> list[Flow]:
    """Flows connected to the seed links through shared finite links, in discovery order."""
    flows: dict[Flow, None] = {}
    seen = dict(seeds)
    stack = list(seeds)
    stack.reverse()
    while stack:
        link = stack.pop()
        for flow in link.flows:
            if flow not in flows:
                flows[flow] = None
                for other in flow.finite:
                    if other not in seen:
                        seen[other] = None
                        stack.append(other)
    return list(flows)


def max_min_rates(flows: list[Flow]) -> list[tuple[Flow, float]]:
    """Max-min fair rates by progressive filling over the finite links of `flows`.

    Every link's flows must all be in `flows` (a whole component). Bottlenecks are taken from
    a heap of fair shares remaining/unfrozen; freezing flows only raises other links' shares,
    so a popped share that has grown since it was pushed is pushed back and retried.
    Returns (flow, rate) in the order of `flows`.
    """
    if len(flows) == 1:
        flow = flows[0]
        return [(flow, min(link.capacity_bytes_per_s for link in flow.finite))]
    remaining: dict[Link, float] = {}
    unfrozen: dict[Link, int] = {}
    for flow in flows:
        for link in flow.finite:
            if link not in remaining:
                remaining[link] = link.capacity_bytes_per_s
                unfrozen[link] = len(link.flows)
    heap = [(cap / unfrozen[link], link.index, link) for link, cap in remaining.items()]
    heapq.heapify(heap)
    rates: dict[Flow, float] = {}
    while heap:
        share, key, link = heapq.heappop(heap)
        count = unfrozen[link]
        if count == 0:
            continue
        current = remaining[link] / count
        if current > share:
            heapq.heappush(heap, (current, key, link))
            continue
        for flow in link.flows:
            if flow in rates:
                continue
            rates[flow] = share
            for other in flow.finite:
                unfrozen[other] -= 1
                left = remaining[other] - share
                remaining[other] = left if left > 0.0 else 0.0
        assert unfrozen[link] == 0
    return [(flow, rates[flow]) for flow in flows]
