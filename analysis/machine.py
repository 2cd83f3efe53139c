"""Machine scores next to human accuracy: per unit, per model, and their correlation.

A machine score is an observer's expected accuracy on a unit's trials (see
``psychinterp.observers``). Zimmermann, Klindt & Brendel (2024) proposed it as a cheap
proxy for the human measurement; these tables say how far that holds in a study.
"""

from __future__ import annotations

import warnings

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


def _rater_cells(main: pd.DataFrame) -> pd.DataFrame:
    """Correct answers and answers per unit and rater (a rater's repeats of a unit stay together)."""
    cells = main.groupby(["unit_id", "participant_id"], sort=True)["correct"].agg(k="sum", n="size").reset_index()
    raters = cells.groupby("unit_id")["participant_id"].transform("size")
    return cells[raters >= 2].reset_index(drop=True)


def split_halves(main: pd.DataFrame, n_splits: int = 100, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Units (with two raters or more), and their accuracy in two random halves of their raters, per split
    (arrays of splits x units)."""
    cells = _rater_cells(main)
    unit_ids, codes = np.unique(cells["unit_id"].to_numpy(), return_inverse=True)
    k, n = cells["k"].to_numpy(float), cells["n"].to_numpy(float)
    raters = np.bincount(codes)
    start = np.concatenate([[0], np.cumsum(raters)[:-1]])
    rng = np.random.default_rng(seed)
    halves = np.zeros((2, n_splits, len(unit_ids)))
    for s in range(n_splits):
        order = np.lexsort((rng.random(len(cells)), codes))  # raters shuffled within each unit
        position = np.empty(len(cells), int)
        position[order] = np.arange(len(cells)) - start[codes[order]]
        first = position < raters[codes] // 2
        for h, mask in enumerate((first, ~first)):
            halves[h, s] = np.bincount(codes[mask], k[mask], len(unit_ids)) / np.bincount(
                codes[mask], n[mask], len(unit_ids)
            )
    return list(unit_ids), halves[0], halves[1]


def _rows_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row pair (last axis)."""
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=-1) / np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))


def spearman_brown(r: np.ndarray | float) -> np.ndarray | float:
    """The reliability of the whole from the correlation of its two halves."""
    return 2 * r / (1 + r)


NOISE_CEILING_SPLITS = 100


def noise_ceiling(
    main: pd.DataFrame,
    scores: pd.DataFrame,
    n_splits: int = NOISE_CEILING_SPLITS,
    n_resamples: int = 1_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per condition, across units: the machine-human Pearson correlation beside the noise ceiling.

    Reliability: the split-half correlation of unit accuracies (random halves of each unit's raters,
    averaged over ``n_splits`` splits), Spearman-Brown corrected to the full set of raters. The noise
    ceiling is its square root: the correlation a machine that knew each unit's true accuracy would
    reach with these noisy human accuracies. 95 % percentile intervals resample units (the same
    resamples for the correlation, the ceiling and their ratio).
    """
    rows = []
    for condition, group in main.groupby("condition", sort=True):
        score = scores[scores["condition"] == condition].set_index("unit_id")["machine_score"]
        group = group[group["unit_id"].isin(score.index)]
        unit_ids, first, second = split_halves(group, n_splits, seed)
        if len(unit_ids) < 5:
            continue
        human = group.groupby("unit_id")["correct"].mean().loc[unit_ids].to_numpy()
        statistic = _ceiling_statistic(score.loc[unit_ids].to_numpy(float), human, first, second)
        every = np.arange(len(unit_ids))
        point = statistic(every[None])[:, 0]
        if not np.isfinite(point[:2]).all():  # no spread in the machine or in people (all correct): no intervals
            low = high = np.full(len(NOISE_CEILING_STATISTICS), np.nan)
        else:
            low, high = _bootstrap_interval(statistic, len(unit_ids), n_resamples, seed)
        row = {"condition": condition, "n_units": len(unit_ids)}
        for i, name in enumerate(NOISE_CEILING_STATISTICS):
            row |= {name: float(point[i]), f"{name}_ci_low": low[i], f"{name}_ci_high": high[i]}
        rows.append(row)
    return pd.DataFrame(rows)


def _bootstrap_interval(statistic, n_units: int, n_resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """95 % percentile intervals (low, high) of the statistic's outputs, resampling units; a resample whose
    statistic is undefined (its units all alike) is left out rather than voiding the interval."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # a statistic undefined in every resample: no interval
        draws = stats.bootstrap(
            (np.arange(n_units),),
            statistic,
            vectorized=True,
            n_resamples=n_resamples,
            batch=100,
            method="percentile",
            rng=np.random.default_rng(seed),
        ).bootstrap_distribution
        return tuple(np.nanpercentile(draws, [2.5, 97.5], axis=-1))


def _ceiling_statistic(machine: np.ndarray, human: np.ndarray, first: np.ndarray, second: np.ndarray):
    """The correlation, reliability, ceiling and their ratio on resampled units (resamples x units)."""

    def statistic(units: np.ndarray, axis: int = -1) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a split without spread: left out of the mean
            split_r = np.nanmean([_rows_correlation(a[units], b[units]) for a, b in zip(first, second, strict=True)], 0)
            reliability = spearman_brown(np.clip(split_r, -0.99, 1))
            ceiling = np.sqrt(np.clip(reliability, 0, None))
            r = _rows_correlation(machine[units], human[units])
            # No reliability above zero: a ceiling of 0, and no share of it.
            return np.stack([r, reliability, ceiling, np.where(ceiling > 0, r / ceiling, np.nan)])

    return statistic


NOISE_CEILING_STATISTICS = ("machine_r", "reliability", "noise_ceiling", "share_of_ceiling")
