"""How the report shows results to a person (pure): model order and names, and column labels.

The CSV files keep the machine names (``model_id``, ``ci_low``); the page shows models by display
name in order of scale, and columns by the labels below. One home for each label.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
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


def _interval(estimate: float, low: float, high: float, digits: str = ".3f") -> str:
    """``estimate [low, high]``; "not estimable" without an estimate, the estimate alone without an interval."""
    if not np.isfinite(estimate):
        return "not estimable"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{estimate:{digits}} (no interval)"
    return f"{estimate:{digits}} [{low:{digits}}, {high:{digits}}]"


def _columns(table: pd.DataFrame, prefix: str, digits: str = ".3f") -> list[str]:
    """``prefix`` with its interval, per row, as one string."""
    first = f"{prefix}_estimate" if f"{prefix}_estimate" in table else prefix
    return [
        _interval(e, lo, hi, digits)
        for e, lo, hi in zip(table[first], table[f"{prefix}_ci_low"], table[f"{prefix}_ci_high"], strict=True)
    ]


def _kind_column(table: pd.DataFrame) -> dict[str, pd.Series]:
    """A unit-kind column for the page, only when the table holds more than one kind."""
    return {"unit kind": table["unit_kind"]} if table["unit_kind"].nunique() > 1 else {}


def ppi_view(cells: pd.DataFrame) -> pd.DataFrame:
    """analysis.ppi's per-model table as a reader compares it: the two intervals side by side."""
    if cells.empty:
        return cells
    kinds = _kind_column(cells)
    return pd.DataFrame(
        {
            "model_id": cells["model_id"],
            "condition": cells["condition"],
            **kinds,
            "people only [95% CI]": _columns(cells, "human"),
            "with the machine (PPI) [95% CI]": _columns(cells, "ppi"),
            "width ratio": cells["width_ratio"].map("{:.2f}".format),
            "tuned weight λ": cells["weight"].map("{:.2f}".format),
            "units rated / scored": [
                f"{r} / {s}" for r, s in zip(cells["n_rated_units"], cells["n_scored_units"], strict=True)
            ],
            "responses": cells["n_responses"],
            "the machine was worth": [
                f"{max(e - n, 0):,.0f} responses"
                for e, n in zip(cells["effective_responses"], cells["n_responses"], strict=True)
            ],
        }
    )


def _slopes(slopes: pd.DataFrame, prefix: str) -> list[str]:
    columns = (slopes[f"{prefix}_{c}"] for c in ("slope", "ci_low", "ci_high"))
    return [_interval(e, lo, hi, "+.4f") for e, lo, hi in zip(*columns, strict=True)]


def ppi_slopes_view(slopes: pd.DataFrame) -> pd.DataFrame:
    if slopes.empty:
        return slopes
    kinds = _kind_column(slopes)
    return pd.DataFrame(
        {
            "condition": slopes["condition"],
            **kinds,
            "predictor": slopes["predictor"],
            "models": slopes["n_models"],
            "slope, people only [95% CI]": _slopes(slopes, "human"),
            "slope with the machine (PPI) [95% CI]": _slopes(slopes, "ppi"),
            "width ratio": slopes["width_ratio"].map("{:.2f}".format),
        }
    )


def noise_ceiling_view(ceiling: pd.DataFrame) -> pd.DataFrame:
    if ceiling.empty:
        return ceiling
    return pd.DataFrame(
        {
            "condition": ceiling["condition"],
            "units": ceiling["n_units"],
            "machine–human r [95% CI]": _columns(ceiling, "machine_r", ".2f"),
            "split-half reliability [95% CI]": _columns(ceiling, "reliability", ".2f"),
            "noise ceiling [95% CI]": _columns(ceiling, "noise_ceiling", ".2f"),
            "r / ceiling [95% CI]": _columns(ceiling, "share_of_ceiling", ".2f"),
        }
    )


def noise_ceiling_sentences(ceiling: pd.DataFrame, observer: str) -> list[str]:
    """Per condition, in words: the machine-human correlation across the study's units beside the ceiling."""
    return [
        f"{r.condition}: across the study's {r.n_units} units, the machine score ({observer}) correlates "
        f"r = {_interval(r.machine_r, r.machine_r_ci_low, r.machine_r_ci_high, '.2f')} with people's unit "
        "accuracy; the noise ceiling (split-half) is "
        f"{_interval(r.noise_ceiling, r.noise_ceiling_ci_low, r.noise_ceiling_ci_high, '.2f')}."
        for r in ceiling.itertuples()
    ]
