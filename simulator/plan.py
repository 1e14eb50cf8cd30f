"""From a scenario to a simulated step: resolve hardware, topology, costs, manifest and memory.

`simulate(scenario)` is the one call behind `pipesim run`. It resolves

- the hardware (`scenario.hardware` or an override; `simulator/hardware.py`),
- the fabric: `scenario.topology` through `topologies` (graph, router, placement of (dp, pp,
  tp) ranks per `scenario.placement`), or `topology: ideal` for unlimited zero-latency links,
- per-chunk seconds from `simulator/costs.py`, and the host work a measured profile says the
  runner does after each of them (`simulator/calibrate_executor.py`),
- per-transition bytes from the boundary manifest (`simulator/manifest.py`), in the
  scenario's communication mode, so that link bytes equal the manifest exactly,
- per-chunk memory from `simulator/memory.py`, so that timeline peaks equal the analytic model,
- the gradient all-reduce: per GPU, gradients of its parameters (`grad_bytes_per_param`) in
  2(d-1) ring steps of 1/d each; with a distributed optimizer the second half all-gathers the
  parameters (dtype bytes) instead,

into a `StepPlan` for `simulator/engine.py`. A scenario with no `hardware:` or no `topology:`
is an error saying which key to add (there is no silent default).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulator.costs import CostModel
from simulator.engine import RankMemoryPlan, StepPlan, simulate_plan
from simulator.errors import ScenarioError
from simulator.fabric import Fabric, fabric_from_topology, ideal_fabric, symmetric_fabric
from simulator.hardware import HardwareSpec, load_hardware
from simulator.calibrate_executor import executor_overhead_s
from simulator.layout import Layout, build_layout
from simulator.manifest import build_manifest
from simulator.memory import memory_model
from simulator.results import SimulationResult
from simulator.scenario import Scenario
from simulator.schedule import build_schedule
from simulator.step_plan import HOST_COST_FIELDS

__all__ = ["IDEAL_TOPOLOGY", "resolve_fabric", "build_plan", "simulate"]

IDEAL_TOPOLOGY = "ideal"
"""`topology: ideal`: every GPU on one switch by unlimited, zero-latency links."""


def resolve_fabric(scenario: Scenario, topology: Any = None,
                   base_dir: str | Path | None = None) -> Fabric:
    """The fabric a scenario runs on (a `topologies` spec or graph, or "ideal")."""
    spec = topology if topology is not None else scenario.topology
    p, par = scenario.pipeline, scenario.parallelism
    if spec is None:
        raise ScenarioError(
            "topology: the scenario names no topology; add `topology:` with a preset name "
            "(see `pipesim topology show`), a file, a builder mapping, or `topology: ideal` "
            "for unlimited zero-latency links; or pass --topology to `pipesim run`")
    if spec == IDEAL_TOPOLOGY:
        return ideal_fabric(par.data_parallel, p.num_stages, par.tensor_parallel)
    import topologies  # noqa: PLC0415 (only runs that need a cluster pay for it)

    graph = spec if hasattr(spec, "edges") else topologies.load_topology(
        _resolve_path(spec, base_dir))
    placement = topologies.place(graph, dp=par.data_parallel, pp=p.num_stages,
                                 tp=par.tensor_parallel, policy=scenario.placement,
                                 num_virtual_stages=p.num_virtual_stages)
    return fabric_from_topology(graph, placement, topologies.Router(graph))


def _resolve_path(spec: Any, base_dir: str | Path | None) -> Any:
    """Relative topology file names are relative to the scenario's directory."""
    if isinstance(spec, str) and spec.endswith((".yaml", ".yml", ".json", ".graphml")):
        path = Path(spec)
        if not path.is_absolute() and base_dir is not None:
            return str(Path(base_dir) / path)
    return spec


def build_plan(scenario: Scenario, hardware: HardwareSpec, fabric: Fabric, *,
               aggregation: str = "two-phase", allreduce: bool = True, symmetric: bool = False,
               record_link_timeline: bool = True) -> StepPlan:
    """Everything the engine needs for one step of `scenario` on `hardware` and `fabric`."""
    p, par = scenario.pipeline, scenario.parallelism
    schedule = build_schedule(p.schedule, p.num_stages, p.num_virtual_stages, p.num_microbatches)
    layout = build_layout(scenario)
    costs = CostModel(scenario, hardware, aggregation=aggregation, layout=layout).chunk_costs()
    manifest = build_manifest(scenario)
    mode = manifest.comm_mode
    send_bytes = {(hop.direction, hop.src_chunk): hop.num_bytes(mode)
                  for hop in manifest.transitions}
    send_tensors = {(hop.direction, hop.src_chunk): len(hop.names(mode))
                    for hop in manifest.transitions}
    report = memory_model(scenario)
    memory = tuple(
        RankMemoryPlan(
            base_bytes=rank.model_state_bytes + rank.recompute_working_bytes,
            received_bytes={c: a.received_bytes for c, a in rank.chunk_bytes.items()},
            activation_bytes={c: a.sublayers_bytes + a.attnres_bytes
                              for c, a in rank.chunk_bytes.items()})
        for rank in report.ranks)
    d = par.data_parallel
    steps: tuple[tuple[int, ...], ...] = ()
    if allreduce and d > 1:
        steps = tuple(_ring_steps(scenario, rank.gradients_bytes, rank.weights_bytes, d)
                      for rank in report.ranks)
    fabric = _apply_profile(fabric, hardware)
    num_replicas, ring_size = d, None
    if symmetric and d > 1:
        pairs = sorted({(hop.src_rank, hop.dst_rank) for hop in manifest.transitions})
        fabric = symmetric_fabric(fabric, d, p.num_stages, par.tensor_parallel, pairs)
        num_replicas, ring_size = 1, d
    return StepPlan(
        schedule=schedule, num_replicas=num_replicas, tensor_parallel=par.tensor_parallel,
        forward_s=tuple(c.forward_s for c in costs), backward_s=tuple(c.backward_s for c in costs),
        send_bytes=send_bytes, send_tensors=send_tensors, allreduce_step_bytes=steps,
        ring_size=ring_size, memory=memory,
        fabric=fabric, name=scenario.name, record_link_timeline=record_link_timeline,
        **_host_overheads(hardware), **_executor_overheads(scenario, hardware, layout))


def _host_overheads(hardware: HardwareSpec) -> dict[str, float]:
    """The profile's per-message host overheads and per-byte compute costs of transfers as
    StepPlan fields (zero without a profile)."""
    profile = hardware.profile
    return {name: getattr(profile, name) if profile is not None else 0.0
            for name in HOST_COST_FIELDS}


def _executor_overheads(scenario: Scenario, hardware: HardwareSpec,
                        layout: Layout) -> dict[str, tuple[float, ...]]:
    """Per chunk, the runner's measured host work after a forward and after a backward
    (StepPlan.forward_host_s, backward_host_s; none without a profile that has it)."""
    profile = hardware.profile
    if profile is None or not profile.executor_overhead:
        return {}
    per_chunk = [executor_overhead_s(profile.executor_overhead, scenario.residual.kind, count)
                 for count in layout.chunk_sublayer_counts]
    return {"forward_host_s": tuple(f for f, _ in per_chunk),
            "backward_host_s": tuple(b for _, b in per_chunk)}


def _ring_steps(scenario: Scenario, gradient_bytes: int, weight_bytes: int,
                d: int) -> tuple[int, ...]:
    """Bytes per GPU of each of the 2(d-1) ring steps: reduce-scatter, then all-gather."""
    second = weight_bytes if scenario.training.distributed_optimizer else gradient_bytes
    return (-(-gradient_bytes // d),) * (d - 1) + (-(-second // d),) * (d - 1)


def _apply_profile(fabric: Fabric, hardware: HardwareSpec) -> Fabric:
    """Measured p2p alpha-beta: per link kind replaces links; per GPU pair caps flows."""
    profile = hardware.profile
    if profile is None or not profile.p2p:
        return fabric
    by_kind = {e.link_kind: e for e in profile.p2p if e.link_kind is not None}
    links = dict(fabric.links)
    for key, kind in fabric.link_kinds.items():
        if kind in by_kind:
            links[key] = (by_kind[kind].bandwidth_bytes_per_s, by_kind[kind].latency_s)
    pairs = dict(fabric.pair_overrides)
    for entry in profile.p2p:
        if entry.src_gpu is not None and entry.dst_gpu is not None:
            pairs[(entry.src_gpu, entry.dst_gpu)] = (entry.latency_s, entry.bandwidth_bytes_per_s)
    return Fabric(links, fabric.gpu_of, fabric.route, fabric.link_kinds, fabric.description,
                  fabric.allreduce_route, fabric.replica_multiplicity, pairs)


def simulate(scenario: Scenario, *, hardware: Any = None, topology: Any = None,
             base_dir: str | Path | None = None, aggregation: str = "two-phase",
             allreduce: bool = True, symmetric: bool = False, record_link_timeline: bool = True,
             progress: Callable[[int, int], None] | None = None) -> SimulationResult:
    """Simulate one training step of a validated scenario.

    Args:
        hardware: a HardwareSpec, or a spec overriding `scenario.hardware`.
        topology: a graph, a spec overriding `scenario.topology`, or "ideal".
        base_dir: the scenario file's directory, for relative file names.
        aggregation: "two-phase" (paper Table 1) or "naive" AttnRes source reads.
        allreduce: simulate the data-parallel gradient all-reduce.
        symmetric: simulate one replica on links shared by the others (see docs).
    """
    hw = hardware if isinstance(hardware, HardwareSpec) else load_hardware(
        hardware if hardware is not None else scenario.hardware, base_dir)
    fabric = resolve_fabric(scenario, topology, base_dir)
    plan = build_plan(scenario, hw, fabric, aggregation=aggregation, allreduce=allreduce,
                      symmetric=symmetric, record_link_timeline=record_link_timeline)
    options = {"hardware": hw.name, "hbm_capacity_bytes": hw.hbm_capacity_bytes,
               "aggregation": aggregation, "allreduce": allreduce,
               "symmetric": symmetric, "comm_mode": build_manifest(scenario).comm_mode,
               "schedule": scenario.pipeline.schedule}
    return simulate_plan(plan, progress=progress, options=options)
