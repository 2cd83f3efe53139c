"""Machine scores next to human accuracy: per unit, per model, and their correlation.

A machine score is an observer's expected accuracy on a unit's trials (see
``psychinterp.observers``). Zimmermann, Klindt & Brendel (2024) proposed it as a cheap
proxy for the human measurement; these tables say how far that holds in a study.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

KEYS = ["model_id", "condition", "unit_id"]


def human_and_machine_units(units: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Unit accuracies (from :func:`analysis.estimate.unit_accuracy`) joined with the units' machine scores."""
    columns = ["unit_id", "condition", "machine_score"]
    return units.merge(scores[columns], on=["unit_id", "condition"], how="inner").sort_values(KEYS)


def human_and_machine_models(units: pd.DataFrame) -> pd.DataFrame:
    """Per model and condition: mean human unit accuracy next to mean machine score."""
    table = units.groupby(["model_id", "condition"], sort=True).agg(
        human_accuracy=("accuracy", "mean"), machine_score=("machine_score", "mean"), n_units=("unit_id", "count")
    )
    return table.reset_index()


def _correlate(rows: list[dict], label: dict, x: np.ndarray, y: np.ndarray) -> None:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return
    rho, rho_p = stats.spearmanr(x, y)
    r, r_p = stats.pearsonr(x, y)
    rows.append({**label, "spearman_rho": rho, "spearman_p": rho_p, "pearson_r": r, "pearson_p": r_p, "n": len(x)})


def human_machine_correlation(units: pd.DataFrame) -> pd.DataFrame:
    """Across units and across models, per condition: Spearman and Pearson correlations with p-values."""
    rows: list[dict] = []
    for condition, group in units.groupby("condition", sort=True):
        _correlate(rows, {"condition": condition, "level": "units"}, group["machine_score"], group["accuracy"])
        models = human_and_machine_models(group)
        _correlate(rows, {"condition": condition, "level": "models"}, models["machine_score"], models["human_accuracy"])
    return pd.DataFrame(rows)
