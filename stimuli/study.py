"""The study config read by ``psychinterp build`` (a YAML file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from stimuli.errors import ConfigError, format_validation_error


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetConfig(_Strict):
    path: Path = Field(description="an ImageFolder-style tree, or any folder tree of images")
    batch_size: int = Field(32, gt=0)
    num_workers: int = Field(0, ge=0, description="DataLoader workers that decode images")


class ExemplarConfig(_Strict):
    references: int = Field(9, gt=0, description="reference images per side")
    query_offset: int = Field(0, ge=0, description="ranks skipped between the references and the query")


class FeatureVisConfig(_Strict):
    steps: int = Field(64, gt=0)
    image_size: int = Field(224, ge=32)
    padding: int = Field(16, ge=0)
    lr: float = Field(0.05, gt=0)
    images_per_direction: int | None = Field(None, gt=0, description="defaults to exemplars.references")


class StudyConfig(_Strict):
    study_id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    title: str = ""
    models_file: Path | None = Field(None, description="defaults to the project's models.yaml")
    models: list[str] = Field(min_length=1)
    units_per_model: int = Field(gt=0)
    dataset: DatasetConfig
    exemplars: ExemplarConfig = ExemplarConfig()
    feature_visualization: FeatureVisConfig = FeatureVisConfig()
    conditions: list[Literal["natural", "synthetic", "none"]] = Field(["natural", "synthetic"], min_length=1)
    trials_per_task: int = Field(gt=0)
    seed: int = 0

    @model_validator(mode="after")
    def _unique(self) -> StudyConfig:
        for field in ("models", "conditions"):
            values = getattr(self, field)
            if len(set(values)) != len(values):
                raise ValueError(f"{field} lists a value twice")
        return self


def load_study_config(path: str | Path) -> StudyConfig:
    """Read a study config; relative paths resolve against the config's folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: study config not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        config = StudyConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc, raw)) from None
    base = path.parent
    dataset = config.dataset.model_copy(update={"path": base / config.dataset.path})
    models_file = base / config.models_file if config.models_file else None
    return config.model_copy(update={"dataset": dataset, "models_file": models_file})
