"""The scenario key reference, generated from the pydantic models so docs never drift from code.

    python -m simulator.scenario_docs > docs/scenario-keys.md
"""

from __future__ import annotations

import sys
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from simulator.scenario import Scenario

__all__ = ["scenario_key_rows", "scenario_keys_markdown"]


def _type_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    if _nested_model(annotation) is not None:
        return "optional section"
    text = str(annotation).replace("typing.", "")
    return text.replace("<class '", "").replace("'>", "").replace("|", "\\|")


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    for arg in (annotation, *typing.get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def scenario_key_rows(model: type[BaseModel] = Scenario, prefix: str = "") -> list[tuple[str, ...]]:
    """(key path, type, default, description) for every key, depth first."""
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _nested_model(field.annotation)
        if field.default is PydanticUndefined:
            default = "required"
        elif isinstance(field.default, BaseModel):
            default = "(section defaults)"
        else:
            default = f"`{field.default!r}`"
        doc = (field.description or (nested.__doc__ or "") if nested else field.description) or ""
        rows.append((f"`{path}`", _type_text(field.annotation), default,
                     " ".join(doc.split())))
        if nested is not None:
            rows.extend(scenario_key_rows(nested, prefix=f"{path}."))
    return rows


def scenario_keys_markdown() -> str:
    """A markdown table of every scenario key."""
    lines = ["| key | type | default | meaning (units in the name or stated) |",
             "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in scenario_key_rows()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(scenario_keys_markdown())
