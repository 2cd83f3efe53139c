"""Errors that name what is wrong and where, and the one loader of YAML files into pydantic models."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class PsychinterpError(Exception):
    """Base class: the CLI prints these without a traceback."""


class ConfigError(PsychinterpError):
    pass


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


def load_yaml(path: str | Path | None, model: type[M], what: str, overrides: Mapping[str, Any] | None = None) -> M:
    """Read a YAML mapping from ``path`` (optional when ``overrides`` say everything), lay ``overrides``
    over it, and validate it as ``model``; every problem names the file (and the field).

    Validators see the file's folder as ``info.context["base"]``, to resolve paths written in it.
    """
    import yaml

    raw: Any = {}
    if path is not None:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: {what} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the {what}: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        raw = {} if raw is None else raw
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of settings for the {what}, found {type(raw).__name__}")
    raw = {**raw, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    try:
        return model.model_validate(raw, context={"base": path.parent if path is not None else None})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path or Path("<command line>"), exc, raw)) from None
