"""Prediction-powered estimates (analysis.ppi) and the noise ceiling (analysis.machine): the math on studies
simulated here, and the checks that refuse scores that do not fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.load import ResponseTableError, check_machine_scores
from analysis.machine import noise_ceiling, spearman_brown, split_halves
from analysis.ppi import ppi_estimates, scored_units, tuned_weight
from contracts.bundle import StudyMismatchError


def simulated_study(
    seed: int = 0, r: float = 0.8, models: int = 4, scored: int = 120, rated: int = 20, raters: int = 30
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Units with true accuracies 0.5 + 0.5 Beta, a machine score correlated ``r`` with them on every unit,
    people (with their own skill) rating the first ``rated`` units of each model."""
    rng = np.random.default_rng(seed)
    x = np.linspace(6, 9, models)
    mean_beta = 0.5 + 0.05 * (x - 7.5) / 1.5
    skill = rng.uniform(0.8, 1.0, 60)
    rows, scores, truth = [], [], {}
    for m in range(models):
        accuracy = 0.5 + 0.5 * rng.beta(mean_beta[m] * 2, (1 - mean_beta[m]) * 2, scored)
        truth[f"m{m}"] = 0.5 + 0.5 * mean_beta[m] * 0.9
        z = (accuracy - 0.75) / 0.144
        machine = np.clip(0.75 + 0.1 * (r * z + np.sqrt(1 - r * r) * rng.normal(size=scored)), 0, 1)
        scores += [(f"m{m}u{i}", "natural", machine[i], f"m{m}") for i in range(scored)]
        for i in range(rated):
            people = rng.choice(len(skill), raters, replace=False)
            correct = rng.random(raters) < 0.5 + (accuracy[i] - 0.5) * skill[people]
            rows += [
                (f"p{p}", f"m{m}", f"m{m}u{i}", "natural", int(c), "main") for p, c in zip(people, correct, strict=True)
            ]
    responses = pd.DataFrame(
        rows, columns=["participant_id", "model_id", "unit_id", "condition", "correct", "trial_kind"]
    )
    frame = pd.DataFrame(scores, columns=["unit_id", "condition", "machine_score", "model_id"])
    facts = pd.DataFrame({"log10_parameters": x}, index=[f"m{m}" for m in range(models)])
    return responses, frame, facts, truth


def test_a_good_machine_narrows_every_interval_and_a_useless_one_is_ignored():
    responses, scores, facts, _ = simulated_study(r=0.9)
    good = ppi_estimates(responses, scores, facts)
    assert len(good.cells) == 4 and not good.withheld
    assert (good.cells["width_ratio"] < 0.9).all() and good.cells["width_ratio"].mean() < 0.8
    assert good.weights["weight"].iloc[0] > 0.5
    assert (good.cells["effective_responses"] > good.cells["n_responses"] * 1.3).all()
    slope = good.slopes.iloc[0]
    assert slope["n_models"] == 4 and slope["human_ci_low"] < slope["human_slope"] < slope["human_ci_high"]

    noise = scores.assign(machine_score=np.random.default_rng(5).uniform(0.6, 0.9, len(scores)))
    useless = ppi_estimates(responses, noise, facts)
    assert abs(useless.weights["weight"].iloc[0]) < 0.3
    assert useless.cells["width_ratio"].between(0.97, 1.03).all()
    # Unbiased whatever the machine: the PPI estimate stays near the human one when the machine says nothing.
    np.testing.assert_allclose(useless.cells["ppi_estimate"], useless.cells["human_estimate"], atol=0.02)


def test_with_every_scored_unit_rated_the_estimate_is_the_human_one():
    responses, scores, facts, _ = simulated_study(scored=20, rated=20)
    cells = ppi_estimates(responses, scores, facts).cells
    np.testing.assert_allclose(cells["ppi_estimate"], cells["human_estimate"])
    np.testing.assert_allclose(cells["ppi_se"], cells["human_se"])
    assert (cells["ppi_weight"] == 0).all()


def test_the_estimate_is_the_machine_mean_plus_the_mean_residual_with_a_cross_fitted_weight():
    responses, scores, facts, _ = simulated_study(seed=3)
    result = ppi_estimates(responses, scores, facts)
    units = scored_units(responses, scores)
    # m1's weight is tuned on the other models' rated units only; the table's pooled weight on all.
    weight = tuned_weight(units[units["model_id"] != "m1"])
    cell = result.cells.set_index("model_id").loc["m1"]
    assert cell["weight"] == pytest.approx(weight) and weight != pytest.approx(tuned_weight(units))
    assert result.weights["weight"].iloc[0] == pytest.approx(tuned_weight(units))
    one = units[units["model_id"] == "m1"]
    rated = one[one["rated"]]
    expected = weight * one["machine_score"].mean() + (rated["human_accuracy"] - weight * rated["machine_score"]).mean()
    assert cell["ppi_estimate"] == pytest.approx(expected)


def test_intervals_cover_the_truth_in_simulated_studies():
    """A small coverage check (benchmarks/bench_ppi.py measures it properly): 30 studies x 4 models."""
    hits = {"human": 0, "ppi": 0}
    for seed in range(30):
        responses, scores, facts, truth = simulated_study(seed=seed)
        cells = ppi_estimates(responses, scores, facts).cells
        true = cells["model_id"].map(truth)
        for kind in hits:
            hits[kind] += int(((cells[f"{kind}_ci_low"] <= true) & (true <= cells[f"{kind}_ci_high"])).sum())
    assert hits["human"] >= 0.85 * 120 and hits["ppi"] >= 0.85 * 120


def test_too_few_rated_units_or_participants_withhold_the_estimate_with_the_reason():
    responses, scores, facts, _ = simulated_study()
    few = responses[~((responses["model_id"] == "m0") & (responses["unit_id"].str[3:].astype(int) >= 3))]
    result = ppi_estimates(few, scores, facts)
    assert "m0" not in set(result.cells["model_id"])
    assert result.withheld == [
        "m0, natural: PPI and human-only intervals withheld (3 rated unit(s), fewer than 5: the residuals' "
        "variance is not estimable)"
    ]


def test_split_halves_keep_each_raters_answers_together_and_the_ceiling_tracks_reliability():
    responses, scores, _, _ = simulated_study(raters=30)
    units, first, second = split_halves(responses, n_splits=5)
    assert len(units) == 80 and first.shape == (5, 80)
    assert np.isfinite(first).all() and np.isfinite(second).all()
    table = noise_ceiling(responses, scores, n_resamples=200).iloc[0]
    assert 0.5 < table["reliability"] < 0.95
    assert table["noise_ceiling"] == pytest.approx(np.sqrt(table["reliability"]))
    assert table["reliability_ci_low"] < table["reliability"] < table["reliability_ci_high"]
    assert table["machine_r"] < table["noise_ceiling"]
    few = noise_ceiling(simulated_study(raters=4)[0], scores, n_resamples=200).iloc[0]
    assert few["reliability"] < table["reliability"]  # fewer raters per unit: noisier unit accuracies
    assert spearman_brown(0.5) == pytest.approx(2 / 3)


def test_scores_that_do_not_fit_are_refused_naming_the_file_the_unit_and_the_rule(tmp_path, tiny_bundle_dir):
    from contracts.bundle import load_bundle

    responses, scores, _, _ = simulated_study()
    path = tmp_path / "scores.csv"
    with pytest.raises(ResponseTableError, match=r"scores.csv: 1 unit\(s\) that people rated have no machine score"):
        check_machine_scores(path, scores[scores["unit_id"] != "m0u0"], responses)
    extra = pd.DataFrame([{"unit_id": "x", "condition": "natural", "machine_score": 0.5, "model_id": ""}])
    orphan = pd.concat([scores, extra], ignore_index=True)
    with pytest.raises(ResponseTableError, match="row 482: unit 'x' was rated by nobody and the file names no model"):
        check_machine_scores(path, orphan, responses)

    with pytest.raises(StudyMismatchError, match="machine scores of study 'b', but the responses are of study 'a'"):
        check_machine_scores(path, scores.assign(study_id="b"), responses.assign(study_id="a"))
    manifest = load_bundle(tiny_bundle_dir).manifest
    with pytest.raises(StudyMismatchError, match="machine scores of study 'another', but the bundle is of study"):
        check_machine_scores(path, scores.assign(study_id="another"), responses, manifest)
    with pytest.raises(ResponseTableError, match=r"row 2: unit 'm0u0' is not in the bundle of study"):
        check_machine_scores(path, scores, responses, manifest)


def test_each_unit_kind_is_its_own_population():
    """Machine-only units are channels: a dictionary's rated units get no help from them (and no bias)."""
    responses, scores, facts, _ = simulated_study(rated=20)
    latents = responses["unit_id"].str[3:].astype(int) < 10
    responses = responses.assign(unit_kind=np.where(latents, "kmeans", "channel"))
    kinds = dict(zip(responses["unit_id"], responses["unit_kind"], strict=False))
    scores = scores.assign(unit_kind=scores["unit_id"].map(kinds).fillna("channel"))
    cells = ppi_estimates(responses, scores, facts).cells.set_index(["model_id", "unit_kind"])
    assert cells.loc[("m0", "kmeans"), "n_scored_units"] == 10 and cells.loc[("m0", "channel"), "n_scored_units"] == 110
    assert cells.loc[("m0", "kmeans"), "ppi_estimate"] == pytest.approx(cells.loc[("m0", "kmeans"), "human_estimate"])
    assert cells.xs("channel", level="unit_kind")["width_ratio"].mean() < 0.95


def test_the_figure_sets_both_intervals_side_by_side_for_every_model_and_kind():
    from analysis.report import ppi_figure

    responses, scores, facts, _ = simulated_study(rated=20)
    latents = responses["unit_id"].str[3:].astype(int) < 10
    responses = responses.assign(unit_kind=np.where(latents, "kmeans", "channel"))
    cells = ppi_estimates(responses, scores, facts).cells
    figure = ppi_figure(cells, 0.5, ["m3", "m2", "m1", "m0"], {"m0": "Zero"})
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert labels[:2] == ["m3 · channel", "m3 · kmeans"] and labels[-1] == "Zero · kmeans"
    assert len(figure.axes[0].containers) == 2  # people only, with the machine


def test_a_cell_without_spread_is_withheld_and_an_undefined_ceiling_is_said_in_words():
    from analysis.presentation import noise_ceiling_sentences

    responses, scores, facts, _ = simulated_study()
    perfect = responses.assign(correct=np.where(responses["model_id"] == "m1", 1, responses["correct"]))
    result = ppi_estimates(perfect, scores, facts)
    assert "m1" not in set(result.cells["model_id"])
    assert any("m1, natural" in w and "answers are correct: no spread" in w for w in result.withheld)
    ceiling = noise_ceiling(responses.assign(correct=1), scores, n_resamples=50)
    assert "the noise ceiling (split-half) is not estimable" in noise_ceiling_sentences(ceiling, "pixel")[0]


def test_intervals_stay_in_zero_one_and_around_the_estimate():
    from analysis.ppi import _bounded

    assert _bounded(0.98, 0.05) == (pytest.approx(0.93), 1.0)
    # An unbiased estimate past the bound keeps its own point.
    assert _bounded(1.01, 0.05) == (pytest.approx(0.96), 1.01)
    assert _bounded(0.02, 0.05) == (0.0, pytest.approx(0.07))
