"""Are some kinds of unit more interpretable than others? Channels against dictionary directions (pure).

A study can measure channels and the rows of named dictionaries (``unit_kind``: ``channel``,
``sae``, ``kmeans``, ...) of the same layers of the same models. Per model and condition:

- each kind's accuracy, with the crossed bootstrap interval of :func:`analysis.estimate.accuracy_table`;
- each other kind's difference from the reference kind (``channel`` when measured), with a
  bootstrap that resamples participants once for both kinds (the same people answered both) and
  each kind's units separately; its test of zero and its TOST against the configured margin are
  Holm-corrected over all the comparisons, and the verdict says what the report may claim.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.claims import holm
from analysis.config import DEFAULT_ANALYSIS, AnalysisConfig
from analysis.estimate import accuracy_table, cell_counts, main_trials
from contracts.units import CHANNEL_KIND

DIFFERENCE_VERDICTS = ("higher", "lower", "equivalent", "inconclusive")

# Measured in simulated studies (tests/test_unit_kinds.py keeps them under their bounds): the share
# of studies where a comparison printed "higher"/"lower" with no true difference (1,000 studies of 30
# participants x 20 units per kind), and "equivalent" at a true difference of exactly the margin
# (300 studies of 40 participants x 60 units per kind, where half the null studies reach equivalence).
UNIT_KIND_FALSE_POSITIVE_RATES = {"difference": 0.022, "equivalence": 0.013}


def unit_kinds(responses: pd.DataFrame) -> list[str]:
    """The kinds the responses measured, the reference (channels) first."""
    kinds = sorted(set(main_trials(responses)["unit_kind"].dropna())) if "unit_kind" in responses else []
    return sorted(kinds, key=lambda k: (k != CHANNEL_KIND, k))


def kind_accuracy(responses: pd.DataFrame, n_resamples: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Accuracy per model x condition x unit kind, with the intervals of the accuracy table."""
    frames = []
    for kind in unit_kinds(responses):
        table = accuracy_table(responses[responses["unit_kind"] == kind], n_resamples=n_resamples, seed=seed)
        frames.append(table.assign(unit_kind=kind))
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    return table.sort_values(["model_id", "condition", "unit_kind"], kind="stable").reset_index(drop=True)


def paired_difference_draws(
    k: np.ndarray, n: np.ndarray, columns: dict[str, np.ndarray], kind: str, reference: str, n_resamples: int, seed: int
) -> np.ndarray:
    """Bootstrap draws of accuracy(kind) - accuracy(reference) over (participant x unit) cells.

    One participant resample serves both kinds; each kind's units are resampled among themselves.
    """
    rng = np.random.default_rng(seed)
    n_p = k.shape[0]
    weights_p = rng.multinomial(n_p, np.full(n_p, 1 / n_p), size=n_resamples).astype(float)
    accuracy = {}
    for name in (kind, reference):
        cols = columns[name]
        weights_u = rng.multinomial(len(cols), np.full(len(cols), 1 / len(cols)), size=n_resamples).astype(float)
        num = np.einsum("bp,pu,bu->b", weights_p, k[:, cols], weights_u, optimize=True)
        den = np.einsum("bp,pu,bu->b", weights_p, n[:, cols], weights_u, optimize=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy[name] = num / den
    draws = accuracy[kind] - accuracy[reference]
    return draws[np.isfinite(draws)]


def difference_verdict(difference: float, p_holm: float, tost_p_holm: float, alpha: float) -> str:
    """One of :data:`DIFFERENCE_VERDICTS`, from the corrected test of zero and the corrected TOST."""
    if p_holm < alpha:
        return "higher" if difference > 0 else "lower"
    if tost_p_holm < alpha:
        return "equivalent"
    return "inconclusive"


def kind_differences(
    responses: pd.DataFrame,
    config: AnalysisConfig = DEFAULT_ANALYSIS,
    n_resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """Per model x condition, each kind's accuracy minus the reference kind's, with its CI and claims.

    The test of zero and the two one-sided tests read the same bootstrap draws as the interval, so a
    claim and its interval never disagree; simulations in tests/test_unit_kinds.py measure their
    false-positive rates.
    """
    table = difference_rows(responses, config.unit_kind_margin, n_resamples, seed, level)
    if table.empty:
        return table
    table["p_holm"] = holm(table["p"])
    table["tost_p_holm"] = holm(table["tost_p"])
    table["verdict"] = [
        difference_verdict(r.difference, r.p_holm, r.tost_p_holm, config.alpha) for r in table.itertuples()
    ]
    return table


def difference_rows(
    responses: pd.DataFrame, margin: float, n_resamples: int = 10_000, seed: int = 0, level: float = 0.95
) -> pd.DataFrame:
    """The comparisons of :func:`kind_differences` before the family's correction: uncorrected p values."""
    kinds = unit_kinds(responses)
    if len(kinds) < 2:
        return pd.DataFrame()
    reference = kinds[0]
    rows = []
    frame = main_trials(responses)
    for (model_id, condition), group in frame.groupby(["model_id", "condition"], sort=True):
        k, n = cell_counts(group)
        unit_ids = np.asarray(sorted(group["unit_id"].unique()))
        kind_of = group.groupby("unit_id")["unit_kind"].first().reindex(unit_ids).to_numpy()
        columns = {name: np.flatnonzero(kind_of == name) for name in kinds}
        if k.shape[0] < 2 or len(columns[reference]) < 2:
            continue
        for kind in kinds[1:]:
            if len(columns[kind]) < 2:
                continue
            draws = paired_difference_draws(k, n, columns, kind, reference, n_resamples, seed)
            observed = k[:, columns[kind]].sum() / n[:, columns[kind]].sum()
            base = k[:, columns[reference]].sum() / n[:, columns[reference]].sum()
            difference = float(observed - base)
            alpha = (1 - level) / 2
            rows.append(
                {
                    "model_id": model_id,
                    "condition": condition,
                    "unit_kind": kind,
                    "reference_kind": reference,
                    "accuracy": float(observed),
                    "reference_accuracy": float(base),
                    "difference": difference,
                    "ci_low": float(np.quantile(draws, alpha)),
                    "ci_high": float(np.quantile(draws, 1 - alpha)),
                    "se": float(draws.std(ddof=1)),
                    "p": bootstrap_p(draws, 0.0),
                    "tost_p": max(bootstrap_p(draws, -margin, "greater"), bootstrap_p(draws, margin, "less")),
                    "margin": margin,
                    "n_units": len(columns[kind]),
                    "n_reference_units": len(columns[reference]),
                    "n_participants": k.shape[0],
                }
            )
    return pd.DataFrame(rows)


def bootstrap_p(draws: np.ndarray, value: float, alternative: str = "two-sided") -> float:
    """The percentile bootstrap's p-value against ``value``: consistent with the interval printed beside it.

    ``greater``: H0 says the difference is at most ``value``; ``less``: at least ``value``.
    """
    below = (np.count_nonzero(draws <= value) + 1) / (len(draws) + 1)
    above = (np.count_nonzero(draws >= value) + 1) / (len(draws) + 1)
    if alternative == "greater":
        return float(below)
    if alternative == "less":
        return float(above)
    return float(min(1.0, 2 * min(below, above)))


def difference_sentence(row) -> str:
    """What the report may say about one comparison, in the words of the statistics issue."""
    points = 100 * row.difference
    interval = f"{100 * row.ci_low:+.1f} to {100 * row.ci_high:+.1f} pp"
    where = f"{row.model_id}, {row.condition}"
    if row.verdict in ("higher", "lower"):
        return (
            f"{where}: {row.unit_kind} units are {row.verdict} in accuracy than {row.reference_kind} units by "
            f"{points:+.1f} pp (95 % CI {interval}; Holm p = {row.p_holm:.3g})."
        )
    if row.verdict == "equivalent":
        return (
            f"{where}: {row.unit_kind} and {row.reference_kind} units are equivalent within ±{100 * row.margin:.0f} pp "
            f"({points:+.1f} pp, 95 % CI {interval}; TOST Holm p = {row.tost_p_holm:.3g})."
        )
    return (
        f"{where}: the data cannot tell {row.unit_kind} from {row.reference_kind} units ({points:+.1f} pp, "
        f"95 % CI {interval}): they rule out neither a difference of ±{100 * row.margin:.0f} pp nor none."
    )
