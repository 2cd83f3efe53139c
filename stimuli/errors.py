"""Errors that name what is wrong and where."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError


class PsychinterpError(Exception):
    """Base class: the CLI prints these without a traceback."""


class ConfigError(PsychinterpError):
    pass


LUCENT_MISSING = (
    "lucent is not installed ({reason}). Install it without its stale pins: "
    "pip install --no-deps torch-lucent==0.1.8   (see DEVELOPERS.md)"
)


def _location(loc: tuple[Any, ...], raw: Any) -> str:
    """Render a pydantic location, naming list items by their ``id`` when they have one."""
    parts: list[str] = []
    node = raw
    for key in loc:
        if isinstance(key, int) and isinstance(node, list) and key < len(node):
            node = node[key]
            label = node.get("id") if isinstance(node, dict) else None
            parts.append(f"[{key}]" + (f"(id={label})" if label else ""))
        else:
            node = node.get(key) if isinstance(node, dict) else None
            parts.append(f".{key}" if parts else str(key))
    return "".join(parts) or "<top level>"


def format_validation_error(path: str | Path, exc: ValidationError, raw: Any = None) -> str:
    lines = [f"{path}: {exc.error_count()} invalid field(s)"]
    for err in exc.errors():
        lines.append(f"  {_location(err['loc'], raw)}: {err['msg']}")
    return "\n".join(lines)
