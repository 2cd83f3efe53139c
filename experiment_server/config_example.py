"""``examples/server.yaml``, generated from the server config model (one home for every setting)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from experiment_server.config import ServerConfig


def example_yaml() -> str:
    """``examples/server.yaml``: every setting with its default and what it does, from the model above.

    Regenerate with ``python -m experiment_server.config_example > examples/server.yaml`` (a test keeps them equal).
    """
    import textwrap

    import yaml

    lines = [
        "# Every setting of `psychinterp serve --config FILE` (or PSYCHINTERP_SERVER_CONFIG for gunicorn), with",
        "# its default. Generated from experiment_server/config.py by `python -m experiment_server.config_example`.",
    ]

    def scalar(value) -> str:
        value = str(value) if isinstance(value, Path) else value
        return yaml.safe_dump(value, default_flow_style=True, width=1000).removesuffix("\n...\n").strip()

    def emit(model: type[BaseModel], defaults: BaseModel | None, indent: str) -> None:
        for name, field in model.model_fields.items():
            for line in textwrap.wrap(field.description or "", 100 - len(indent) - 2):
                lines.append(f"{indent}# {line}")
            if field.is_required():
                lines.append(f"{indent}# {name}: (required)")
                continue
            value = getattr(defaults, name) if defaults is not None else field.get_default(call_default_factory=True)
            if isinstance(value, BaseModel):
                lines.append(f"{indent}{name}:")
                emit(type(value), value, indent + "  ")
            else:
                lines.append(f"{indent}{name}: {scalar(value)}")

    emit(ServerConfig, None, "")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(example_yaml(), end="")
