"""Unit constants and human-readable formatting, kept in one place."""

from __future__ import annotations

__all__ = ["KB", "MB", "GB", "KIB", "MIB", "GIB", "GBIT", "format_bytes", "format_seconds"]

KB, MB, GB = 1e3, 1e6, 1e9
KIB, MIB, GIB = 2.0**10, 2.0**20, 2.0**30
GBIT = 1e9 / 8
"""Bytes per second in one Gbit/s."""


def format_bytes(num_bytes: float) -> str:
    """Decimal units (MB, GB), as link and memory vendors quote them."""
    value = float(num_bytes)
    for unit, scale in (("TB", 1e12), ("GB", GB), ("MB", MB), ("kB", KB)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} B"


def format_seconds(seconds: float) -> str:
    """s, ms or us with three significant digits."""
    if abs(seconds) >= 1:
        return f"{seconds:.3g} s"
    if abs(seconds) >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} us"
