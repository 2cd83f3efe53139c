"""Declarative model specs: the schema of ``models.yaml``.

Torch-free, so the server and the analysis can read model metadata too.
Architecture (``source`` + ``constructor``) is kept apart from pretrained
weights (``weights`` tag for the hub, ``weights_file`` for offline use).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from contracts.errors import load_yaml

# The sources a models file may name; stimuli.registry.SOURCES holds a builder for each.
ModelSource = Literal["torchvision", "timm", "open_clip", "lucent", "psychinterp", "python"]
NO_HUB_SOURCES = ("psychinterp", "python")  # weights only from weights_file / weights_url
# The nine models of the 2023 study; package data, so an installed wheel has it too.
DEFAULT_MODELS_FILE = Path(__file__).resolve().parent / "models.yaml"


class Preprocessing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    resize: int = Field(256, gt=0)
    crop: int = Field(224, gt=0)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    @field_validator("std")
    @classmethod
    def _positive_std(cls, std: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(std) <= 0:
            raise ValueError("every std value must be > 0")
        return std


class LayerPatterns(BaseModel):
    """fnmatch patterns over ``named_modules()`` names of the analysed module."""

    model_config = ConfigDict(extra="forbid")

    include: list[str] = Field(min_length=1)
    exclude: list[str] = []


class ModelMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train_images: int = Field(gt=0, description="training-set size in images")
    imagenet_top1: float | None = Field(None, ge=0, le=100)
    top1_note: str | None = None


class ModelSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    _models_file: Path | None = PrivateAttr(None)  # where it was read, for messages

    def where(self) -> str:
        """The model and the models file that defines it, for messages."""
        return f"model {self.id!r}" + (f" (in {self._models_file})" if self._models_file else "")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_]*$")
    display_name: str
    source: ModelSource
    constructor: str = Field(description="source python: 'package.module:callable' (the callable may be dotted)")
    constructor_kwargs: dict[str, Any] = {}
    import_path: list[Path] = Field(
        [], description="source python: folders searched first for the constructor's module (relative to this file)"
    )
    weights: str | None = Field(None, description="weights tag used when online")
    weights_url: str | None = Field(None, description="direct URL, for weights not on a hub")
    weights_file: Path | None = Field(None, description="local state dict or checkpoint")
    preprocessing: Preprocessing = Preprocessing()
    layers: LayerPatterns
    prefix_tokens: int = Field(0, ge=0, description="tokens (CLS, registers) left out of token means")
    fixed_input_size: bool = Field(False, description="the model accepts only preprocessing.crop inputs (ViTs)")
    metadata: ModelMetadata

    @model_validator(mode="after")
    def _source_rules(self) -> ModelSpec:
        if self.source == "python" and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", self.constructor):
            raise ValueError(
                f"constructor {self.constructor!r}: source python needs 'package.module:callable', "
                "e.g. 'pytorchcv.model_provider:get_model'"
            )
        if self.import_path and self.source != "python":
            raise ValueError("import_path is only for source python")
        if self.weights is not None and self.source in NO_HUB_SOURCES:
            raise ValueError(f"source {self.source} has no hub, so no weights tag: use weights_file or weights_url")
        return self


class ModelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelSpec] = Field(min_length=1)

    @field_validator("models")
    @classmethod
    def _unique_ids(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        seen: set[str] = set()
        for spec in models:
            if spec.id in seen:
                raise ValueError(f"model id {spec.id!r} appears twice")
            seen.add(spec.id)
        return models


def default_models_file() -> Path:
    """``$PSYCHINTERP_MODELS``, else ./models.yaml, else the package's (stimuli/models.yaml)."""
    if env := os.environ.get("PSYCHINTERP_MODELS"):
        return Path(env)
    local = Path("models.yaml")
    return local if local.is_file() else DEFAULT_MODELS_FILE


def load_model_specs(path: str | Path | None = None) -> dict[str, ModelSpec]:
    """Read and validate a models file. Relative weight paths resolve against it."""
    path = Path(path) if path is not None else default_models_file()
    parsed = load_yaml(path, ModelsFile, "models file")
    specs = {}
    for spec in parsed.models:
        if spec.weights_file is not None and not spec.weights_file.is_absolute():
            spec = spec.model_copy(update={"weights_file": path.parent / spec.weights_file})
        if spec.import_path:
            spec = spec.model_copy(update={"import_path": [path.parent / p for p in spec.import_path]})
        spec._models_file = path
        specs[spec.id] = spec
    return specs
