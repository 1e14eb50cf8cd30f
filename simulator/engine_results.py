"""Turn the engine's raw counters into a `SimulationResult` (plain numbers, no SimPy objects)."""

from __future__ import annotations

import math
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from simulator.results import LinkStats, RankStats, SimulationResult, Transfer
from simulator.sim_env import gc_paused

if TYPE_CHECKING:
    from simulator.engine import _Engine

__all__ = ["build_result"]


def build_result(engine: _Engine, wall_s: float, options: dict[str, Any]) -> SimulationResult:
    """The result of a finished run of `engine`."""
    plan, state, network = engine.plan, engine.state, engine.network
    P, t = engine.P, plan.tensor_parallel
    step_s = max(state.end_s, default=0.0)
    pipeline_s = max(state.compute_end_s, default=0.0)
    ranks = []
    for w in range(len(state.done)):
        dp, pp = divmod(w, P)
        ar_start = state.allreduce_start_s[w]
        ranks.append(RankStats(
            dp_index=dp, pp_index=pp,
            gpus=[str(engine.fabric.gpu_of(dp, pp, tp)) for tp in range(t)],
            busy_s=state.busy_s[w], comm_wait_s=state.comm_wait_s[w],
            idle_s=step_s - state.busy_s[w] - state.comm_wait_s[w],
            compute_end_s=state.compute_end_s[w], end_s=state.end_s[w],
            allreduce_s=0.0 if math.isnan(ar_start) else state.end_s[w] - ar_start,
            peak_memory_bytes=state.peak_memory_bytes[w],
            memory_timeline=state.memory_timeline[w]))
    mean_busy = sum(state.busy_s) / max(len(state.busy_s), 1)
    bubble = 1.0 - mean_busy / pipeline_s if pipeline_s > 0 else 0.0
    links = [_link_stats(engine, link, step_s) for link in network.links.values()]
    spans = state.spans
    num_messages = sum(ch.num_sent for ch in engine._channels.values())
    stats = {
        "wall_s": wall_s,
        "num_compute_actions": len(spans),
        "num_messages": num_messages,
        "num_flows": network.num_flows_started,
        "num_rate_recomputations": network.num_recomputations,
        "largest_max_min_component": network.largest_component,
        "num_events": (len(spans) + 2 * num_messages + 2 * network.num_flows_started
                       + network.num_recomputations),
    }
    stats["events_per_s"] = stats["num_events"] / wall_s if wall_s > 0 else 0.0
    return SimulationResult(
        name=plan.name, step_time_s=step_s, pipeline_time_s=pipeline_s, bubble_fraction=bubble,
        num_replicas=plan.num_replicas, num_stages=P, tensor_parallel=t, ranks=ranks,
        links=links, spans=spans, transfer_source=lambda: _transfers(engine), stats=stats,
        options={"fabric": engine.fabric.description, **options})


def _link_stats(engine: _Engine, link: Any, step_s: float) -> LinkStats:
    capacity = link.capacity_bytes_per_s
    u, v = link.key
    utilization = link.num_bytes / (capacity * step_s) if capacity != math.inf and step_s else 0.0
    return LinkStats(
        src=str(u), dst=str(v), link_kind=engine.fabric.link_kinds.get(link.key, ""),
        capacity_bytes_per_s=capacity, latency_s=link.latency_s,
        pipeline_bytes=link.bytes_by_class.get(0, 0),
        allreduce_bytes=link.bytes_by_class.get(1, 0), busy_s=link.busy_s,
        utilization=utilization, peak_concurrent_flows=link.peak_num_flows,
        rate_timeline=list(link.rate_timeline))


def _transfers(engine: _Engine) -> list[Transfer]:
    with gc_paused():  # hundreds of thousands of records: no collection finds garbage here
        return _collect_transfers(engine)


def _collect_transfers(engine: _Engine) -> list[Transfer]:
    P = engine.P
    out: list[Transfer] = []
    labels: dict[int, str] = {}  # id(send action) -> its str; actions are shared by replicas
    make = tuple.__new__  # Transfer(...) less its Python-level __new__ (383,000 on a big step)
    for channel in engine._channels.values():
        dst_dp, dst_pp = divmod(channel.dst_w, P)
        num_flows = len(channel.paths)
        for slot in channel.slots:
            if slot.send_w < 0:
                continue
            action = slot.send_action
            if slot.traffic_class == 1:
                kind, label = "allreduce", f"AR{action[1]}"
            else:
                kind, label = "pipeline", labels.get(id(action)) or labels.setdefault(
                    id(action), str(action))
            out.append(make(Transfer, (
                kind, label, slot.send_w // P, slot.send_w % P, dst_dp, dst_pp, slot.send_bytes,
                num_flows, slot.posted_s, slot.started_s, slot.delivered_s, slot.recv_posted_s,
                slot.received_s)))
    out.sort(key=itemgetter(8, 2, 3, 1))  # (posted_s, src_dp, src_pp, label)
    return out
