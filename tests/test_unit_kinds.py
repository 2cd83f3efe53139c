"""Unit-kind comparisons: a planted difference is found, and a null one is claimed no more often than alpha."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from analysis.unit_kinds import (
    difference_rows,
    difference_sentence,
    difference_verdict,
    kind_accuracy,
    kind_differences,
    unit_kinds,
)


def simulate(
    kind_effect: float,
    seed: int,
    participants: int = 30,
    units_per_kind: int = 20,
    sd_participant: float = 0.5,
    sd_unit: float = 0.8,
    models=("m_small",),
) -> pd.DataFrame:
    """Every participant answers every unit once; ``sae`` units differ from channels by ``kind_effect`` (logit)."""
    rng = np.random.default_rng(seed)
    rows = []
    for model in models:
        ability = rng.normal(0, sd_participant, participants)
        for kind, shift in (("channel", 0.0), ("sae", kind_effect)):
            easiness = rng.normal(1.0 + shift, sd_unit, units_per_kind)
            p = expit(ability[:, None] + easiness[None, :])
            correct = rng.random(p.shape) < p
            for i in range(participants):
                for u in range(units_per_kind):
                    rows.append(
                        {
                            "participant_id": f"p{i}",
                            "model_id": model,
                            "condition": "natural",
                            "unit_id": f"{model}__layer__{kind}-{u}",
                            "unit_kind": kind,
                            "trial_kind": "main",
                            "correct": int(correct[i, u]),
                            "confidence": 2,
                        }
                    )
    return pd.DataFrame(rows)


def verdict_of_one(responses: pd.DataFrame, margin: float = 0.05, n_resamples: int = 400) -> str:
    """The verdict of a study with one comparison (a family of one: Holm changes nothing)."""
    row = difference_rows(responses, margin, n_resamples).iloc[0]
    return difference_verdict(row.difference, row.p, row.tost_p, 0.05)


def test_a_planted_difference_between_unit_kinds_is_recovered():
    responses = simulate(kind_effect=2.0, seed=1)
    assert unit_kinds(responses) == ["channel", "sae"]
    accuracy = kind_accuracy(responses, n_resamples=1_000)
    assert list(accuracy["unit_kind"]) == ["channel", "sae"]
    assert accuracy.loc[1, "accuracy"] > accuracy.loc[0, "accuracy"]
    assert (accuracy["ci_low"] < accuracy["accuracy"]).all() and (accuracy["accuracy"] < accuracy["ci_high"]).all()
    table = kind_differences(responses, n_resamples=1_000)
    row = table.iloc[0]
    truth = accuracy.loc[1, "accuracy"] - accuracy.loc[0, "accuracy"]
    assert row.unit_kind == "sae" and row.reference_kind == "channel"
    assert row.difference == truth and row.ci_low < truth < row.ci_high and row.ci_low > 0
    assert row.verdict == "higher"
    assert "sae units are higher in accuracy than channel units by +" in difference_sentence(row)
    found = [verdict_of_one(simulate(2.0, seed)) for seed in range(30)]
    assert found.count("higher") >= 27  # power at this effect is near 1


def test_a_null_difference_is_claimed_at_most_at_alpha_and_equivalence_needs_precision():
    """The tested false-positive rate of the difference test (docs/statistics.md): 200 null studies."""
    verdicts = [verdict_of_one(simulate(0.0, seed)) for seed in range(200)]
    false_positive = (verdicts.count("higher") + verdicts.count("lower")) / len(verdicts)
    assert false_positive <= 0.08, false_positive
    # With 20 units per kind, the interval is about ±10 pp wide: ±5 pp equivalence is rarely shown ...
    assert verdicts.count("equivalent") / len(verdicts) < 0.2
    # ... but with a wide margin it is, for most null studies.
    wide_verdicts = [verdict_of_one(simulate(0.0, s), margin=0.25) for s in range(20)]
    assert wide_verdicts.count("equivalent") >= 15


def test_equivalence_is_claimed_falsely_at_most_at_alpha_at_the_margin():
    """A true difference of exactly the ±5 pp margin: 'equivalent' is printed in at most ~5 % of studies.

    60 units per kind and 40 participants make equivalence reachable: about half the null studies show it.
    """
    design = {"sd_unit": 0.3, "units_per_kind": 60, "participants": 40}
    at_margin = 0.2786  # the logit shift that puts the sae units 5.0 pp above the channels in this design
    verdicts = [verdict_of_one(simulate(at_margin, seed, **design), n_resamples=300) for seed in range(150)]
    # Nominal 5 %: 150 studies' binomial 99 % bound is 9 % (bench_claims_power measured 4.0 % over 800).
    assert verdicts.count("equivalent") / len(verdicts) <= 0.09
    null = [verdict_of_one(simulate(0.0, seed, **design), n_resamples=300) for seed in range(20)]
    assert null.count("equivalent") >= 12  # reachable when true: about 85 % of null studies


def test_holm_counts_every_model_and_condition():
    responses = simulate(0.0, seed=3, models=("a", "b", "c"))
    table = kind_differences(responses, n_resamples=300)
    assert list(table["model_id"]) == ["a", "b", "c"]
    assert (table["p_holm"] >= table["p"]).all() and (table["tost_p_holm"] >= table["tost_p"]).all()


def test_the_pipeline_reports_unit_kinds_and_scales_each_kind(tmp_path):
    from analysis.pipeline import analyse

    responses = simulate(1.0, seed=2, models=("s", "m", "l"), participants=12, units_per_kind=8)
    path = tmp_path / "responses.csv"
    responses.to_csv(path, index=False)
    facts = {m: {"parameter_count": n, "train_images": 1000} for m, n in (("s", 1e5), ("m", 1e6), ("l", 1e7))}
    results = analyse(path, n_resamples=300, models=facts)
    assert results.unit_kinds is not None and results.unit_kinds.kinds == ["channel", "sae"]
    assert set(results.unit_kinds.differences["model_id"]) == {"s", "m", "l"}
    trends = results.scaling.trends
    assert set(trends["unit_kind"]) == {"channel", "sae"}

    from analysis.report import render_report

    page = render_report(results, tmp_path / "report").read_text()
    assert "Unit kinds: channel, sae" in page and "sae units are higher in accuracy than channel units" in page
    assert "s, natural, sae units:" not in page and "natural, sae units:" in page  # per-kind scaling sentences
    assert (tmp_path / "report" / "unit_kind_differences.csv").exists()

    single = simulate(0.0, seed=2)
    single = single[single["unit_kind"] == "channel"]
    single.to_csv(path, index=False)
    assert analyse(path, n_resamples=200).unit_kinds is None


def _two_paradigms(seed: int, agreement: float, units: int = 30) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The same units in 2AFC and odd-one-out; ``agreement`` ties the two paradigms' unit easiness."""
    rng = np.random.default_rng(seed)
    easiness = rng.normal(0, 1, units)
    other = agreement * easiness + np.sqrt(1 - agreement**2) * rng.normal(0, 1, units)
    tables = []
    for paradigm, base, ease in (("2afc", 1.0, easiness), ("odd_one_out_5", 0.0, other)):
        p = expit(base + ease[None, :] + rng.normal(0, 0.3, (20, 1)))
        correct = rng.random(p.shape) < p
        rows = [
            {
                "participant_id": f"{paradigm}-p{i}",
                "model_id": "m",
                "condition": "natural",
                "unit_id": f"m__l__{u}",
                "trial_kind": "main",
                "paradigm": paradigm,
                "correct": int(correct[i, u]),
                "confidence": 2,
            }
            for i in range(20)
            for u in range(units)
        ]
        tables.append(pd.DataFrame(rows))
    return tables[0], tables[1]


def test_agreement_interval_leaves_out_resamples_where_rho_is_undefined_and_none_when_they_are_many():
    import warnings

    from analysis.paradigms import MAX_UNDEFINED_RESAMPLES, spearman_interval
    from analysis.report import agreement_sentence

    rng = np.random.default_rng(0)
    y = rng.random(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a constant resample is counted, not warned about
        # one paradigm's accuracies take two values, 5 units and 3: (5/8)^8 + (3/8)^8 = 2.4 % of resamples are constant
        few = spearman_interval(np.array([0.5] * 5 + [1.0] * 3), y, 4_000, 0)
        # 7 and 1: (7/8)^8 + (1/8)^8 = 34 %
        many = spearman_interval(np.array([0.5] * 7 + [1.0]), y, 4_000, 0)
    assert 0.015 < few[2] < 0.035 and -1 <= few[0] < few[1] <= 1
    assert many[2] > 0.3 > MAX_UNDEFINED_RESAMPLES and np.isnan(many[0]) and np.isnan(many[1])

    def row(low, high, undefined):
        return pd.Series(
            {
                "paradigms": "2afc vs odd_one_out_5",
                "condition": "natural",
                "spearman_rho": 0.4,
                "ci_low": low,
                "ci_high": high,
                "undefined_resamples": undefined,
                "n_units": 8,
                "p_holm": 0.3,
            }
        )

    assert f"no 95% CI: ρ is undefined in {many[2]:.0%} of the resamples" in agreement_sentence(row(*many))
    assert f"over the rest; ρ is undefined in {few[2]:.0%} of the resamples" in agreement_sentence(row(*few))
    assert "95% CI +0.10 to +0.60; 8 units" in agreement_sentence(row(0.1, 0.6, 0.0))
    assert "nan" not in agreement_sentence(row(*many))
    statistics = (Path(__file__).parent.parent / "docs" / "statistics.md").read_text()
    assert f"at most {MAX_UNDEFINED_RESAMPLES * 100:g} %" in statistics  # the docs state the threshold in force


def test_paradigm_agreement_is_found_when_real_and_rarely_when_absent(tmp_path):
    from analysis.paradigms import paired_unit_accuracy, paradigm_correlation
    from analysis.pipeline import analyse

    first, second = _two_paradigms(0, agreement=0.9)
    table = paradigm_correlation(paired_unit_accuracy(first, second), n_resamples=500)
    row = table.iloc[0]
    assert row.paradigms == "2afc vs odd_one_out_5" and row.n_units == 30
    assert row.spearman_rho > 0.5 and row.ci_low > 0 and row.p < 0.01
    from scipy import stats

    def null_p(seed: int) -> float:  # the table's p column is scipy's Spearman test, without the bootstrap
        paired = paired_unit_accuracy(*_two_paradigms(seed, 0.0))
        return stats.spearmanr(paired["accuracy_2afc"], paired["accuracy_odd_one_out_5"]).pvalue

    rejected = [null_p(s) < 0.05 for s in range(200)]
    assert sum(rejected) <= 16  # the test of zero keeps its level with independent paradigms

    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    first.to_csv(a, index=False)
    second.to_csv(b, index=False)
    results = analyse(a, n_resamples=200, exclusions="none", other_paradigm=b)
    assert results.paradigm_agreement.paradigms == ("2afc", "odd_one_out_5")
    assert results.chance == 0.5 and not results.paradigm_agreement.correlation.empty


def test_the_difference_variance_counts_the_residual_once():
    from analysis.estimate import cell_counts
    from analysis.unit_kinds import paired_difference_variance

    # No participant or unit effects: all the variance is answer noise. Resampling participants and units
    # together counts it about three times ((2 - 1/P)(2 - 1/U) - 1); the corrected variance once.
    corrected, joint = [], []
    for seed in range(4):
        frame = simulate(0.0, seed=seed, participants=60, units_per_kind=60, sd_participant=0.0, sd_unit=0.0)
        k, n = cell_counts(frame)
        kind_of = frame.groupby("unit_id")["unit_kind"].first().sort_index().to_numpy()
        columns = {name: np.flatnonzero(kind_of == name) for name in ("channel", "sae")}
        variance = paired_difference_variance(k, n, columns, "sae", "channel", 2000, seed)
        corrected.append(variance.corrected / variance.responses)
        joint.append(variance.joint / variance.responses)
    assert np.mean(corrected) == pytest.approx(1.0, abs=0.2)
    assert np.mean(joint) == pytest.approx(3.0, abs=0.45)
