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

Checks (``robustness_checks``), both on unit accuracies with the models as clusters: CR2
with Satterthwaite degrees of freedom, and the mixed model ``accuracy ~ x + (1 | model)``
(``MixedLM``), reported as failed when its model variance sits at the boundary. Trial-level
GEE with participant clusters, a GLM with model-clustered errors and the wild cluster
bootstrap were dropped: they rejected too many null studies (docs/statistics.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats
from scipy.special import logit

from analysis.claims import (
    collinear_pairs,
    high_leverage_models,
    holm,
    minimum_detectable_slope,
    simultaneous_interval,
    tost_p,
    verdict,
    verdict_mde,
)
from analysis.cluster_robust import cr2_slope_test
from analysis.config import DEFAULT_ANALYSIS, AnalysisConfig
from analysis.estimate import main_trials, unit_accuracy
from contracts.units import CHANNEL_KIND

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
    # A second, baseline-free number: the same regression on the log-odds of the model means.
    log_odds = model_means.assign(accuracy=logit(model_means["accuracy"].clip(1e-3, 1 - 1e-3)))
    logit_fit = smf.ols(f"accuracy ~ {predictor}", data=log_odds).fit()
    return {
        **_slope_of(fit, predictor),
        "residual_sd_models": float(np.sqrt(fit.scale)),
        "slope_logit": float(logit_fit.params[predictor]),
    }


def _slope_of(fit, predictor: str) -> dict[str, float]:
    """An OLS fit's slope with its t interval (residual df: models - 2), standard error and p."""
    low, high = fit.conf_int().loc[predictor]
    return {
        "slope": float(fit.params[predictor]),
        "ci_low": float(low),
        "ci_high": float(high),
        "se": float(fit.bse[predictor]),
        "df": float(fit.df_resid),
        "p": float(fit.pvalues[predictor]),
    }


def unit_table(responses: pd.DataFrame, predictors: list[str]) -> pd.DataFrame:
    """Unit accuracies (:func:`analysis.estimate.unit_accuracy`) with their model's predictors."""
    facts = main_trials(responses).groupby("model_id")[predictors].first()
    return unit_accuracy(responses).merge(facts, left_on="model_id", right_index=True)


def with_claims(trends: pd.DataFrame, config: AnalysisConfig = DEFAULT_ANALYSIS) -> pd.DataFrame:
    """The corrected tests beside each slope (:mod:`analysis.claims`), per Holm family.

    Rows share a family by their ``family`` column (one family without it): ``p_holm`` corrects the
    tests of zero within it, ``tost_p_holm`` the equivalence tests against each predictor's margin;
    ``sim_ci_low``/``sim_ci_high`` is the simultaneous (Bonferroni) 95 % interval over the family,
    ``tost_ci_low``/``tost_ci_high`` the (1 - 2 alpha) one that equivalence is read from;
    ``mde`` is the slope the corrected test detects with the configured power (median-unbiased),
    ``mde_upper`` the same at the upper 80 % bound of the standard error; ``verdict`` is what the
    report may say.
    """
    if trends.empty:
        return trends
    out = trends.copy()
    if "family" not in out:
        out["family"] = "primary"
    out["family_size"] = out.groupby("family")["p"].transform(lambda p: max(int(p.notna().sum()), 1)).astype(int)
    out["p_holm"] = out.groupby("family")["p"].transform(lambda p: holm(p))
    out["margin"] = [config.margin(p) for p in out["predictor"]]
    out["tost_p"] = [tost_p(r.slope, r.se, r.df, r.margin) for r in out.itertuples()]
    out["tost_p_holm"] = out.groupby("family")["tost_p"].transform(lambda p: holm(p))
    bounds = [simultaneous_interval(r.slope, r.se, r.df, config.alpha, r.family_size) for r in out.itertuples()]
    out["sim_ci_low"], out["sim_ci_high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    # TOST at alpha over the family matches the (1 - 2 alpha / family size) interval inside the margin.
    bounds = [simultaneous_interval(r.slope, r.se, r.df, 2 * config.alpha, r.family_size) for r in out.itertuples()]
    out["tost_ci_low"], out["tost_ci_high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    out["mde"] = [verdict_mde(r.se, r.df, config.alpha, config.power, r.family_size) for r in out.itertuples()]
    upper_se = out["se"] / np.sqrt(stats.chi2.ppf(0.2, out["df"]) / out["df"])
    out["mde_upper"] = [
        minimum_detectable_slope(se, r.df, config.alpha / r.family_size, config.power)
        for se, r in zip(upper_se, out.itertuples(), strict=True)
    ]
    out["verdict"] = [verdict(r.slope, r.p_holm, r.tost_p_holm, config.alpha) for r in out.itertuples()]
    return out


def predictor_families(
    facts: Mapping[str, Mapping[str, float]], config: AnalysisConfig = DEFAULT_ANALYSIS
) -> tuple[dict[str, str], list[str]]:
    """Each predictor's Holm family ("primary" or "secondary") and why any configured primary is not.

    The configured primary predictors that the data hold are primary, unless one correlates beyond
    ``collinearity_r`` with an earlier one across the models: then it asks the same question and is
    secondary. Every other predictor is secondary.
    """
    primaries, notes = [], []
    for name in config.primary_predictors:
        if name not in facts:
            continue
        earlier = {name: facts[name], **{p: facts[p] for p in primaries}}
        if clash := [(b, r) for a, b, r in collinear_pairs(earlier, config.collinearity_r) if a == name]:
            other, r = clash[0]
            notes.append(f"{name} correlates with {other} (r = {r:+.2f}): tested as secondary, not as a second primary")
            continue
        primaries.append(name)
    return {p: ("primary" if p in primaries else "secondary") for p in facts}, notes


def _predictor_values(responses: pd.DataFrame, predictors: list[str]) -> dict[str, dict[str, float]]:
    """Each predictor's value per model (models without it left out)."""
    facts = main_trials(responses).groupby("model_id")[predictors].first()
    return {p: facts[p].dropna().to_dict() for p in predictors}


def scaling_warnings(
    responses: pd.DataFrame, trends: pd.DataFrame, config: AnalysisConfig = DEFAULT_ANALYSIS
) -> list[str]:
    """What qualifies the slopes: collinear predictors, and slopes that rest on one or two models."""
    if trends.empty:
        return []
    values = _predictor_values(responses, list(dict.fromkeys(trends["predictor"])))
    predictors = list(values)
    families, notes = predictor_families(values, config)
    for a, b, r in collinear_pairs(values, config.collinearity_r):
        secondary = [p for p in (a, b) if families[p] == "secondary"]
        why = f"; {' and '.join(secondary)}: secondary, corrected in its own Holm family" if secondary else ""
        notes.append(
            f"{a} and {b} correlate (r = {r:+.2f}) across the models: their slopes are not separate effects{why}"
        )
    for predictor in predictors:
        if heavy := high_leverage_models(values[predictor]):
            notes.append(
                f"the {predictor} slope rests heavily on {', '.join(heavy)} (leverage above 4 / models): "
                "without them it could differ"
            )
    return notes


def scaling_trends(
    responses: pd.DataFrame, predictors: list[str] | None = None, config: AnalysisConfig = DEFAULT_ANALYSIS
) -> pd.DataFrame:
    """Slope of accuracy on each predictor, per condition and unit kind (two-stage: units, then models),
    with its claims; the primary predictors' rows are one Holm family, the others' a secondary one
    (:func:`predictor_families`)."""
    predictors = [p for p in (predictors or list(PREDICTORS)) if p in responses and responses[p].notna().any()]
    units = unit_table(responses, predictors)
    if "unit_kind" not in units:
        units["unit_kind"] = CHANNEL_KIND
    rows = []
    # Per unit kind as well: channels and SAE latents may scale differently.
    for (condition, kind), group in units.groupby(["condition", "unit_kind"], sort=True):
        for predictor in predictors:
            data = group.dropna(subset=[predictor])
            if data["model_id"].nunique() < 3:
                continue  # a slope across fewer than three models says nothing
            if data.groupby("model_id")[predictor].first().nunique() < 2:
                continue  # every model has the same value (e.g. one training set): no slope to fit
            rows.append(
                {
                    "condition": condition,
                    "unit_kind": kind,
                    "predictor": predictor,
                    "n_models": data["model_id"].nunique(),
                    "n_units": len(data),
                    **_fit_two_stage(data, predictor),
                }
            )
    trends = pd.DataFrame(rows)
    if not trends.empty:
        families = predictor_families(_predictor_values(responses, predictors), config)[0]
        trends["family"] = trends["predictor"].map(families)
    return with_claims(trends, config)


def condition_interaction(
    responses: pd.DataFrame, predictor: str = "log10_parameters", config: AnalysisConfig = DEFAULT_ANALYSIS
) -> pd.DataFrame:
    """Does one condition scale differently from another? The slope of their difference, per pair.

    Per model present in both conditions, the difference of its two model means (mean unit
    accuracy); then ``difference ~ x`` by OLS across models. Its slope is the difference of the two
    conditions' slopes on those models, with the same t interval (models - 2 df) and the same claims.
    """
    if predictor not in responses or responses[predictor].isna().all():
        return pd.DataFrame()
    units = unit_table(responses, [predictor]).dropna(subset=[predictor])
    means = units.groupby(["condition", "model_id"]).agg(accuracy=("accuracy", "mean"), x=(predictor, "first"))
    conditions = sorted(units["condition"].unique())
    rows = []
    for i, first in enumerate(conditions):
        for second in conditions[i + 1 :]:
            a, b = means.loc[first], means.loc[second]
            shared = a.index.intersection(b.index)
            if len(shared) < 3 or a.loc[shared, "x"].nunique() < 2:
                continue
            paired = pd.DataFrame(
                {"difference": a.loc[shared, "accuracy"] - b.loc[shared, "accuracy"], predictor: a.loc[shared, "x"]}
            )
            fit = smf.ols(f"difference ~ {predictor}", data=paired).fit()
            rows.append(
                {
                    "condition": f"{first} - {second}",
                    "predictor": predictor,
                    "n_models": len(shared),
                    **_slope_of(fit, predictor),
                    "family": "interaction",
                }
            )
    return with_claims(pd.DataFrame(rows), config)


# Measured by benchmarks/bench_mixed_model_coverage.py (docs/performance.md): the largest share of
# null studies in which each check rejected at 0.05, over every cell of its grid. The report prints
# it beside each check, so that a reader knows how far to trust a "significant" check.
CHECK_FALSE_POSITIVE_RATES = {
    "CR2, model clusters, Satterthwaite df": 0.050,
    "MixedLM, units, (1 | model)": 0.056,  # failed fits count as not rejecting
}


# The same benchmark, in its cells with identical models (model SD 0, no slope): the largest share
# of studies in which each test of "the models differ" rejected at 0.05.
MODEL_TEST_FALSE_POSITIVE_RATES = {"models_differ": 0.034, "kruskal_wallis": 0.952}


def mixed_model_problem(fit, slope_se_two_stage: float) -> str | None:
    """Why a MixedLM fit cannot be reported, or None.

    At the variance boundary (a model variance estimated at or near zero) statsmodels' standard
    errors are unreliable: in simulated studies they reached 10^5 and more.
    """
    if not getattr(fit, "converged", False):
        return "did not converge"
    variance = float(np.asarray(fit.cov_re)[0, 0])
    if not variance > 1e-6 * float(fit.scale):
        return "model variance at the boundary (estimated as zero)"
    se = float(fit.bse.iloc[1])
    if not np.isfinite(se) or se > 100 * slope_se_two_stage:
        return "standard error not finite or absurd"
    return None


def robustness_checks(responses: pd.DataFrame, predictor: str = "log10_parameters") -> pd.DataFrame:
    """The slope on unit accuracies, tested two other ways, per condition (models as clusters).

    CR2 with Satterthwaite df (``analysis.cluster_robust``) uses every unit, clustered by model;
    MixedLM fits ``accuracy ~ x + (1 | model)`` by REML and is reported as failed when it fails
    (:func:`mixed_model_problem`), never with its interval.
    """
    frame = main_trials(responses).dropna(subset=[predictor])
    rows = []
    for condition, data in unit_table(frame, [predictor]).groupby("condition", sort=True):
        if data["model_id"].nunique() < 3 or data.groupby("model_id")[predictor].first().nunique() < 2:
            continue
        y, x = data["accuracy"].to_numpy(), data[predictor].to_numpy()
        clusters = data["model_id"].to_numpy()
        cr2 = cr2_slope_test(y, x, clusters)
        base = {"condition": condition, "scale": "proportion"}
        rows.append(
            {
                **base,
                "method": "CR2, model clusters, Satterthwaite df",
                "slope": cr2.estimate,
                "ci_low": cr2.ci_low,
                "ci_high": cr2.ci_high,
                "df": cr2.df,
                "p": cr2.p,
                "status": "ok",
            }
        )
        two_stage = _fit_two_stage(data, predictor)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fit = smf.mixedlm(f"accuracy ~ {predictor}", data, groups=data["model_id"]).fit(reml=True)
                problem = mixed_model_problem(fit, two_stage["se"])
            except (np.linalg.LinAlgError, ValueError) as exc:
                fit, problem = None, f"failed: {exc}"
        row = {**base, "method": "MixedLM, units, (1 | model)", "ci_low": np.nan, "ci_high": np.nan, "df": np.nan}
        if problem is None:
            slope, se = float(fit.params[predictor]), float(fit.bse[predictor])
            df = data["model_id"].nunique() - 2
            half = stats.t.ppf(0.975, df) * se
            row |= {
                "slope": slope,
                "ci_low": slope - half,
                "ci_high": slope + half,
                "df": float(df),
                "p": float(2 * stats.t.sf(abs(slope / se), df)),
                "status": "ok",
            }
        else:
            row |= {"slope": np.nan, "p": np.nan, "status": f"failed to fit: {problem}"}
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        table["false_positive_rate"] = table["method"].map(CHECK_FALSE_POSITIVE_RATES)
    return table
