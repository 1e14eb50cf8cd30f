"""Topology specs as mappings: a builder with parameters, or explicit nodes and links.

This is what a scenario's `topology:` key or a topology YAML file holds. Three forms:

    {preset: two-rack-h100, num_racks: 4}             a shipped preset, parameters overridden
    {builder: rail_optimized, num_nodes: 128, ...}    any builder in builders.BUILDERS
    {nodes: [...], links: [...]}                      a custom graph:

    name: lab-cluster
    gpu_transit: false                 # optional; true lets routes pass through GPUs
    link_defaults: {latency_s: 1.0e-6, link_kind: network}   # optional, merged into each link
    nodes:
      - {id: g0, kind: gpu, node_index: 0}
      - {id: sw, kind: nvswitch, node_index: 0}
    links:                             # both directions unless bidirectional: false
      - {src: g0, dst: sw, bandwidth_bytes_per_s: 4.5e+11, latency_s: 1.0e-6, link_kind: nvlink}

All forms may also carry `name`, `description` and `sources` (parameter -> public source).
Errors name the key path (`topology.links[3].latency_s`), the bad value, the rule and the fix.
Numbers given as strings such as "4.5e11" (PyYAML reads YAML 1.1, where `4.5e11` without a
dot and sign is a string) are accepted as floats.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from typing import Any

import networkx as nx

from topologies.builders import BUILDERS
from topologies.errors import TopologySpecError
from topologies.schema import (
    BANDWIDTH, GPU, GPU_INDEX, GRAPH_GPU_TRANSIT, GRAPH_NAME, KIND, LATENCY, LINK_KIND,
    LOCAL_INDEX, NODE_INDEX, RACK_INDEX,
)
from topologies.validate import validate_topology

__all__ = ["build_from_spec", "builder_parameters", "assign_gpu_index", "COMMON_KEYS"]

COMMON_KEYS = ("name", "description", "sources")
"""Keys every spec form may carry besides its own."""

_NODE_KEYS = {"id": str, KIND: str, NODE_INDEX: int, RACK_INDEX: int, LOCAL_INDEX: int,
              GPU_INDEX: int}
_LINK_KEYS = {"src": str, "dst": str, BANDWIDTH: float, LATENCY: float, LINK_KIND: str,
              "bidirectional": bool}
_EXPLICIT_KEYS = ("nodes", "links", "link_defaults", GRAPH_GPU_TRANSIT) + COMMON_KEYS


def builder_parameters(builder: Callable[..., nx.DiGraph]) -> dict[str, tuple[Any, Any]]:
    """Parameter name -> (resolved type hint, default or inspect.Parameter.empty)."""
    hints = typing.get_type_hints(builder)
    return {name: (hints[name], p.default)
            for name, p in inspect.signature(builder).parameters.items()}


def build_from_spec(spec: Mapping[str, Any], *, where: str = "topology",
                    preset_loader: Callable[[str, str], Mapping[str, Any]] | None = None
                    ) -> nx.DiGraph:
    """Build a graph from one spec mapping (module docstring); `where` prefixes error paths.

    `preset_loader(name, where)` returns a preset's own spec mapping; `io.load_topology`
    passes it, so that `{preset: ...}` works here without a file-system dependency.
    """
    if not isinstance(spec, Mapping):
        raise TopologySpecError(
            f"{where}: expected a mapping (preset/builder/nodes+links), got "
            f"{type(spec).__name__}. Fix: see topologies/spec.py for the three forms.")
    if "preset" in spec:
        if preset_loader is None:
            raise TopologySpecError(f"{where}.preset: presets cannot be resolved here. "
                                    f"Fix: call topologies.load_topology instead.")
        name = _typed(spec["preset"], str, f"{where}.preset")
        base = dict(preset_loader(name, f"{where}.preset"))
        overrides = {k: v for k, v in spec.items() if k != "preset"}
        unknown = [k for k in ("builder", "nodes", "links") if k in overrides]
        if unknown:
            raise TopologySpecError(
                f"{where}.{unknown[0]}: cannot be combined with preset {name!r}; a preset "
                f"already fixes it. Fix: override builder parameters only, or drop 'preset'.")
        base.update(overrides)
        base.setdefault("name", name)
        if isinstance(base.get("sources"), Mapping):
            base["sources"] = {k: ("overridden in the spec" if k in overrides else v)
                               for k, v in base["sources"].items()}
        return build_from_spec(base, where=where)
    if "builder" in spec:
        return _build_with_builder(spec, where)
    if "nodes" in spec or "links" in spec:
        return _build_explicit(spec, where)
    raise TopologySpecError(
        f"{where}: has none of 'preset', 'builder' or 'nodes'/'links' (keys: "
        f"{sorted(map(str, spec))}). Fix: give one of those forms (topologies/spec.py).")


def _typed(value: Any, kind: type, path: str, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if kind is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        expected = "a number (SI units), e.g. 4.5e+11"
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        expected = "an integer"
    elif kind is bool:
        if isinstance(value, bool):
            return value
        expected = "true or false"
    else:
        if isinstance(value, str):
            return value
        expected = "a string (quote it)"
    raise TopologySpecError(
        f"{path}: got {value!r} ({type(value).__name__}); expected {expected}. Fix: correct it.")


def _build_with_builder(spec: Mapping[str, Any], where: str) -> nx.DiGraph:
    builder_name = _typed(spec["builder"], str, f"{where}.builder")
    builder = BUILDERS.get(builder_name)
    if builder is None:
        raise TopologySpecError(
            f"{where}.builder: unknown builder {builder_name!r}; known builders: "
            f"{', '.join(BUILDERS)}. Fix: use one of those.")
    parameters = builder_parameters(builder)
    kwargs: dict[str, Any] = {}
    for key, value in spec.items():
        if key == "builder" or key in COMMON_KEYS:
            continue
        if key not in parameters:
            raise TopologySpecError(
                f"{where}.{key}: unknown parameter of builder {builder_name!r}; allowed: "
                f"{', '.join(parameters)}. Fix: remove or rename it.")
        hint, _ = parameters[key]
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        kwargs[key] = _typed(value, base, f"{where}.{key}", optional=optional)
    missing = [k for k, (_, default) in parameters.items()
               if default is inspect.Parameter.empty and k not in kwargs]
    if missing:
        raise TopologySpecError(
            f"{where}: builder {builder_name!r} needs {', '.join(missing)}. Fix: add "
            f"{missing[0]}: <value>.")
    try:
        G = builder(**kwargs)
    except TopologySpecError as exc:
        raise TopologySpecError(f"{where}: {exc}") from None
    _attach_common(G, spec, where)
    return G


def _attach_common(G: nx.DiGraph, spec: Mapping[str, Any], where: str) -> None:
    if "name" in spec:
        G.graph[GRAPH_NAME] = _typed(spec["name"], str, f"{where}.name")
    if "description" in spec:
        G.graph["description"] = _typed(spec["description"], str, f"{where}.description")
    if "sources" in spec:
        sources = spec["sources"]
        if not isinstance(sources, Mapping):
            raise TopologySpecError(f"{where}.sources: expected a mapping parameter -> source, "
                                    f"got {type(sources).__name__}. Fix: write key: text lines.")
        G.graph["sources"] = {str(k): str(v) for k, v in sources.items()}


def _entries(spec: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    value = spec.get(key, [])
    if not isinstance(value, list) or not all(isinstance(e, Mapping) for e in value):
        raise TopologySpecError(f"{where}.{key}: expected a list of mappings. Fix: write each "
                                f"entry as '- {{...}}'.")
    return value


def _fields(entry: Mapping[str, Any], allowed: dict[str, type], path: str) -> dict[str, Any]:
    out = {}
    for key, value in entry.items():
        if key not in allowed:
            raise TopologySpecError(f"{path}.{key}: unknown key; allowed: "
                                    f"{', '.join(allowed)}. Fix: remove or rename it.")
        out[key] = _typed(value, allowed[key], f"{path}.{key}")
    return out


def _build_explicit(spec: Mapping[str, Any], where: str) -> nx.DiGraph:
    for key in spec:
        if key not in _EXPLICIT_KEYS:
            raise TopologySpecError(f"{where}.{key}: unknown key for an explicit topology; "
                                    f"allowed: {', '.join(_EXPLICIT_KEYS)}. Fix: remove it.")
    G = nx.DiGraph()
    for i, entry in enumerate(_entries(spec, "nodes", where)):
        fields = _fields(entry, _NODE_KEYS, f"{where}.nodes[{i}]")
        node = fields.pop("id", None)
        if node is None:
            raise TopologySpecError(f"{where}.nodes[{i}]: has no id. Fix: add id: <name>.")
        if node in G:
            raise TopologySpecError(f"{where}.nodes[{i}].id: {node!r} is defined twice. "
                                    f"Fix: give every node a unique id.")
        G.add_node(node, **fields)
    defaults_spec = spec.get("link_defaults", {})
    if not isinstance(defaults_spec, Mapping):
        raise TopologySpecError(f"{where}.link_defaults: expected a mapping. Fix: write "
                                f"link_defaults: {{latency_s: ..., link_kind: ...}}.")
    defaults = _fields(defaults_spec, _LINK_KEYS, f"{where}.link_defaults")
    for i, entry in enumerate(_entries(spec, "links", where)):
        path = f"{where}.links[{i}]"
        fields = {**defaults, **_fields(entry, _LINK_KEYS, path)}
        for key in ("src", "dst", BANDWIDTH, LATENCY, LINK_KIND):
            if key not in fields:
                raise TopologySpecError(f"{path}: has no {key}. Fix: add {key} (or put it in "
                                        f"link_defaults).")
        src, dst = fields.pop("src"), fields.pop("dst")
        for end, node in (("src", src), ("dst", dst)):
            if node not in G:
                raise TopologySpecError(f"{path}.{end}: {node!r} is not a declared node. "
                                        f"Fix: add it under nodes or correct the name.")
        both = fields.pop("bidirectional", True)
        for u, v in ((src, dst), (dst, src)) if both else ((src, dst),):
            if G.has_edge(u, v):
                raise TopologySpecError(f"{path}: link {u!r} -> {v!r} is defined twice. "
                                        f"Fix: keep one definition.")
            G.add_edge(u, v, **fields)
    G.graph[GRAPH_NAME] = "custom"
    if GRAPH_GPU_TRANSIT in spec:
        G.graph[GRAPH_GPU_TRANSIT] = _typed(spec[GRAPH_GPU_TRANSIT], bool,
                                            f"{where}.{GRAPH_GPU_TRANSIT}")
    _attach_common(G, spec, where)
    assign_gpu_index(G)
    validate_topology(G)
    return G


def assign_gpu_index(G: nx.DiGraph) -> None:
    """Number GPUs 0..N-1 in node order when none has a `gpu_index` (partial sets are left to
    validation, which rejects them)."""
    found = [n for n, kind in G.nodes(data=KIND) if kind == GPU]
    if found and not any(GPU_INDEX in G.nodes[n] for n in found):
        for i, node in enumerate(found):
            G.nodes[node][GPU_INDEX] = i
