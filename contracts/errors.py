"""Errors that name what is wrong and where, and the one loader of YAML files into pydantic models."""

from __future__ import annotations

import difflib
import typing
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


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through unions, lists and dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> set[str]:
    """Every setting name the config allows at ``loc`` (the names of the models that may sit there)."""
    models = [model]
    for key in loc:
        if isinstance(key, int) or not models:
            continue
        fields = [m.model_fields[key] for m in models if key in m.model_fields]
        inner = [m for f in fields for m in _models_in(f.annotation)]
        # A tagged union's location names the tag (``calibrated``) rather than a field: stay on its members.
        models = inner if fields else [m for m in models if key in getattr(m, "__name__", "")] or models
    return {name for m in models for name in m.model_fields}


def _did_you_mean(model: type[BaseModel] | None, err: Mapping[str, Any]) -> str:
    if model is None or err["type"] != "extra_forbidden":
        return ""
    key = str(err["loc"][-1])
    allowed = _keys_at(model, tuple(err["loc"][:-1]))
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    return (
        f"; did you mean {close[0]!r}?"
        if close
        else (f"; allowed here: {', '.join(sorted(allowed))}" if allowed else "")
    )


def format_validation_error(
    path: str | Path, exc: ValidationError, raw: Any = None, model: type[BaseModel] | None = None
) -> str:
    """Every problem, each under its location; an unknown key gets the nearest allowed one (``model``)."""
    lines = [f"{path}: {exc.error_count()} invalid field(s)"]
    for err in exc.errors():
        lines.append(f"  {_location(err['loc'], raw)}: {err['msg']}{_did_you_mean(model, err)}")
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
        raise ConfigError(format_validation_error(path or Path("<command line>"), exc, raw, model)) from None
