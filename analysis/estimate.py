"""Accuracy estimates with bootstrap confidence intervals (pure functions on data frames)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.claims import holm
from contracts.paradigms import PARADIGMS, TWO_AFC, Paradigm, paradigm_named


def _ratio(correct: np.ndarray, n: np.ndarray, axis: int = -1) -> np.ndarray:
    return correct.sum(axis=axis) / n.sum(axis=axis)


def participant_bootstrap_ci(
    correct: np.ndarray, n: np.ndarray, n_resamples: int = 10_000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """CI of pooled accuracy, resampling participants (each participant's responses stay together)."""
    if len(correct) < 2:
        return (np.nan, np.nan)
    result = stats.bootstrap(
        (correct, n),
        _ratio,
        paired=True,
        vectorized=True,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


# Measured by benchmarks/bench_interval_coverage.py (docs/performance.md): the share of simulated
# cells (25 participants x 40 trials on 60 units) whose 95 % interval covered the true accuracy,
# per design. The report prints it beside each interval so that a reader sees when one under-covers.
INTERVAL_COVERAGE = {
    "ci": {"units dominate": 0.9825, "participants dominate": 0.9645, "balanced": 0.9775},
    "participant_ci": {"units dominate": 0.715, "participants dominate": 0.923, "balanced": 0.8855},
    "unit_bca": {"units dominate": 0.9325, "participants dominate": 0.5645, "balanced": 0.81},
}


def accuracy_table(responses: pd.DataFrame, n_resamples: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Accuracy per model x condition on main trials, with three 95% intervals.

    ``ci_low``/``ci_high``: participants and units resampled jointly (the primary interval);
    ``participant_ci_*``: participants only; ``unit_bca_*``: the 2023 study's BCa interval of
    the mean unit accuracy.
    """
    responses = main_trials(responses)
    rows = []
    for (model_id, condition), group in responses.groupby(["model_id", "condition"], sort=True):
        k, n = cell_counts(group)
        low, high = crossed_bootstrap_ci(k, n, n_resamples=n_resamples, seed=seed)
        p_low, p_high = participant_bootstrap_ci(k.sum(axis=1), n.sum(axis=1), n_resamples=n_resamples, seed=seed)
        units = group.groupby("unit_id")["correct"].mean().to_numpy()
        b_low, b_high = unit_mean_bca_ci(units, n_resamples=n_resamples, seed=seed)
        rows.append(
            {
                "model_id": model_id,
                "condition": condition,
                "accuracy": k.sum() / n.sum(),
                "ci_low": low,
                "ci_high": high,
                "participant_ci_low": p_low,
                "participant_ci_high": p_high,
                "unit_mean_accuracy": units.mean(),
                "unit_bca_low": b_low,
                "unit_bca_high": b_high,
                "n_responses": int(n.sum()),
                "n_participants": k.shape[0],
                "n_units": k.shape[1],
            }
        )
    return pd.DataFrame(rows)


# --- two-way cluster bootstrap: participants and units resampled together ---------------------


def cell_counts(responses: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Correct answers and responses per (participant, unit) cell, as dense matrices."""
    grouped = responses.groupby(["participant_id", "unit_id"], sort=True)["correct"].agg(["sum", "count"])
    k = grouped["sum"].unstack(fill_value=0).to_numpy(float)
    n = grouped["count"].unstack(fill_value=0).to_numpy(float)
    return k, n


def crossed_bootstrap_accuracy(
    k: np.ndarray, n: np.ndarray, weights_p: np.ndarray, weights_u: np.ndarray
) -> np.ndarray:
    """Pooled accuracy for each resample, given participant and unit multiplicities (B x P, B x U).

    A response of participant p on unit u is counted w_p * w_u times, so both
    participants and units are resampled with replacement, jointly.
    """
    numerator = np.einsum("bp,pu,bu->b", weights_p, k, weights_u, optimize=True)
    denominator = np.einsum("bp,pu,bu->b", weights_p, n, weights_u, optimize=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return numerator / denominator


def crossed_bootstrap_draws(
    k: np.ndarray, n: np.ndarray, n_resamples: int = 10_000, seed: int = 0, chunk: int = 2_000
) -> np.ndarray:
    """Pooled accuracy in each resample with participants and units resampled (vectorised in chunks)."""
    n_p, n_u = k.shape
    rng = np.random.default_rng(seed)
    estimates = []
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        weights_p = rng.multinomial(n_p, np.full(n_p, 1 / n_p), size=b).astype(float)
        weights_u = rng.multinomial(n_u, np.full(n_u, 1 / n_u), size=b).astype(float)
        estimates.append(crossed_bootstrap_accuracy(k, n, weights_p, weights_u))
    values = np.concatenate(estimates)
    return values[np.isfinite(values)]


def crossed_bootstrap_ci(
    k: np.ndarray, n: np.ndarray, n_resamples: int = 10_000, seed: int = 0, level: float = 0.95, chunk: int = 2_000
) -> tuple[float, float]:
    """Percentile CI of pooled accuracy with participants and units resampled."""
    if k.shape[0] < 2 or k.shape[1] < 2:
        return (np.nan, np.nan)
    values = crossed_bootstrap_draws(k, n, n_resamples, seed, chunk)
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


def unit_mean_bca_ci(unit_accuracy: np.ndarray, n_resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """The 2023 study's interval, for parity: BCa bootstrap of the mean of per-unit accuracies."""
    if len(unit_accuracy) < 3 or np.ptp(unit_accuracy) == 0:
        return (np.nan, np.nan)
    result = stats.bootstrap(
        (unit_accuracy,),
        np.mean,
        vectorized=True,
        n_resamples=n_resamples,
        method="BCa",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def against_chance(table: pd.DataFrame, chance: float) -> pd.Series:
    """Per row of an accuracy table: "above" or "below" chance when the primary 95% interval excludes it."""
    return pd.Series(
        np.where(
            table["ci_low"] > chance, "above", np.where(table["ci_high"] < chance, "below", "not distinguishable")
        ),
        index=table.index,
    )


def responses_paradigm(responses: pd.DataFrame) -> Paradigm:
    """The paradigm the responses name (a table without the column is 2AFC, as every published one is)."""
    names = set(responses["paradigm"].dropna()) if "paradigm" in responses else {TWO_AFC.name}
    if not names:
        return TWO_AFC
    if len(names) != 1 or not names <= set(PARADIGMS):
        raise ValueError(f"responses name the paradigm(s) {sorted(names)}; one of {sorted(PARADIGMS)} is needed")
    return paradigm_named(names.pop())


def chance_level(responses: pd.DataFrame) -> float:
    """Accuracy by guessing, in the responses' paradigm."""
    return responses_paradigm(responses).chance


def main_trials(responses: pd.DataFrame) -> pd.DataFrame:
    return responses[responses["trial_kind"] == "main"] if "trial_kind" in responses else responses


def unit_accuracy(responses: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per unit (main trials), with its kind, and its relative depth when layers are known."""
    frame = main_trials(responses)
    keys = ["model_id", "condition", "unit_id"]
    table = frame.groupby(keys, sort=True)["correct"].agg(accuracy="mean", n_responses="count").reset_index()
    if "unit_kind" in frame:
        kinds = frame.groupby(keys, sort=True)["unit_kind"].first().reset_index()
        table = table.merge(kinds, on=keys)
    if {"layer_index", "n_layers"} <= set(frame.columns):
        depth = frame.groupby(keys, sort=True)[["layer_index", "n_layers"]].first().reset_index()
        depth["relative_depth"] = depth["layer_index"] / (depth["n_layers"] - 1).where(depth["n_layers"] > 1)
        table = table.merge(depth[[*keys, "relative_depth"]], on=keys)
    return table


def model_comparison(units: pd.DataFrame) -> dict[str, dict]:
    """Per condition: Kruskal-Wallis across models on unit accuracies, then Conover with Holm (as in 2023)."""
    import scikit_posthocs

    results = {}
    for condition, group in units.groupby("condition", sort=True):
        samples = [g["accuracy"].to_numpy() for _, g in group.groupby("model_id", sort=True)]
        if len(samples) < 2 or any(len(s) < 2 for s in samples):
            continue
        h, p = stats.kruskal(*samples)
        conover = scikit_posthocs.posthoc_conover(group, val_col="accuracy", group_col="model_id", p_adjust="holm")
        results[condition] = {"kruskal_H": float(h), "kruskal_p": float(p), "conover_holm_p": conover}
    return results


def models_differ(responses: pd.DataFrame, n_resamples: int = 2_000, seed: int = 0) -> pd.DataFrame:
    """Per condition: do the models' accuracies differ? A Wald test that respects the design.

    Each model's pooled accuracy gets its variance from the crossed bootstrap (participants and
    units resampled, as for the primary interval); models are independent samples, so
    ``sum((a_m - weighted mean)^2 / v_m)`` is chi-square with models - 1 df under equal accuracies.
    Kruskal-Wallis on unit accuracies instead takes every unit as independent, which it is not when
    the same participants answer many units of a model.
    """
    rows = []
    frame = main_trials(responses)
    for condition, group in frame.groupby("condition", sort=True):
        accuracies, variances = [], []
        for _, model_rows in group.groupby("model_id", sort=True):
            k, n = cell_counts(model_rows)
            if k.shape[0] < 2 or k.shape[1] < 2:
                continue
            accuracies.append(k.sum() / n.sum())
            variances.append(crossed_bootstrap_draws(k, n, n_resamples, seed).var(ddof=1))
        a, v = np.asarray(accuracies), np.asarray(variances)
        if len(a) < 2 or not (v > 0).all():
            continue
        weights = 1 / v
        pooled = (weights * a).sum() / weights.sum()
        chi2 = float((weights * (a - pooled) ** 2).sum())
        rows.append(
            {
                "condition": condition,
                "chi2": chi2,
                "df": len(a) - 1,
                "p": float(stats.chi2.sf(chi2, len(a) - 1)),
                "n_models": len(a),
            }
        )
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_holm"] = holm(table["p"])
    return table


def depth_correlation(units: pd.DataFrame) -> pd.DataFrame:
    """Spearman correlation of unit accuracy with relative layer depth, per model and condition."""
    if "relative_depth" not in units:
        return pd.DataFrame()
    rows = []
    for (model_id, condition), group in units.dropna(subset=["relative_depth"]).groupby(["model_id", "condition"]):
        if group["relative_depth"].nunique() < 2 or group["accuracy"].nunique() < 2 or len(group) < 3:
            continue
        rho, p = stats.spearmanr(group["relative_depth"], group["accuracy"])
        rows.append({"model_id": model_id, "condition": condition, "spearman_rho": rho, "p": p, "n_units": len(group)})
    table = pd.DataFrame(rows)
    if not table.empty:  # every model x condition is one family of tests
        table["p_holm"] = holm(table["p"])
    return table


def depth_trend(units: pd.DataFrame) -> pd.DataFrame:
    """Per condition, the effect of relative depth with models as the replicates (two stages).

    Stage 1: per model, the OLS slope of unit accuracy on relative depth (participants are
    already pooled into each unit's accuracy). Stage 2: the mean of those slopes over models, with
    a t interval on models - 1 degrees of freedom, so that models that disagree widen it. The p
    values of the conditions are Holm-corrected as one family.
    """
    if "relative_depth" not in units:
        return pd.DataFrame()
    rows = []
    for condition, group in units.dropna(subset=["relative_depth"]).groupby("condition", sort=True):
        slopes = []
        for _, model_units in group.groupby("model_id", sort=True):
            if model_units["relative_depth"].nunique() >= 2 and len(model_units) >= 3:
                slopes.append(np.polyfit(model_units["relative_depth"], model_units["accuracy"], 1)[0])
        if len(slopes) < 2:
            continue
        slopes = np.asarray(slopes)
        se = slopes.std(ddof=1) / np.sqrt(len(slopes))
        half = stats.t.ppf(0.975, len(slopes) - 1) * se
        p = 2 * stats.t.sf(abs(slopes.mean() / se), len(slopes) - 1) if se > 0 else float("nan")
        rows.append(
            {
                "condition": condition,
                "slope_per_depth": float(slopes.mean()),
                "ci_low": float(slopes.mean() - half),
                "ci_high": float(slopes.mean() + half),
                "p": float(p),
                "n_models": len(slopes),
            }
        )
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_holm"] = holm(table["p"])
    return table
