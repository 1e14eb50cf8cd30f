"""Draw a topology as layers (spine, leaf, NIC, GPU) with an optional highlighted path.

`draw_topology(ax, G)` draws onto a matplotlib Axes and returns the artists; it never saves
(only CLI code writes files) and imports matplotlib inside the function, so importing the
simulator does not load matplotlib.

Large graphs are drawn aggregated so that a 16k-GPU cluster stays readable and fast. Levels:

- "device": every node (GPUs at the bottom, NVSwitch below them, NICs/PCIe above, then hosts,
  leaves, spines);
- "server": each server's GPUs, NICs and switches become one box; leaves and spines stay;
- "rack":   each rack (or scalable unit) with its leaves becomes one box; spines become one
  box when there are more than `max_spines_drawn`.

"auto" picks the finest level with at most `max_drawn` boxes (default 120). A collapsed
edge is drawn once per pair of boxes, its width growing with the log of the summed bandwidth
(per direction) and its colour given by the link kind carrying most bandwidth.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from typing import Any

import networkx as nx

from topologies.schema import (
    BANDWIDTH, GRAPH_NAME, KIND, LINK_KIND, LINK_KINDS, NODE_INDEX, RACK_INDEX, SPINE, gpus,
)

__all__ = ["draw_topology", "LEVELS", "choose_level"]

LEVELS = ("device", "server", "rack")

_Y = {"gpu": 0.0, "nvswitch": -1.0, "nic": 1.0, "pcie_switch": 1.0, "host": 2.0,
      "leaf": 3.0, "spine": 4.0, "server": 1.0, "rack": 1.0}
_COLORS = {"nvlink": "#2ca02c", "pcie": "#9467bd", "network": "#1f77b4",
           "inter_socket": "#8c564b", "loopback": "#7f7f7f"}
_NODE_STYLE = {"gpu": ("s", "#2ca02c"), "nvswitch": ("D", "#98df8a"), "nic": ("o", "#ff7f0e"),
               "pcie_switch": ("D", "#c5b0d5"), "host": ("h", "#7f7f7f"),
               "leaf": ("^", "#1f77b4"), "spine": ("v", "#d62728"),
               "server": ("s", "#bcbd22"), "rack": ("s", "#17becf")}


def _group_of(G: nx.DiGraph, level: str, many_spines: bool) -> dict[Hashable, tuple]:
    groups = {}
    for node, data in G.nodes(data=True):
        kind = data.get(KIND)
        if level == "rack" and data.get(RACK_INDEX) is not None:
            groups[node] = ("rack", data[RACK_INDEX])
        elif level == "rack" and kind == SPINE and many_spines:
            groups[node] = ("spine", "all")
        elif level in ("server", "rack") and data.get(NODE_INDEX) is not None:
            groups[node] = ("server", data[NODE_INDEX])
        else:
            groups[node] = (kind, node)
    return groups


def choose_level(G: nx.DiGraph, max_drawn: int = 120, max_spines_drawn: int = 16) -> str:
    """The finest level of LEVELS that draws at most `max_drawn` boxes."""
    many = sum(1 for _, k in G.nodes(data=KIND) if k == SPINE) > max_spines_drawn
    for level in LEVELS:
        if len(set(_group_of(G, level, many).values())) <= max_drawn:
            return level
    return "rack"


def _links(highlight: Iterable[Any] | None) -> list[tuple[Hashable, Hashable]]:
    if highlight is None:
        return []
    items = list(highlight)
    if items and all(hasattr(item, "links") for item in items):
        return [link for item in items for link in item.links]
    if items and all(isinstance(item, tuple) and len(item) == 2 for item in items):
        return items
    return list(zip(items, items[1:]))  # a node path


def _layout(G: nx.DiGraph, groups: dict[Hashable, tuple], pairs: dict[tuple, Any]
            ) -> dict[tuple, tuple[float, float]]:
    order = gpus(G)
    base: list[tuple] = []
    first_gpu: dict[tuple, Hashable] = {}
    for gpu in order:
        if groups[gpu] not in first_gpu:
            first_gpu[groups[gpu]] = gpu
            base.append(groups[gpu])
    x: dict[tuple, float] = {}
    position, previous = 0.0, None
    for i, g in enumerate(base):
        server = G.nodes[first_gpu[g]].get(NODE_INDEX)
        if i:  # a wider gap where the server changes, so servers read as blocks
            position += 1.6 if server != previous else 1.0
        x[g], previous = position, server
    neighbours: dict[tuple, set[tuple]] = {}
    for a, b in pairs:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    frontier = list(x)
    while frontier:  # breadth-first from the GPUs: barycentre of placed neighbours
        nxt = []
        for g in frontier:
            for h in neighbours.get(g, ()):
                if h not in x:
                    placed = [x[k] for k in neighbours[h] if k in x]
                    x[h] = sum(placed) / len(placed)
                    nxt.append(h)
        frontier = nxt
    all_groups = set(groups.values())
    for g in all_groups - set(x):
        x[g] = 0.0
    width = max(x.values(), default=0.0)
    layers: dict[float, list[tuple]] = {}
    for g in all_groups:
        layers.setdefault(_Y.get(g[0], 2.0), []).append(g)
    first_seen: dict[tuple, int] = {}
    for i, node in enumerate(G):
        first_seen.setdefault(groups[node], i)
    pos_out = {}
    for y, members in layers.items():
        members.sort(key=lambda g: (x[g], first_seen[g]))
        if len(members) == 1 or any(m in base for m in members):
            for m in members:
                pos_out[m] = (x[m], y)
        else:
            step = width / (len(members) - 1)
            for i, m in enumerate(members):
                pos_out[m] = (i * step, y)
    return pos_out


def _label(G: nx.DiGraph, group: tuple, counts: dict[tuple, int]) -> str:
    kind, key = group
    if kind == "server":
        return f"n{key}"
    if kind == "rack":
        unit = "SU" if G.graph.get("builder") == "rail_optimized" else "rack"
        return f"{unit} {key}\n{counts.get(group, 0)} GPUs"
    if kind == "spine" and key == "all":
        return f"{counts.get(group, 0)} spines"
    return str(key)


def _labelled(drawn: set[tuple], pos: dict[tuple, tuple[float, float]],
              labels: bool | None) -> list[tuple]:
    """All boxes when few (or labels=True); else about 12 per layer, evenly spread."""
    if labels is False:
        return []
    if labels or len(drawn) <= 40:
        return sorted(drawn, key=str)
    layers: dict[float, list[tuple]] = {}
    for group in drawn:
        layers.setdefault(pos[group][1], []).append(group)
    chosen = []
    for members in layers.values():
        members.sort(key=lambda g: pos[g][0])
        step = max(1, math.ceil(len(members) / 12))
        chosen.extend(members[::step])
    return chosen


def _collapse(G: nx.DiGraph, groups: dict[Hashable, tuple]) -> dict[tuple, dict[str, float]]:
    """(box, box) -> link kind -> summed bandwidth per direction, one entry per box pair."""
    pairs: dict[tuple, dict[str, float]] = {}
    for u, v, data in G.edges(data=True):
        a, b = groups[u], groups[v]
        if a != b:
            key = (a, b) if str(a) <= str(b) else (b, a)
            per_kind = pairs.setdefault(key, {})
            kind = data.get(LINK_KIND, "network")
            per_kind[kind] = per_kind.get(kind, 0.0) + data[BANDWIDTH] / 2  # both directions
    return pairs


def _draw_links(ax: Any, pairs: dict[tuple, dict[str, float]],
                pos: dict[tuple, tuple[float, float]]) -> list[Any]:
    from matplotlib.collections import LineCollection
    from matplotlib.lines import Line2D

    totals = {key: sum(kinds.values()) for key, kinds in pairs.items()}
    low, high = min(totals.values(), default=1.0), max(totals.values(), default=1.0)
    span = math.log10(high / low) if high > low else 1.0
    segments, colors, widths = [], [], []
    for key, kinds in pairs.items():
        segments.append([pos[key[0]], pos[key[1]]])
        colors.append(_COLORS.get(max(kinds, key=kinds.get), "#333333"))
        widths.append(0.4 + 2.6 * math.log10(totals[key] / low) / span if high > low else 1.0)
    lines = LineCollection(segments, colors=colors, linewidths=widths, alpha=0.6, zorder=1)
    artists = [ax.add_collection(lines)]
    used = [k for k in LINK_KINDS if any(k in kinds for kinds in pairs.values())]
    if used:
        handles = [Line2D([], [], color=_COLORS[k], label=k) for k in used]
        artists.append(ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                                 fontsize=7, frameon=False))
    return artists


def _draw_boxes(ax: Any, G: nx.DiGraph, groups: dict[Hashable, tuple],
                pos: dict[tuple, tuple[float, float]], labels: bool | None) -> list[Any]:
    artists = []
    by_style: dict[str, list[tuple]] = {}
    for group in set(groups.values()):
        by_style.setdefault(group[0], []).append(group)
    for style, members in sorted(by_style.items()):
        marker, color = _NODE_STYLE.get(style, ("o", "#333333"))
        size = max(6.0, min(90.0 if style in ("server", "rack") else 30.0, 3000.0 / len(members)))
        artists.append(ax.scatter([pos[m][0] for m in members], [pos[m][1] for m in members],
                                  marker=marker, c=color, s=size, zorder=3, label=style))
    counts: dict[tuple, int] = {}
    for node, kind in G.nodes(data=KIND):
        if kind in ("gpu", SPINE):  # boxes count their GPUs; the collapsed spine its spines
            counts[groups[node]] = counts.get(groups[node], 0) + 1
    for group in _labelled(set(groups.values()), pos, labels):
        artists.append(ax.annotate(_label(G, group, counts), pos[group], fontsize=6,
                                   xytext=(0, -9), textcoords="offset points",
                                   ha="center", va="top"))
    return artists


def _draw_highlight(ax: Any, groups: dict[Hashable, tuple], pos: dict[tuple, tuple[float, float]],
                    highlight: list[tuple[Hashable, Hashable]]) -> list[Any]:
    from matplotlib.collections import LineCollection

    boxes = {(groups[u], groups[v]) for u, v in highlight}
    undirected = {(a, b) if str(a) <= str(b) else (b, a) for a, b in boxes if a != b}
    segments = [[pos[a], pos[b]] for a, b in sorted(undirected, key=str)]
    ends = {a for a, _ in boxes} | {b for _, b in boxes}
    return [ax.add_collection(LineCollection(segments, colors="#d62728", linewidths=3.0,
                                             zorder=2)),
            ax.scatter([pos[g][0] for g in ends], [pos[g][1] for g in ends], s=160,
                       facecolors="none", edgecolors="#d62728", zorder=4)]


def draw_topology(ax: Any, G: nx.DiGraph, highlight_path: Iterable[Any] | None = None, *,
                  level: str = "auto", max_drawn: int = 120, max_spines_drawn: int = 16,
                  labels: bool | None = None) -> list[Any]:
    """Draw `G` on `ax` in layers; highlight links of `highlight_path`; return the artists.

    `highlight_path` is a sequence of routes (`topologies.Route`), of links `(u, v)`, or of
    nodes along a path; its links are drawn in red (once per box pair, whatever the
    direction) and the boxes they touch are circled. `labels`: None labels every box when at
    most 40 are drawn and about a dozen per layer otherwise; True labels all, False none.
    """
    if level == "auto":
        level = choose_level(G, max_drawn, max_spines_drawn)
    if level not in LEVELS:
        raise ValueError(f"draw_topology: level {level!r} is not one of auto, "
                         f"{', '.join(LEVELS)}. Fix: pick one of those.")
    many_spines = sum(1 for _, k in G.nodes(data=KIND) if k == SPINE) > max_spines_drawn
    groups = _group_of(G, level, many_spines)
    pairs = _collapse(G, groups)
    pos = _layout(G, groups, pairs)
    artists = _draw_links(ax, pairs, pos) + _draw_boxes(ax, G, groups, pos, labels)
    highlight = _links(highlight_path)
    if highlight:
        artists += _draw_highlight(ax, groups, pos, highlight)
    name = G.graph.get(GRAPH_NAME, "topology")
    artists.append(ax.set_title(f"{name}: {len(gpus(G))} GPUs ({level} view)", fontsize=9))
    ax.set_axis_off()
    ax.autoscale_view()
    return artists
