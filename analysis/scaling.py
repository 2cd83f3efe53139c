"""Does interpretability scale? Slopes of accuracy against log10 of a model property, per condition.

The primary estimate is a unit-level linear mixed model (statsmodels ``MixedLM``):

    accuracy_unit ~ x + (1 | model)

where ``accuracy_unit`` is a unit's proportion correct on main trials and ``x`` is
log10(parameters), log10(training images) or ImageNet top-1. Units are nested in
models, so the model random intercept carries the between-model variance that
decides the slope's uncertainty, and the residual carries unit and participant
noise. The slope is in proportion correct per unit of ``x`` (per decade for the
log10 predictors). It scales: one row per unit, so a study of 767 units fits in
well under a second, where the trial-level ``BinomialBayesMixedGLM`` did not
finish in 15 minutes (issue 5). ``benchmarks/bench_mixed_model_coverage.py``
validates its 95% interval.

Robustness checks on the trial level: a logistic GEE with participants as clusters,
and a logistic GLM with model-clustered standard errors.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from statsmodels.tools.sm_exceptions import ConvergenceWarning

from analysis.estimate import main_trials

PREDICTORS = {
    "log10_parameters": "parameter_count",
    "log10_train_images": "train_images",
    "imagenet_top1": "imagenet_top1",
}


def with_model_facts(responses: pd.DataFrame, models: Mapping[str, Mapping[str, float | None]]) -> pd.DataFrame:
    """Add the predictors from model metadata (the bundle or models.yaml), never from constants."""
    frame = responses.copy()
    for column, fact in PREDICTORS.items():
        values = {m: facts.get(fact) for m, facts in models.items()}
        series = frame["model_id"].map(values).astype(float)
        frame[column] = np.log10(series) if column.startswith("log10") else series
    return frame


def _fit_mixed(units: pd.DataFrame, predictor: str) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        fit = smf.mixedlm(f"accuracy ~ {predictor}", units, groups=units["model_id"]).fit(reml=True)
    low, high = fit.conf_int().loc[predictor]
    return {
        "slope": float(fit.params[predictor]),
        "ci_low": float(low),
        "ci_high": float(high),
        "p": float(fit.pvalues[predictor]),
        "model_sd": float(np.sqrt(max(fit.cov_re.iloc[0, 0], 0.0))),
        "residual_sd": float(np.sqrt(fit.scale)),
    }


def unit_table(responses: pd.DataFrame, predictors: list[str]) -> pd.DataFrame:
    frame = main_trials(responses)
    keys = ["condition", "model_id", "unit_id"]
    units = frame.groupby(keys, sort=True).agg(accuracy=("correct", "mean"), n=("correct", "size")).reset_index()
    facts = frame.groupby("model_id")[predictors].first()
    return units.merge(facts, left_on="model_id", right_index=True)


def scaling_trends(responses: pd.DataFrame, predictors: list[str] | None = None) -> pd.DataFrame:
    """Slope of unit accuracy on each predictor, per condition, from the unit-level mixed model."""
    predictors = [p for p in (predictors or list(PREDICTORS)) if p in responses and responses[p].notna().any()]
    units = unit_table(responses, predictors)
    rows = []
    for condition, group in units.groupby("condition", sort=True):
        for predictor in predictors:
            data = group.dropna(subset=[predictor])
            if data["model_id"].nunique() < 3:
                continue  # a slope across fewer than three models says nothing
            rows.append(
                {
                    "condition": condition,
                    "predictor": predictor,
                    "n_models": data["model_id"].nunique(),
                    "n_units": len(data),
                    **_fit_mixed(data, predictor),
                }
            )
    return pd.DataFrame(rows)


def robustness_checks(responses: pd.DataFrame, predictor: str = "log10_parameters") -> pd.DataFrame:
    """Trial-level logistic slopes: GEE clustered by participant, and a GLM with model-clustered errors."""
    import statsmodels.api as sm

    frame = main_trials(responses).dropna(subset=[predictor])
    rows = []
    for condition, data in frame.groupby("condition", sort=True):
        if data["model_id"].nunique() < 3:
            continue
        gee = smf.gee(
            f"correct ~ {predictor}",
            groups="participant_id",
            data=data,
            family=sm.families.Binomial(),
            cov_struct=sm.cov_struct.Exchangeable(),
        ).fit()
        groups = data["model_id"].astype("category").cat.codes
        glm = smf.glm(f"correct ~ {predictor}", data=data, family=sm.families.Binomial()).fit(
            cov_type="cluster", cov_kwds={"groups": groups}
        )
        for name, fit in (("GEE, participant clusters", gee), ("GLM, model-clustered SE", glm)):
            low, high = fit.conf_int().loc[predictor]
            rows.append(
                {
                    "condition": condition,
                    "method": name,
                    "log_odds_slope": float(fit.params[predictor]),
                    "ci_low": float(low),
                    "ci_high": float(high),
                    "p": float(fit.pvalues[predictor]),
                }
            )
    return pd.DataFrame(rows)
