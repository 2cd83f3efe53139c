"""Does interpretability scale? Slopes of accuracy against log10 of a model property, per condition.

The primary estimate is a two-stage meta-regression, stated as statsmodels formulas:

1. per unit: its proportion correct on main trials (participants' answers pooled);
2. per model: the mean of its units' accuracies; then ``accuracy ~ x`` by OLS across models,

where ``x`` is log10(parameters), log10(training images) or ImageNet top-1. The
model means carry every source of variance (participants, units, and the models'
own deviations from the trend), so the slope's 95% interval, a t interval with
(models - 2) degrees of freedom, accounts for all three; with equal units per
model it is the exact interval of the random-intercept model. It scales: one
row per model after one group-by, where the trial-level ``BinomialBayesMixedGLM``
did not finish in 15 minutes (issue 5). ``benchmarks/bench_mixed_model_coverage.py``
validates its coverage. The slope is in proportion correct per unit of ``x``
(per decade for the log10 predictors).

Checks (``robustness_checks``): the unit-level mixed model ``accuracy ~ x + (1 | model)``
(``MixedLM``), a trial-level logistic GEE with participants as clusters, and a
logistic GLM with model-clustered standard errors. The unit-level MixedLM fails at
the boundary (a model variance estimated at zero gives absurd standard errors), one
reason it is not the primary estimate.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats

from analysis.estimate import main_trials, unit_accuracy

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


def _fit_two_stage(units: pd.DataFrame, predictor: str) -> dict[str, float]:
    model_means = units.groupby("model_id").agg(accuracy=("accuracy", "mean"), **{predictor: (predictor, "first")})
    fit = smf.ols(f"accuracy ~ {predictor}", data=model_means).fit()
    low, high = fit.conf_int().loc[predictor]  # t with (models - 2) degrees of freedom
    return {
        "slope": float(fit.params[predictor]),
        "ci_low": float(low),
        "ci_high": float(high),
        "p": float(fit.pvalues[predictor]),
        "residual_sd_models": float(np.sqrt(fit.scale)),
    }


def _fit_mixed(units: pd.DataFrame, predictor: str) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = smf.mixedlm(f"accuracy ~ {predictor}", units, groups=units["model_id"]).fit(reml=True)
    slope, se = float(fit.params[predictor]), float(fit.bse[predictor])
    df = units["model_id"].nunique() - 2
    half = stats.t.ppf(0.975, df) * se
    return {
        "slope": slope,
        "ci_low": slope - half,
        "ci_high": slope + half,
        "p": float(2 * stats.t.sf(abs(slope / se), df)),
    }


def unit_table(responses: pd.DataFrame, predictors: list[str]) -> pd.DataFrame:
    """Unit accuracies (:func:`analysis.estimate.unit_accuracy`) with their model's predictors."""
    facts = main_trials(responses).groupby("model_id")[predictors].first()
    return unit_accuracy(responses).merge(facts, left_on="model_id", right_index=True)


def scaling_trends(responses: pd.DataFrame, predictors: list[str] | None = None) -> pd.DataFrame:
    """Slope of accuracy on each predictor, per condition (two-stage: units, then models)."""
    predictors = [p for p in (predictors or list(PREDICTORS)) if p in responses and responses[p].notna().any()]
    units = unit_table(responses, predictors)
    rows = []
    for condition, group in units.groupby("condition", sort=True):
        for predictor in predictors:
            data = group.dropna(subset=[predictor])
            if data["model_id"].nunique() < 3:
                continue  # a slope across fewer than three models says nothing
            if data.groupby("model_id")[predictor].first().nunique() < 2:
                continue  # every model has the same value (e.g. one training set): no slope to fit
            rows.append(
                {
                    "condition": condition,
                    "predictor": predictor,
                    "n_models": data["model_id"].nunique(),
                    "n_units": len(data),
                    **_fit_two_stage(data, predictor),
                }
            )
    return pd.DataFrame(rows)


def robustness_checks(responses: pd.DataFrame, predictor: str = "log10_parameters") -> pd.DataFrame:
    """The unit-level mixed model, and trial-level logistic slopes (GEE by participant, GLM model-clustered)."""
    import statsmodels.api as sm

    frame = main_trials(responses).dropna(subset=[predictor])
    rows = []
    units = unit_table(frame, [predictor])
    for condition, data in units.groupby("condition", sort=True):
        if data["model_id"].nunique() >= 3:
            fit = _fit_mixed(data, predictor)
            rows.append(
                {
                    "condition": condition,
                    "method": "MixedLM, units, (1 | model)",
                    "slope": fit["slope"],
                    "ci_low": fit["ci_low"],
                    "ci_high": fit["ci_high"],
                    "p": fit["p"],
                    "scale": "proportion",
                }
            )
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
                    "slope": float(fit.params[predictor]),
                    "ci_low": float(low),
                    "ci_high": float(high),
                    "p": float(fit.pvalues[predictor]),
                    "scale": "log-odds",
                }
            )
    return pd.DataFrame(rows)
