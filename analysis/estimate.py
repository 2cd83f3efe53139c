"""Accuracy estimates with bootstrap confidence intervals (pure functions on data frames)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


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


def accuracy_table(responses: pd.DataFrame, n_resamples: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Accuracy per model x condition on main trials, with a participant-cluster bootstrap 95% CI."""
    if "trial_kind" in responses.columns:
        responses = responses[responses["trial_kind"] == "main"]
    per_participant = (
        responses.groupby(["model_id", "condition", "participant_id"], sort=True)["correct"]
        .agg(correct="sum", n="count")
        .reset_index()
    )
    rows = []
    for (model_id, condition), group in per_participant.groupby(["model_id", "condition"], sort=True):
        k = group["correct"].to_numpy(float)
        n = group["n"].to_numpy(float)
        low, high = participant_bootstrap_ci(k, n, n_resamples=n_resamples, seed=seed)
        rows.append(
            {
                "model_id": model_id,
                "condition": condition,
                "accuracy": k.sum() / n.sum(),
                "ci_low": low,
                "ci_high": high,
                "n_responses": int(n.sum()),
                "n_participants": len(group),
            }
        )
    return pd.DataFrame(rows)
