"""Prediction-powered estimates: a machine scores every unit, people rate some (PPI++).

Per model and condition the estimand is the mean accuracy of the model's units (the population the
scored units were sampled from). With ``n`` units rated by people (unit accuracy ``y``) among ``N``
units scored by a machine (score ``f``), the estimate is

    theta = lambda * mean_N(f) + mean_n(y - lambda * f)

(Angelopoulos et al. 2023; PPI++, Angelopoulos, Duchi & Zrnic 2023). It is unbiased for any
``lambda``: the residual term removes what the machine gets wrong on average. Written over the
disjoint sets, ``theta = mean_n(y) - c * mean_n(f) + c * mean_U(f)`` with ``U`` the ``N - n`` units
only the machine scored and ``c = lambda * (1 - n / N)``, which is PPI++'s power-tuned weight when
``lambda`` is the regression slope of ``y`` on ``f``. The slope is pooled within models per condition
(:func:`tuned_weight`) and cross-fitted: a model's weight comes from the other models' rated units, so
its own answers decide nothing about it. A useless machine gets a weight near zero and the estimate
falls back to the human mean; with every scored unit rated, ``c = 0`` and it *is* the human mean (the machine narrows
an interval only through units that people did not rate).

Variance: the rated part is a weighted mean of single answers, ``x = correct - c * f`` with weight
``1 / (n * answers on the unit)``, whose variance is the two-way cluster-robust one (units and
participants; Cameron, Gelbach & Miller 2011, statsmodels' ``cov_type="cluster"`` with two group
columns); the machine-only part adds ``c^2 var(f) / (N - n)``. With the weight cross-fitted it is fixed
given the model's own data, so this variance is the estimate's (PPI++'s plug-in weight would be right to
second order only); the bootstrap is not used because
the two-way (pigeonhole) bootstrap counts answer noise two to three times, which no machine can explain,
and would hide the gain. The human-only interval is the same computation with ``c = 0``, so the two are
compared like for like. ``benchmarks/bench_ppi.py`` measures coverage and widths.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
import statsmodels.formula.api as smf
from scipy import stats

from analysis.estimate import main_trials
from contracts.units import CHANNEL_KIND

# Below these, an interval's variance rests on too few clusters: the estimate is withheld, with the reason.
MIN_RATED_UNITS = 5
MIN_PARTICIPANTS = 3

# Measured by benchmarks/bench_ppi.py (docs/statistics.md): the lowest and highest coverage of the 95 % PPI
# intervals over its cells (machine correlation 0, 0.5, 0.8 and a miscalibrated one), per model and for the
# slope; the report prints them beside the intervals.
PPI_COVERAGE_MEASURED = (0.950, 0.961)
PPI_SLOPE_COVERAGE_MEASURED = (0.932, 0.965)


@dataclass(frozen=True)
class PPIResults:
    """Per model x condition: the human-only and the machine-assisted mean unit accuracy; per condition:
    the tuned weight; per condition x predictor: both slopes; and what was withheld, with why."""

    cells: pd.DataFrame
    weights: pd.DataFrame  # condition, weight (lambda), rated units it was tuned on
    slopes: pd.DataFrame
    withheld: list[str]
    level: float = 0.95


def scored_units(main: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """One row per scored unit and condition: model, unit kind, machine score, and (rated units) the human
    accuracy, answers and raters. A unit's kind comes from the scores (the bundle's) or its responses;
    channel when neither says."""
    if "unit_kind" not in main:
        main = main.assign(unit_kind=CHANNEL_KIND)
    human = main.groupby(["unit_id", "condition"], sort=True).agg(
        human_accuracy=("correct", "mean"),
        n_responses=("correct", "size"),
        n_raters=("participant_id", "nunique"),
        rated_model=("model_id", "first"),
        rated_kind=("unit_kind", "first"),
    )
    table = scores.merge(human.reset_index(), on=["unit_id", "condition"], how="left")
    for column, rated in (("model_id", "rated_model"), ("unit_kind", "rated_kind")):
        table[column] = table[column].fillna(table[rated]) if column in table else table[rated]
    table["unit_kind"] = table["unit_kind"].fillna(CHANNEL_KIND)
    table["rated"] = table["n_responses"].notna()
    return table.drop(columns=["rated_model", "rated_kind"])


def tuned_weight(units: pd.DataFrame) -> float:
    """The power-tuned lambda: the slope of human accuracy on machine score across the rated units,
    within models (each model's own means removed), pooled over them; 0 if the scores do not vary."""
    rated = units[units["rated"]]
    cells = rated.groupby(["model_id", "unit_kind"])
    y = rated["human_accuracy"] - cells["human_accuracy"].transform("mean")
    f = rated["machine_score"] - cells["machine_score"].transform("mean")
    spread = float((f**2).sum())
    return float((y * f).sum() / spread) if spread > 1e-12 else 0.0


def two_way_variance(x: np.ndarray, weights: np.ndarray, units: np.ndarray, participants: np.ndarray) -> float:
    """Variance of the weighted mean of ``x`` with answers clustered by unit and by participant (CGM)."""
    fit = sm.WLS(x, np.ones((len(x), 1)), weights=weights).fit(
        cov_type="cluster", cov_kwds={"groups": np.column_stack([units, participants])}
    )
    variance = float(fit.cov_params()[0, 0])
    if variance <= 0:  # the two-way sum can go negative in tiny samples: fall back to the larger one-way
        variance = max(
            float(
                sm.WLS(x, np.ones((len(x), 1)), weights=weights)
                .fit(cov_type="cluster", cov_kwds={"groups": g})
                .cov_params()[0, 0]
            )
            for g in (units, participants)
        )
    return variance


def ppi_cell(answers: pd.DataFrame, units: pd.DataFrame, weight: float, level: float = 0.95) -> dict:
    """One model x condition: the human-only and the PPI estimate with their intervals.

    ``answers``: its main-trial responses; ``units``: its scored units (:func:`scored_units`);
    ``weight``: lambda (:func:`tuned_weight`).
    """
    rated = units[units["rated"]]
    n, big_n = len(rated), len(units)
    c = weight * (1 - n / big_n) + 0.0  # + 0.0: no negative zero in the tables
    score = dict(zip(rated["unit_id"], rated["machine_score"], strict=True))
    codes_u, _ = pd.factorize(answers["unit_id"])
    codes_p, _ = pd.factorize(answers["participant_id"])
    per_unit = answers.groupby("unit_id")["correct"].transform("size").to_numpy(float)
    omega = 1.0 / (n * per_unit)
    correct = answers["correct"].to_numpy(float)
    f_answer = answers["unit_id"].map(score).to_numpy(float)
    human = float(rated["human_accuracy"].mean())
    human_var = two_way_variance(correct, omega, codes_u, codes_p)
    unscored = units.loc[~units["rated"], "machine_score"]
    estimate = human - c * float(rated["machine_score"].mean()) + (c * float(unscored.mean()) if len(unscored) else 0)
    ppi_var = two_way_variance(correct - c * f_answer, omega, codes_u, codes_p)
    if len(unscored):
        ppi_var += c**2 * float(units["machine_score"].var(ddof=1)) / len(unscored)
    df = min(n, answers["participant_id"].nunique()) - 1
    t = stats.t.ppf(0.5 + level / 2, df)
    human_se, ppi_se = np.sqrt(human_var), np.sqrt(ppi_var)
    responses = len(answers)
    human_low, human_high = _bounded(human, t * human_se)
    ppi_low, ppi_high = _bounded(estimate, t * ppi_se)
    return {
        "human_estimate": human,
        "human_ci_low": human_low,
        "human_ci_high": human_high,
        "human_se": human_se,
        "ppi_estimate": estimate,
        "ppi_ci_low": ppi_low,
        "ppi_ci_high": ppi_high,
        "ppi_se": ppi_se,
        "width_ratio": ppi_se / human_se if human_se > 0 else np.nan,
        "weight": weight,
        "ppi_weight": c,
        "df": df,
        "n_rated_units": n,
        "n_scored_units": big_n,
        "n_responses": responses,
        "n_participants": int(answers["participant_id"].nunique()),
        # Human answers that would give the human-only estimate the PPI variance, to first order.
        "effective_responses": responses * human_var / ppi_var if ppi_var > 0 else np.nan,
    }


def _bounded(estimate: float, half_width: float) -> tuple[float, float]:
    """The interval within [0, 1], where accuracies lie (clipping only adds coverage), and around the estimate
    (an unbiased PPI estimate may itself stray just past a bound)."""
    low = min(max(estimate - half_width, 0.0), estimate)
    high = max(min(estimate + half_width, 1.0), estimate)
    return low, high


def _withheld_reason(units: pd.DataFrame, answers: pd.DataFrame) -> str | None:
    n = int(units["rated"].sum())
    if n < MIN_RATED_UNITS:
        return f"{n} rated unit(s), fewer than {MIN_RATED_UNITS}: the residuals' variance is not estimable"
    if answers["participant_id"].nunique() < MIN_PARTICIPANTS:
        return f"{answers['participant_id'].nunique()} participant(s), fewer than {MIN_PARTICIPANTS}"
    if answers["correct"].nunique() < 2:
        word = "correct" if answers["correct"].iloc[0] else "wrong"
        return f"all {len(answers)} answers are {word}: no spread to estimate the variance from"
    return None


def ppi_estimates(
    responses: pd.DataFrame, scores: pd.DataFrame, facts: pd.DataFrame | None = None, level: float = 0.95
) -> PPIResults:
    """Human-only and PPI mean unit accuracy per model x condition, and (with ``facts``: one row per model,
    a column per predictor) both scaling slopes per condition.

    ``scores``: unit_id, condition, machine_score and, for units nobody rated, model_id. Every rated unit
    must be scored (:func:`check_scores_cover` says which are not).
    """
    main = main_trials(responses)
    main = main[main["condition"].isin(set(scores["condition"]))]
    units = scored_units(main, scores)
    rows, weights, withheld = [], [], []
    if "unit_kind" not in main:
        main = main.assign(unit_kind=CHANNEL_KIND)
    for condition, cond_units in units.groupby("condition", sort=True):
        weight = tuned_weight(cond_units)
        weights.append({"condition": condition, "weight": weight, "n_rated_units": int(cond_units["rated"].sum())})
        # Per unit kind too: the scored units must be the population the rated ones were sampled from.
        for (model_id, kind), cell_units in cond_units.groupby(["model_id", "unit_kind"], sort=True):
            # Cross-fitted: a model's weight is tuned on the other models' rated units, so that its own
            # answers decide nothing about it (one model alone: its own).
            others = cond_units[cond_units["model_id"] != model_id]
            own_weight = tuned_weight(others) if others["rated"].sum() >= MIN_RATED_UNITS else weight
            answers = main[
                (main["model_id"] == model_id) & (main["condition"] == condition) & (main["unit_kind"] == kind)
            ]
            label = {"model_id": model_id, "condition": condition, "unit_kind": kind}
            if reason := _withheld_reason(cell_units, answers):
                named = f"{model_id}, {condition}" + (f", {kind}" if kind != CHANNEL_KIND else "")
                withheld.append(f"{named}: PPI and human-only intervals withheld ({reason})")
                continue
            rows.append({**label, **ppi_cell(answers, cell_units, own_weight, level)})
    cells = pd.DataFrame(rows)
    slopes = ppi_slopes(cells, facts, level) if facts is not None and not cells.empty else pd.DataFrame()
    return PPIResults(cells, pd.DataFrame(weights), slopes, withheld, level)


def _ols_slope(frame: pd.DataFrame, y: str, predictor: str, level: float) -> dict[str, float]:
    fit = smf.ols(f"{y} ~ {predictor}", data=frame).fit()
    low, high = fit.conf_int(alpha=1 - level).loc[predictor]
    return {"slope": float(fit.params[predictor]), "ci_low": float(low), "ci_high": float(high)}


def ppi_slopes(cells: pd.DataFrame, facts: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per condition and predictor: the two-stage slope on the human-only model means and on the PPI ones
    (OLS across models, t interval on models - 2 df: the model means carry every source of variance)."""
    rows = []
    for (condition, kind), group in cells.groupby(["condition", "unit_kind"], sort=True):
        joined = group.merge(facts, left_on="model_id", right_index=True)
        for predictor in facts.columns:
            data = joined.dropna(subset=[predictor])
            if len(data) < 3 or data[predictor].nunique() < 2:
                continue
            human = _ols_slope(data, "human_estimate", predictor, level)
            ppi = _ols_slope(data, "ppi_estimate", predictor, level)
            rows.append(
                {
                    "condition": condition,
                    "unit_kind": kind,
                    "predictor": predictor,
                    "n_models": len(data),
                    **{f"human_{k}": v for k, v in human.items()},
                    **{f"ppi_{k}": v for k, v in ppi.items()},
                    "width_ratio": (ppi["ci_high"] - ppi["ci_low"]) / (human["ci_high"] - human["ci_low"]),
                }
            )
    return pd.DataFrame(rows)
