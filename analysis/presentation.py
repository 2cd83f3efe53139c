"""How the report shows results to a person (pure): model order and names, and column labels.

The CSV files keep the machine names (``model_id``, ``ci_low``); the page shows models by display
name in order of scale, and columns by the labels below. One home for each label.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

# The scale predictors, in the order the report prefers them for ordering models.
ORDER_BY = ("parameter_count", "train_images")

COLUMN_LABELS: dict[str, str] = {
    "model_id": "model",
    "condition": "condition",
    "unit_kind": "unit kind",
    "reference_kind": "against",
    "accuracy": "accuracy",
    "ci_low": "95% CI low",
    "ci_high": "95% CI high",
    "participant_ci_low": "participants-only CI low",
    "participant_ci_high": "participants-only CI high",
    "unit_mean_accuracy": "mean unit accuracy",
    "unit_bca_low": "units-only BCa low",
    "unit_bca_high": "units-only BCa high",
    "n_responses": "responses",
    "n_participants": "participants",
    "n_units": "units",
    "n_reference_units": "units against",
    "n_models": "models",
    "vs_chance": "vs chance",
    "mean": "mean",
    "sem": "SEM",
    "two_sem_low": "−2 SEM",
    "two_sem_high": "+2 SEM",
    "predictor": "predictor",
    "slope": "slope",
    "se": "SE",
    "df": "df",
    "p": "p",
    "p_holm": "p (Holm)",
    "tost_p": "TOST p",
    "tost_p_holm": "TOST p (Holm)",
    "margin": "margin",
    "mde": "detectable slope",
    "verdict": "verdict",
    "difference": "difference",
    "reference_accuracy": "accuracy against",
    "spearman_rho": "Spearman ρ",
    "undefined_resamples": "resamples with ρ undefined",
    "pearson_r": "Pearson r",
    "slope_per_depth": "slope per depth",
    "chi2": "χ²",
    "machine_score": "machine score",
    "human_accuracy": "human accuracy",
    "paradigms": "paradigms",
    "residual_sd_models": "residual SD (models)",
    "logit_slope": "log-odds slope",
    "failed_rules": "rules failed",
    "participant_id": "participant",
    "session_id": "session",
    "exclusion_reason": "reason",
}


# The accuracy table's three intervals, by the names of analysis.estimate.INTERVAL_COVERAGE.
INTERVAL_LABELS = {"ci": "95% CI", "participant_ci": "participants-only CI", "unit_bca": "units-only BCa"}


def label(column: str) -> str:
    """A column's label on the page: its entry above, else its name with spaces."""
    return COLUMN_LABELS.get(column, column.replace("_", " "))


def model_order(facts: Mapping[str, Mapping], model_ids: Iterable[str]) -> list[str]:
    """The models, smallest first by parameters (else training images); unknown sizes last, by id."""
    ids = list(dict.fromkeys(model_ids))
    for predictor in ORDER_BY:
        sizes = {m: (facts.get(m) or {}).get(predictor) for m in ids}
        if sum(v is not None for v in sizes.values()) >= 2:
            return sorted(ids, key=lambda m: (sizes[m] is None, sizes[m] or 0, m))
    return sorted(ids)


def display_names(facts: Mapping[str, Mapping], model_ids: Iterable[str]) -> dict[str, str]:
    """Each model's display name where the facts give one, else its id."""
    return {m: (facts.get(m) or {}).get("display_name") or m for m in model_ids}


def for_page(table: pd.DataFrame, order: list[str], names: Mapping[str, str]) -> pd.DataFrame:
    """The table as a person reads it: rows in model order, display names, labelled columns."""
    shown = table.copy()
    if "model_id" in shown:
        rank = {m: i for i, m in enumerate(order)}
        shown["_order"] = shown["model_id"].map(rank).fillna(len(rank))
        shown = shown.sort_values("_order", kind="stable").drop(columns="_order")
        shown["model_id"] = shown["model_id"].map(lambda m: names.get(m, m))
    return shown.rename(columns=label)
