"""Do two paradigms agree about which units are interpretable? Per unit, 2AFC against odd-one-out (pure).

When a study measures the same units in two paradigms (two bundles built from one config that
differ only in ``paradigm``, so the units are the same), each unit has an accuracy in each.
Per condition: Spearman's correlation of the two over units, with a percentile bootstrap interval
that resamples units, and the test of zero (scipy's), Holm-corrected over the conditions.
Both accuracies are noisy, so the correlation understates the agreement of the true accuracies;
the report says so.

With few units a resample can hold units of one accuracy only in a paradigm, where rho is undefined
(scipy's interval is then undefined as a whole). The interval is taken over the other resamples
while they are at most :data:`MAX_UNDEFINED_RESAMPLES` of all, and not given beyond that.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from analysis.claims import holm
from analysis.estimate import responses_paradigm, unit_accuracy


def paired_unit_accuracy(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """Units measured in both tables: their accuracy in each paradigm, per condition."""
    a, b = responses_paradigm(first), responses_paradigm(second)
    if a.name == b.name:
        raise ValueError(f"both tables are {a.name} responses: name two paradigms to compare")
    keys = ["model_id", "condition", "unit_id"]
    left = unit_accuracy(first)[[*keys, "accuracy", "n_responses"]]
    right = unit_accuracy(second)[[*keys, "accuracy", "n_responses"]]
    paired = left.merge(right, on=keys, suffixes=(f"_{a.name}", f"_{b.name}"))
    paired.attrs["paradigms"] = (a.name, b.name)
    return paired


MAX_UNDEFINED_RESAMPLES = 0.05  # beyond this share, leaving them out would bias the interval: none is given


def spearman_interval(x: np.ndarray, y: np.ndarray, n_resamples: int, seed: int) -> tuple[float, float, float]:
    """95% percentile bootstrap interval of Spearman's rho over paired units, and the share of resamples
    in which rho is undefined (a constant side); the interval is NaN when that share is too large."""
    with warnings.catch_warnings():
        # a constant resample's rho is NaN, as it should be; counted below rather than warned about
        warnings.simplefilter("ignore", stats.ConstantInputWarning)
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        draws = stats.bootstrap(
            (x, y),
            lambda a, b: stats.spearmanr(a, b)[0],
            paired=True,
            vectorized=False,
            n_resamples=n_resamples,
            method="percentile",
            rng=np.random.default_rng(seed),
        ).bootstrap_distribution
    undefined = float(np.mean(~np.isfinite(draws)))
    if undefined > MAX_UNDEFINED_RESAMPLES:
        return np.nan, np.nan, undefined
    low, high = np.percentile(draws[np.isfinite(draws)], [2.5, 97.5])
    return float(low), float(high), undefined


def paradigm_correlation(paired: pd.DataFrame, n_resamples: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Per condition: Spearman's rho between the paradigms' unit accuracies, its 95% CI over units, and p."""
    first, second = (f"accuracy_{name}" for name in paired.attrs["paradigms"])
    rows = []
    for condition, group in paired.groupby("condition", sort=True):
        x, y = group[first].to_numpy(float), group[second].to_numpy(float)
        if len(group) < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        rho, p = stats.spearmanr(x, y)
        low, high, undefined = spearman_interval(x, y, n_resamples, seed)
        rows.append(
            {
                "condition": condition,
                "spearman_rho": float(rho),
                "ci_low": low,
                "ci_high": high,
                "undefined_resamples": undefined,
                "p": float(p),
                "n_units": len(group),
                "paradigms": " vs ".join(paired.attrs["paradigms"]),
            }
        )
    table = pd.DataFrame(rows)
    if not table.empty:
        table["p_holm"] = holm(table["p"])
    return table
