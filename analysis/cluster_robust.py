"""Cluster-robust inference for a few clusters (pure numpy): CR2 with Satterthwaite degrees of
freedom.

A study has few models (9 in 2023), and a model property such as its parameter count is constant
within a model, so the models are the clusters. With so few, the usual sandwich (CR1) and
asymptotic normal tests reject true nulls far too often. CR2 (Bell & McCaffrey 2002) rescales
each cluster's residuals by ``(I - H_gg)^(-1/2)`` before the sandwich, and the t test uses the
Satterthwaite degrees of freedom of the contrast (Imbens & Kolesár 2016). In the coverage grid
it rejected at most 5.0 % of null studies; the wild cluster bootstrap with Webb's weights, tried
beside it, reached 7.2 % with unequal clusters and was dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class ClusterTest:
    estimate: float
    se: float
    df: float
    p: float
    ci_low: float
    ci_high: float


def _design(x: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones(len(x)), np.asarray(x, dtype=float)])


def _inverse_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    values = np.clip(values, 1e-12, None)
    return (vectors / np.sqrt(values)) @ vectors.T


def cr2_slope_test(y: np.ndarray, x: np.ndarray, clusters: np.ndarray, level: float = 0.95) -> ClusterTest:
    """The OLS slope of ``y`` on ``x`` with its CR2 standard error and Satterthwaite (Bell-McCaffrey) df."""
    y = np.asarray(y, dtype=float)
    X = _design(x)
    bread = np.linalg.inv(X.T @ X)
    beta = bread @ X.T @ y
    residuals = y - X @ beta
    contrast = bread @ np.array([0.0, 1.0])  # (X'X)^-1 c for the slope
    meat = np.zeros((2, 2))
    columns = []
    for label in np.unique(clusters):
        rows = np.flatnonzero(clusters == label)
        # Rows of the annihilator I - H for this cluster (never the whole n x n matrix).
        annihilator = -X[rows] @ bread @ X.T
        annihilator[np.arange(len(rows)), rows] += 1.0
        adjust = _inverse_sqrt(annihilator[:, rows])
        score = X[rows].T @ adjust @ residuals[rows]
        meat += np.outer(score, score)
        # Column of G (Imbens & Kolesar): how this cluster's adjusted score loads on the errors.
        columns.append(annihilator.T @ adjust @ X[rows] @ contrast)
    variance = float(contrast @ meat @ contrast)
    se = np.sqrt(variance)
    G = np.column_stack(columns)
    gram = G.T @ G
    df = float(np.trace(gram) ** 2 / np.sum(gram * gram))
    t = beta[1] / se if se > 0 else np.inf
    half = stats.t.ppf(0.5 + level / 2, df) * se
    return ClusterTest(float(beta[1]), float(se), df, float(2 * stats.t.sf(abs(t), df)), beta[1] - half, beta[1] + half)
