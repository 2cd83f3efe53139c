"""Are some kinds of unit more interpretable than others? Channels against dictionary directions (pure).

A study can measure channels and the rows of named dictionaries (``unit_kind``: ``channel``,
``sae``, ``kmeans``, ...) of the same layers of the same models. Per model and condition:

- each kind's accuracy, with the crossed bootstrap interval of :func:`analysis.estimate.accuracy_table`;
- each other kind's difference from the reference kind (``channel`` when measured), with a
  standard error that counts each source of variance once (:func:`paired_difference_variance`:
  participants resampled once for both kinds, as the same people answered both; each kind's units
  among themselves; the residual removed once), a t interval on the scarcest factor's df, and its test of zero and TOST
  against the configured margin from the same SE, Holm-corrected over all the comparisons; the
  verdict says what the report may claim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.claims import holm, tost_p
from analysis.config import DEFAULT_ANALYSIS, AnalysisConfig
from analysis.estimate import accuracy_table, cell_counts, main_trials
from contracts.units import CHANNEL_KIND

DIFFERENCE_VERDICTS = ("higher", "lower", "equivalent", "inconclusive")

# Measured by benchmarks/bench_claims_power.py (one comparison, no Holm): the largest share of studies
# where a comparison said "higher"/"lower" with no true difference, over four designs of 500 studies,
# and "equivalent" at a true difference of exactly the 5 pp margin (800 studies of 40 participants x 60
# units per kind, where 82 % of null studies reach equivalence; tests/test_unit_kinds.py keeps both).
UNIT_KIND_FALSE_POSITIVE_RATES = {"difference": 0.052, "equivalence": 0.038}


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


@dataclass(frozen=True)
class DifferenceVariance:
    """The variance of accuracy(kind) - accuracy(reference), from three resampling schemes."""

    participants: float  # participants resampled (once for both kinds), units fixed
    units: float  # each kind's units resampled among themselves, participants fixed
    responses: float  # single responses resampled within each kind: the residual, counted once
    joint: float  # participants and units resampled together (before issue 33; counts the residual twice)

    @property
    def corrected(self) -> float:
        """participants + units - responses (Owen's pigeonhole correction), never below either one alone."""
        return max(self.participants + self.units - self.responses, self.participants, self.units)


def paired_difference_variance(
    k: np.ndarray, n: np.ndarray, columns: dict[str, np.ndarray], kind: str, reference: str, n_resamples: int, seed: int
) -> DifferenceVariance:
    """Bootstrap variances of accuracy(kind) - accuracy(reference) over (participant x unit) cells.

    Resampling participants and units together (the pigeonhole bootstrap) counts the residual
    (participant x unit and answer noise) once in each factor: its SE ran 19-35 % above the
    difference's SD over simulated studies. Resampling each factor alone counts it once each, and
    resampling single responses measures it alone, so participants + units - responses counts
    every source once (Owen 2007, "The pigeonhole bootstrap"); benchmarks/bench_claims_power.py
    measures the coverage and the SE against the empirical SD.
    """
    rng = np.random.default_rng(seed)
    n_p = k.shape[0]
    weights_p = rng.multinomial(n_p, np.full(n_p, 1 / n_p), size=n_resamples).astype(float)
    ones_p = np.ones((1, n_p))
    accuracy = {"participants": 0.0, "units": 0.0, "joint": 0.0}
    responses = 0.0
    for sign, name in ((1, kind), (-1, reference)):
        cols = columns[name]
        weights_u = rng.multinomial(len(cols), np.full(len(cols), 1 / len(cols)), size=n_resamples).astype(float)
        ones_u = np.ones((1, len(cols)))
        for scheme, (wp, wu) in {
            "participants": (weights_p, ones_u),
            "units": (ones_p, weights_u),
            "joint": (weights_p, weights_u),
        }.items():
            accuracy[scheme] = accuracy[scheme] + sign * _weighted_accuracy(wp, k[:, cols], n[:, cols], wu)
        hits, total = k[:, cols].sum(), n[:, cols].sum()
        responses += (hits / total) * (1 - hits / total) / total  # the iid bootstrap's variance of a mean
    variances = {scheme: float(np.nanvar(draws, ddof=1)) for scheme, draws in accuracy.items()}
    return DifferenceVariance(variances["participants"], variances["units"], float(responses), variances["joint"])


def _weighted_accuracy(weights_p: np.ndarray, k: np.ndarray, n: np.ndarray, weights_u: np.ndarray) -> np.ndarray:
    """Per resample, sum(w_p w_u k) / sum(w_p w_u n); a weight row of ones stands for 'not resampled'."""
    resamples = max(len(weights_p), len(weights_u))
    weights_p = np.broadcast_to(weights_p, (resamples, weights_p.shape[1]))
    weights_u = np.broadcast_to(weights_u, (resamples, weights_u.shape[1]))
    num = np.einsum("bp,pu,bu->b", weights_p, k, weights_u, optimize=True)
    den = np.einsum("bp,pu,bu->b", weights_p, n, weights_u, optimize=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


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

    The test of zero and the two one-sided tests use the same SE as the interval, so a claim and its
    interval never disagree; simulations in tests/test_unit_kinds.py and
    benchmarks/bench_claims_power.py measure their false-positive rates and coverage.
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
            variance = paired_difference_variance(k, n, columns, kind, reference, n_resamples, seed)
            observed = k[:, columns[kind]].sum() / n[:, columns[kind]].sum()
            base = k[:, columns[reference]].sum() / n[:, columns[reference]].sum()
            difference = float(observed - base)
            se = float(np.sqrt(variance.corrected))
            # t on the df of the scarcest sampled factor: the SE's pieces rest on participants - 1 and units - 1.
            df = min(k.shape[0], len(columns[kind]), len(columns[reference])) - 1
            half = stats.t.ppf(1 - (1 - level) / 2, df) * se
            rows.append(
                {
                    "model_id": model_id,
                    "condition": condition,
                    "unit_kind": kind,
                    "reference_kind": reference,
                    "accuracy": float(observed),
                    "reference_accuracy": float(base),
                    "difference": difference,
                    "ci_low": difference - half,
                    "ci_high": difference + half,
                    "se": se,
                    "df": float(df),
                    "p": float(2 * stats.t.sf(abs(difference) / se, df)) if se > 0 else float(difference == 0),
                    "tost_p": tost_p(difference, se, df, margin),
                    "margin": margin,
                    "n_units": len(columns[kind]),
                    "n_reference_units": len(columns[reference]),
                    "n_participants": k.shape[0],
                }
            )
    return pd.DataFrame(rows)


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
