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
        0.8, gt=0, le=1, description="warn when two predictors correlate beyond this across models"
    )

    @field_validator("equivalence_margins")
    @classmethod
    def _positive_margins(cls, margins: dict[str, float]) -> dict[str, float]:
        if bad := sorted(name for name, margin in margins.items() if not margin > 0):
            raise ValueError(f"equivalence_margins: {bad} must be positive")
        return {**DEFAULT_EQUIVALENCE_MARGINS, **margins}

    def margin(self, predictor: str) -> float | None:
        return self.equivalence_margins.get(predictor)


DEFAULT_ANALYSIS = AnalysisConfig()


def load_analysis_config(path: str | Path) -> AnalysisConfig:
    return load_yaml(path, AnalysisConfig, "analysis config")
