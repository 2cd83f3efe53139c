"""What a slope's test allows a report to say (pure): equivalence, detectable effects, multiplicity.

A slope estimate with standard error ``se`` on ``df`` degrees of freedom (a t statistic) supports:

- "rises" or "falls" when its test, Holm-corrected over the family of slopes, rejects zero;
- "equivalent" when two one-sided tests (TOST) reject both ``slope <= -margin`` and
  ``slope >= +margin`` (also Holm-corrected): the data rule out any effect as large as the margin;
- otherwise "inconclusive": the data rule out neither -margin nor +margin.

The minimum detectable slope is the true slope that the printed verdict's test (Holm over its
family included) detects with the given power, from the noncentral t. The study's own standard
error estimates the design's, with the sampling spread of a chi on df degrees of freedom; the MDE
divides it by that distribution's median, so that the printed MDE is median-unbiased for the
design's true one (the plug-in value is too small in more than half of replicate studies, and the
test detects it with about 76 % power at 7 df instead of 80 %).

Holm's corrected p-values have no exactly matching intervals; the simultaneous interval printed
beside them is Bonferroni's (level 1 - alpha / family size), which never excludes zero when Holm
does not reject, and may include zero when Holm's step-down does reject (the sentence says so).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache

import numpy as np
from scipy import optimize, stats
from statsmodels.stats.multitest import multipletests

VERDICTS = ("rises", "falls", "equivalent", "inconclusive")

# Measured by benchmarks/bench_claims_power.py: the power of the printed Holm verdict (2 slopes) at the
# median printed MDE, lowest and highest over six designs of 400 studies (model SD 0 and 0.25, logit).
MDE_POWER_MEASURED = (0.770, 0.815)


def tost_p(slope: float, se: float, df: float, margin: float) -> float:
    """The TOST p-value for |slope| < margin: the larger of the two one-sided p-values."""
    if se == 0:  # an exact fit: the slope is known
        return 0.0 if abs(slope) < margin else 1.0
    below = stats.t.sf((slope + margin) / se, df)  # H0: slope <= -margin
    above = stats.t.cdf((slope - margin) / se, df)  # H0: slope >= +margin
    return float(max(below, above))


def detection_power(slope: float, se: float, df: float, alpha: float = 0.05) -> float:
    """Probability that the two-sided t test at ``alpha`` rejects zero when the true slope is ``slope``."""
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = slope / se
    power = stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift)
    return float(power) if np.isfinite(power) else 1.0  # scipy gives NaN far in the tail, where power is 1


def minimum_detectable_slope(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true slope (> 0) that the test detects with probability ``power``."""
    if not (np.isfinite(se) and se > 0 and df > 0):
        return float("nan")
    return se * _detectable_shift(float(df), float(alpha), float(power))


@cache
def _detectable_shift(df: float, alpha: float, power: float) -> float:
    """The noncentrality at which the two-sided t test on ``df`` has ``power`` (the MDE for SE 1)."""
    upper = 3 * (stats.t.ppf(1 - alpha / 2, df) + max(stats.t.ppf(power, df), 0.0))
    return float(optimize.brentq(lambda s: detection_power(s, 1.0, df, alpha) - power, 0.0, upper, xtol=1e-6))


def se_median_ratio(df: float) -> float:
    """The median of an estimated standard error over the true one: sqrt(chi2 median / df)."""
    return float(np.sqrt(stats.chi2.ppf(0.5, df) / df))


def verdict_mde(se: float, df: float, alpha: float = 0.05, power: float = 0.8, family_size: int = 1) -> float:
    """The MDE of the Holm-corrected verdict, median-unbiased for the design's true MDE.

    Holm over ``family_size`` slopes tests the first (smallest p) at alpha / family_size; when the
    other slopes of the family are null that is the test a slope must pass, so the MDE is stated at
    that level. The estimated ``se`` is divided by its median over its true value.
    """
    if not (np.isfinite(se) and se > 0 and df > 0):
        return float("nan")
    return minimum_detectable_slope(se / se_median_ratio(df), df, alpha / family_size, power)


def simultaneous_interval(
    slope: float, se: float, df: float, alpha: float = 0.05, family_size: int = 1
) -> tuple[float, float]:
    """Bonferroni's simultaneous (1 - alpha) interval over ``family_size`` slopes."""
    half = stats.t.ppf(1 - alpha / (2 * family_size), df) * se
    return slope - half, slope + half


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values of one family (NaN entries stay NaN and are not counted)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        adjusted[finite] = multipletests(p[finite], method="holm")[1]
    return adjusted


def verdict(slope: float, p_adjusted: float, tost_p_adjusted: float, alpha: float = 0.05) -> str:
    """One of :data:`VERDICTS`, from the corrected test of zero and the corrected TOST."""
    if p_adjusted < alpha:
        return "rises" if slope > 0 else "falls"
    if tost_p_adjusted < alpha:
        return "equivalent"
    return "inconclusive"


def high_leverage_models(x: Mapping[str, float]) -> list[str]:
    """Models whose leverage in the OLS across models exceeds twice the mean (4 / n for a line).

    With few models, one or two extreme ones can carry a slope on their own (the two CLIP models
    of the shipped registry carry the training-set slope with leverage about 0.63 of 9 models).
    """
    names = list(x)
    values = np.asarray([x[n] for n in names], dtype=float)
    if len(values) < 4 or np.ptp(values) == 0:
        return []
    centred = values - values.mean()
    leverage = 1 / len(values) + centred**2 / (centred**2).sum()
    return [n for n, h in zip(names, leverage, strict=True) if h > 4 / len(values)]


def collinear_pairs(facts: Mapping[str, Mapping[str, float]], threshold: float = 0.8) -> list[tuple[str, str, float]]:
    """Pairs of predictors whose values across models correlate beyond ``threshold`` (|r|)."""
    names = list(facts)
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = sorted(set(facts[a]) & set(facts[b]))
            if len(shared) < 3:
                continue
            xa = np.asarray([facts[a][m] for m in shared], dtype=float)
            xb = np.asarray([facts[b][m] for m in shared], dtype=float)
            if np.ptp(xa) == 0 or np.ptp(xb) == 0:
                continue
            r = float(np.corrcoef(xa, xb)[0, 1])
            if abs(r) > threshold:
                pairs.append((a, b, r))
    return pairs
