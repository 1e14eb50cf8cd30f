"""Load topologies from presets, YAML, node-link JSON or GraphML; save them to JSON/GraphML.

`load_topology(spec)` accepts:

- a preset name: `"h100-superpod"`, `"two-rack-h100"`, `"host-loopback"` (`list_presets()`);
- a path to a `.yaml`/`.yml` file holding one spec mapping (topologies/spec.py);
- a path to a `.json` file: networkx node-link data (`"nodes"` plus `"edges"` or `"links"`
  with `"source"`/`"target"`), or a spec mapping written as JSON;
- a path to a `.graphml` file (networkx `write_graphml`, or any GraphML whose keys declare
  numeric types);
- a mapping, as a scenario's `topology:` key holds it (spec.py).

Custom graphs (explicit nodes/links, JSON, GraphML) are validated (validate.py); an undirected
file graph becomes both directions of every edge; GPUs without `gpu_index` are numbered in file
order; a closed-form bisection saved with a builder graph is dropped (the file may have been
edited), so it is recomputed by max-flow. Presets are YAML files in `topologies/presets/`,
each number with its public source.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import networkx as nx
import yaml

from topologies.errors import TopologySpecError
from topologies.schema import GRAPH_BISECTION, GRAPH_BISECTION_NOTE, GRAPH_NAME
from topologies.spec import assign_gpu_index, build_from_spec
from topologies.validate import validate_topology

__all__ = ["load_topology", "save_topology", "list_presets", "load_preset_spec"]

_YAML_SUFFIXES = (".yaml", ".yml")


def _preset_dir() -> Any:
    return resources.files("topologies").joinpath("presets")


def list_presets() -> dict[str, str]:
    """Preset name -> its one-line description, sorted by name."""
    out = {}
    for entry in sorted(_preset_dir().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            spec = yaml.safe_load(entry.read_text())
            out[entry.name[:-5]] = str(spec.get("description", ""))
    return out


def load_preset_spec(name: str, where: str = "topology.preset") -> dict[str, Any]:
    """The spec mapping stored in preset `name`."""
    entry = _preset_dir().joinpath(f"{name}.yaml")
    if not entry.is_file():
        raise TopologySpecError(
            f"{where}: unknown preset {name!r}; presets: {', '.join(list_presets())}. "
            f"Fix: use one of those, or give a file path.")
    spec = yaml.safe_load(entry.read_text())
    assert isinstance(spec, dict), f"preset {name} is not a mapping"
    return spec


def load_topology(spec: str | Path | Mapping[str, Any], *,
                  base_dir: str | Path | None = None) -> nx.DiGraph:
    """A topology graph from a preset name, a file, or a spec mapping (module docstring).

    Relative file paths are resolved against `base_dir` when given (e.g. the directory of
    the scenario file that names them).
    """
    if isinstance(spec, Mapping):
        return build_from_spec(spec, where="topology", preset_loader=load_preset_spec)
    if isinstance(spec, str) and _looks_like_preset(spec):
        if _preset_dir().joinpath(f"{spec}.yaml").is_file():
            G = build_from_spec(load_preset_spec(spec), where=f"preset {spec!r}")
            G.graph[GRAPH_NAME] = spec
            return G
    if not isinstance(spec, (str, Path)):
        raise TopologySpecError(
            f"topology: expected a preset name, a file path or a mapping, got "
            f"{type(spec).__name__}. Fix: e.g. topology: h100-superpod.")
    path = Path(spec)
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    if not path.is_file():
        hint = (f"not a preset ({', '.join(list_presets())}) and " if isinstance(spec, str)
                and _looks_like_preset(spec) else "")
        raise TopologySpecError(f"topology {str(spec)!r}: {hint}no such file {str(path)!r}. "
                                f"Fix: give a preset name or an existing file.")
    return _load_file(path)


def _looks_like_preset(text: str) -> bool:
    return "/" not in text and "\\" not in text and "." not in text


def _load_file(path: Path) -> nx.DiGraph:
    suffix = path.suffix.lower()
    if suffix in _YAML_SUFFIXES:
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise TopologySpecError(f"{path}: not valid YAML ({exc}). Fix: correct the syntax."
                                    ) from None
        G = build_from_spec(data, where=str(path), preset_loader=load_preset_spec)
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise TopologySpecError(f"{path}: not valid JSON ({exc}). Fix: correct the syntax."
                                    ) from None
        G = _from_json(data, path)
    elif suffix == ".graphml":
        try:
            G = nx.read_graphml(path)
        except Exception as exc:  # networkx raises several types for malformed XML
            raise TopologySpecError(f"{path}: not readable as GraphML ({exc}). Fix: write it "
                                    f"with networkx.write_graphml or check the XML.") from None
        G = _as_topology(G, path)
    else:
        raise TopologySpecError(
            f"{path}: unknown file type {suffix!r}; topology files are .yaml/.yml (spec), "
            f".json (node-link) or .graphml. Fix: rename or convert the file.")
    G.graph.setdefault(GRAPH_NAME, path.stem)
    return G


def _from_json(data: Any, path: Path) -> nx.DiGraph:
    if not isinstance(data, dict):
        raise TopologySpecError(f"{path}: expected a JSON object, got {type(data).__name__}. "
                                f"Fix: write node-link data (networkx.node_link_data).")
    edges_key = "edges" if "edges" in data else "links"
    entries = data.get(edges_key)
    if isinstance(entries, list) and entries and isinstance(entries[0], dict) \
            and "src" in entries[0]:
        return build_from_spec(data, where=str(path), preset_loader=load_preset_spec)
    if "nodes" not in data or not isinstance(entries, list):
        raise TopologySpecError(f"{path}: node-link JSON needs 'nodes' and 'edges' (or 'links') "
                                f"lists. Fix: write it with networkx.node_link_data(G).")
    if data.get("multigraph"):
        raise TopologySpecError(f"{path}: is a multigraph; topologies allow one edge per "
                                f"direction. Fix: merge parallel links into one edge.")
    try:
        G = nx.node_link_graph(data, directed=True, multigraph=False, edges=edges_key)
    except (KeyError, TypeError, nx.NetworkXError) as exc:
        raise TopologySpecError(f"{path}: malformed node-link data ({exc!r}). Fix: every node "
                                f"needs 'id', every edge 'source' and 'target'.") from None
    return _as_topology(G, path)


def _as_topology(G: nx.Graph, path: Path) -> nx.DiGraph:
    if G.is_multigraph():
        raise TopologySpecError(f"{path}: has parallel edges (a multigraph); topologies allow "
                                f"one edge per direction. Fix: merge them into one edge.")
    D = G if G.is_directed() else G.to_directed()
    D = nx.DiGraph(D)
    D.graph.setdefault(GRAPH_NAME, path.stem)
    # A file may have been edited since a builder wrote it: its closed form no longer holds.
    D.graph.pop(GRAPH_BISECTION, None)
    D.graph.pop(GRAPH_BISECTION_NOTE, None)
    assign_gpu_index(D)
    validate_topology(D)
    return D


def save_topology(G: nx.DiGraph, path: str | Path) -> None:
    """Write `G` as node-link JSON (`.json`) or GraphML (`.graphml`).

    GraphML holds only scalar graph attributes, so `params` and `sources` are written to
    JSON only.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = nx.node_link_data(G, edges="edges")
        path.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
    elif suffix == ".graphml":
        H = G.copy()
        H.graph = {k: v for k, v in G.graph.items() if isinstance(v, (str, int, float, bool))}
        nx.write_graphml(H, path)
    else:
        raise TopologySpecError(f"{path}: cannot save as {suffix!r}; use .json or .graphml. "
                                f"Fix: change the file name.")
