"""User-facing errors of the topologies package, all `ValueError`s.

`topologies` may not import the simulator, so these are plain `ValueError` subclasses; the CLI
prints any `ValueError` as one message without a traceback. Each message names the key, node or
link at fault, the bad value, the rule and the fix.
"""

from __future__ import annotations

__all__ = ["TopologyError", "TopologySpecError", "TopologyValidationError", "RoutingError",
           "PlacementError"]


class TopologyError(ValueError):
    """Base of every user error raised by `topologies`."""


class TopologySpecError(TopologyError):
    """A topology spec (preset name, YAML/JSON/GraphML file, or dict) is malformed."""


class TopologyValidationError(TopologyError):
    """A graph breaks a topology rule: a missing attribute, an unreachable GPU, ..."""


class RoutingError(TopologyError):
    """No route exists, or a route was asked for a node that is not in the graph."""


class PlacementError(TopologyError):
    """Ranks cannot be placed as asked (too few GPUs, a bad explicit map, ...)."""
