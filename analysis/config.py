"""The analysis config (a YAML file for ``psychinterp analyze --config``): what a claim must clear.

Every field has a default, so a study without a file gets the defaults below; a file names only
what it changes.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from contracts.config import Strict
from contracts.errors import load_yaml

# The smallest slope of interest per predictor, in proportion correct per unit of the predictor:
# 2 percentage points per decade of parameters or training images, 2 points per 10 points of top-1.
DEFAULT_EQUIVALENCE_MARGINS = {
    "log10_parameters": 0.02,
    "log10_train_images": 0.02,
    "imagenet_top1": 0.002,
}


class AnalysisConfig(Strict):
    alpha: float = Field(0.05, gt=0, lt=0.5, description="family-wise error rate of the slope tests (Holm)")
    equivalence_margins: dict[str, float] = Field(
        DEFAULT_EQUIVALENCE_MARGINS,
        description="smallest slope of interest per predictor (proportion per unit of x), for the TOST "
        "equivalence test; a slope inside +-margin counts as no effect worth claiming",
    )
    power: float = Field(0.8, gt=0, lt=1, description="power at which the minimum detectable slope is stated")
    unit_kind_margin: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="smallest difference in accuracy between two unit kinds (e.g. SAE latents and channels) "
        "worth claiming, for their TOST equivalence test",
    )
    collinearity_r: float = Field(
        0.8,
        gt=0,
        le=1,
        description="two predictors that correlate beyond this across models are not separate questions: "
        "the report warns, and a primary predictor collinear with an earlier one becomes secondary",
    )
    primary_predictors: list[str] = Field(
        ["log10_parameters"],
        min_length=1,
        description="the predictors whose slopes answer the study's question: their tests form the primary "
        "Holm family (over conditions and unit kinds); every other predictor's slopes form a secondary family",
    )

    @field_validator("equivalence_margins")
    @classmethod
    def _positive_margins(cls, margins: dict[str, float]) -> dict[str, float]:
        if bad := sorted(name for name, margin in margins.items() if not margin > 0):
            raise ValueError(f"equivalence_margins: {bad} must be positive")
        return {**DEFAULT_EQUIVALENCE_MARGINS, **margins}

    @field_validator("primary_predictors")
    @classmethod
    def _known_predictors(cls, names: list[str]) -> list[str]:
        if unknown := sorted(set(names) - set(DEFAULT_EQUIVALENCE_MARGINS)):
            raise ValueError(f"primary_predictors: {unknown} unknown; known: {sorted(DEFAULT_EQUIVALENCE_MARGINS)}")
        return list(dict.fromkeys(names))

    def margin(self, predictor: str) -> float | None:
        return self.equivalence_margins.get(predictor)


DEFAULT_ANALYSIS = AnalysisConfig()


def load_analysis_config(path: str | Path) -> AnalysisConfig:
    return load_yaml(path, AnalysisConfig, "analysis config")
