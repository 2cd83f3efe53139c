"""The scaling-trend models recover a planted slope."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.scaling import robustness_checks, scaling_trends, with_model_facts

MODELS = {f"m{i}": {"parameter_count": 10 ** (6 + 0.4 * i), "train_images": 10 ** (6 + 0.3 * i)} for i in range(9)}


def simulate(slope_per_decade: float, seed: int, participants=60, units_per_model=25, trials=3) -> pd.DataFrame:
    """Responses whose unit accuracy rises by ``slope_per_decade`` (proportion) per decade of parameters."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, facts in MODELS.items():
        decades = np.log10(facts["parameter_count"]) - 7.6
        model_effect = rng.normal(0, 0.02)
        unit_p = np.clip(
            0.8 + slope_per_decade * decades + model_effect + rng.normal(0, 0.08, units_per_model), 0.05, 0.99
        )
        for participant in range(participants):
            for u in rng.choice(units_per_model, size=trials * 3, replace=False):
                rows.append(
                    {
                        "participant_id": f"{model}-{participant}",
                        "model_id": model,
                        "unit_id": f"{model}-u{u}",
                        "condition": "natural",
                        "trial_kind": "main",
                        "correct": int(rng.random() < unit_p[u]),
                        "confidence": 2,
                    }
                )
    return with_model_facts(pd.DataFrame(rows), MODELS)


def test_mixed_model_recovers_a_planted_slope_and_finds_none_where_there_is_none():
    planted = scaling_trends(simulate(0.05, seed=2)).set_index("predictor").loc["log10_parameters"]
    assert planted["ci_low"] < 0.05 < planted["ci_high"] and planted["p"] < 0.01
    assert planted["n_models"] == 9 and planted["n_units"] == 9 * 25
    flat = scaling_trends(simulate(0.0, seed=4)).set_index("predictor").loc["log10_parameters"]
    assert flat["ci_low"] < 0 < flat["ci_high"]
    assert "log10_train_images" in scaling_trends(simulate(0.05, seed=1))["predictor"].tolist()


def test_a_predictor_that_all_models_share_gets_no_slope():
    same_data = {m: {**facts, "train_images": 50_000} for m, facts in MODELS.items()}
    responses = with_model_facts(simulate(0.05, seed=1), same_data)
    assert scaling_trends(responses)["predictor"].tolist() == ["log10_parameters"]


def test_robustness_checks_agree_in_sign():
    checks = robustness_checks(simulate(0.08, seed=3))
    assert set(checks["method"]) == {"CR2, model clusters, Satterthwaite df", "MixedLM, units, (1 | model)"}
    assert checks["false_positive_rate"].between(0, 0.07).all()  # measured by the coverage benchmark
    fitted = checks[checks["status"] == "ok"]
    assert len(fitted) >= 1 and (fitted["slope"] > 0).all() and (fitted["p"] < 0.05).all()
    cr2 = checks.set_index("method").loc["CR2, model clusters, Satterthwaite df"]
    assert cr2["ci_low"] < cr2["slope"] < cr2["ci_high"] and 1 < cr2["df"] <= 7


def test_cr2_is_hc2_on_the_model_means_when_units_are_balanced():
    """With equal units per model and a model-level predictor, CR2 reduces to HC2 on the model means."""
    import statsmodels.api as sm

    from analysis.cluster_robust import cr2_slope_test

    rng = np.random.default_rng(0)
    models, units = 9, 20
    x_models = np.linspace(6.5, 9, models)
    clusters = np.repeat(np.arange(models), units)
    y = 0.8 + rng.normal(0, 0.05, models)[clusters] + rng.normal(0, 0.1, models * units)
    test = cr2_slope_test(y, x_models[clusters], clusters)
    means = np.array([y[clusters == k].mean() for k in range(models)])
    hc2 = sm.OLS(means, sm.add_constant(x_models)).fit(cov_type="HC2")
    assert test.estimate == pytest.approx(hc2.params[1]) and test.se == pytest.approx(hc2.bse[1])
    assert 2 < test.df < models - 2  # Satterthwaite: the extreme models weigh more
    planted = y + 0.05 * (x_models[clusters] - 7.75)
    assert cr2_slope_test(planted, x_models[clusters], clusters).p < 0.05 < test.p


def test_a_mixed_model_at_the_variance_boundary_is_reported_as_failed():
    from types import SimpleNamespace

    from analysis.scaling import mixed_model_problem

    fit = SimpleNamespace(converged=True, cov_re=np.array([[1e-12]]), scale=0.01, bse=pd.Series([0.1, 0.02]))
    assert "boundary" in mixed_model_problem(fit, 0.02)
    fit.cov_re = np.array([[0.001]])
    assert mixed_model_problem(fit, 0.02) is None
    fit.bse = pd.Series([0.1, 4e7])
    assert "absurd" in mixed_model_problem(fit, 0.02)
    assert mixed_model_problem(SimpleNamespace(converged=False), 0.02) == "did not converge"
    # Identical models: the model variance is zero, and the report says the fit failed.
    rows = simulate(0.0, seed=8)
    checks = robustness_checks(rows.assign(correct=1))
    mixed = checks.set_index("method").loc["MixedLM, units, (1 | model)"]
    assert mixed["status"].startswith("failed to fit") and np.isnan(mixed["ci_low"])


def test_report_shows_trends_statistics_and_figures(tmp_path):
    from analysis.report import write_report

    frame = simulate(0.05, seed=2)
    frame["layer_index"] = frame["unit_id"].str.extract(r"u(\d+)$")[0].astype(int) % 5
    frame["n_layers"] = 5
    path = tmp_path / "r.csv"
    frame.drop(columns=["log10_parameters", "log10_train_images", "imagenet_top1"]).to_csv(path, index=False)
    page = write_report(path, tmp_path / "report", n_resamples=200, models=MODELS)
    text = page.read_text()
    assert "Scaling trends" in text and "Kruskal-Wallis" in text
    # The model tests carry their false-positive rates from the coverage benchmark.
    assert "It rejected 3.4% of" in text and "95.2% at 0.05" in text
    assert (
        "natural: accuracy rises with scale: slope +" in text and "percentage points per decade of parameters" in text
    )
    for name in (
        "scaling.png",
        "scaling.pdf",
        "accuracy.pdf",
        "scaling.csv",
        "unit_accuracy.csv",
        "depth_correlation.csv",
        "conover_holm_natural.csv",
        "scaling_robustness.csv",
    ):
        assert (tmp_path / "report" / name).exists(), name


def test_claims_follow_the_corrected_test_and_the_equivalence_test():
    from analysis.claims import detection_power, holm, minimum_detectable_slope, tost_p, verdict

    # TOST: a precise estimate near zero is equivalent; a wide one is not.
    assert tost_p(0.001, 0.004, 7, 0.02) < 0.01 and tost_p(0.001, 0.02, 7, 0.02) > 0.1
    assert tost_p(0.0, 0.01, 7, 0.02) == pytest.approx(stats.t.sf(2.0, 7))
    # The minimum detectable slope has the stated power, and more noise raises it.
    mde = minimum_detectable_slope(0.01, 7)
    assert detection_power(mde, 0.01, 7) == pytest.approx(0.8, abs=1e-6)
    assert minimum_detectable_slope(0.02, 7) == pytest.approx(2 * mde, rel=1e-6)
    assert minimum_detectable_slope(0.01, 100) < mde  # more degrees of freedom, less needed
    assert list(holm([0.01, 0.04, np.nan])) == pytest.approx([0.02, 0.04, np.nan], nan_ok=True)
    assert verdict(0.05, 0.001, 0.9) == "rises" and verdict(-0.05, 0.001, 0.9) == "falls"
    assert verdict(0.001, 0.8, 0.01) == "equivalent" and verdict(0.001, 0.8, 0.2) == "inconclusive"


def test_trends_carry_the_family_correction_equivalence_and_detectable_slope():
    from analysis.config import AnalysisConfig

    trends = scaling_trends(simulate(0.0, seed=4))
    assert set(trends["predictor"]) == {"log10_parameters", "log10_train_images"}
    assert (trends["p_holm"] >= trends["p"]).all() and (trends["mde"] > 0).all()
    assert set(trends["verdict"]) <= {"equivalent", "inconclusive"}
    # A margin wider than the interval makes it equivalent; a margin of almost nothing cannot be.
    wide = scaling_trends(simulate(0.0, seed=4), config=AnalysisConfig(equivalence_margins={"log10_parameters": 0.5}))
    assert wide.set_index("predictor").loc["log10_parameters", "verdict"] == "equivalent"
    narrow = AnalysisConfig(equivalence_margins={"log10_parameters": 1e-6})
    assert (
        scaling_trends(simulate(0.0, seed=4), config=narrow).set_index("predictor").loc["log10_parameters", "verdict"]
        == "inconclusive"
    )


def test_warnings_name_collinear_predictors_and_models_that_carry_a_slope():
    from analysis.claims import collinear_pairs, high_leverage_models
    from analysis.scaling import scaling_warnings

    x = {f"m{i}": float(i) for i in range(7)} | {"clip_a": 20.0, "clip_b": 21.0}
    assert high_leverage_models(x) == ["clip_a", "clip_b"]
    assert high_leverage_models({f"m{i}": float(i) for i in range(9)}) == []
    assert collinear_pairs({"a": {"p": 1, "q": 2, "r": 3}, "b": {"p": 2, "q": 4, "r": 7}})[0][:2] == ("a", "b")
    responses = simulate(0.0, seed=4)  # parameters and training images rise together across MODELS
    notes = scaling_warnings(responses, scaling_trends(responses))
    assert any("log10_parameters and log10_train_images correlate" in n for n in notes)


def test_the_condition_by_scale_interaction_is_the_slope_of_the_paired_difference():
    from analysis.scaling import condition_interaction

    natural = simulate(0.08, seed=5)
    synthetic = simulate(0.0, seed=6).assign(condition="synthetic")
    both = pd.concat([natural, synthetic], ignore_index=True)
    row = condition_interaction(both).iloc[0]
    assert row["condition"] == "natural - synthetic" and row["n_models"] == 9
    assert row["ci_low"] < 0.08 < row["ci_high"] and row["ci_low"] > 0 and row["verdict"] == "rises"
    trends = scaling_trends(both).set_index(["condition", "predictor"])["slope"]
    # With the same models in both conditions, it is exactly the difference of the two slopes.
    difference = trends[("natural", "log10_parameters")] - trends[("synthetic", "log10_parameters")]
    assert row["slope"] == pytest.approx(difference)
    same = pd.concat([natural, natural.assign(condition="synthetic")], ignore_index=True)
    assert condition_interaction(same).iloc[0]["slope"] == pytest.approx(0, abs=1e-12)


def test_depth_trend_takes_the_models_as_replicates_and_corrects_the_depth_family():
    from analysis.estimate import depth_correlation, depth_trend

    rng = np.random.default_rng(0)
    rows = []
    for condition, slope in (("natural", -0.2), ("synthetic", 0.0)):
        for m in range(6):
            own = slope + rng.normal(0, 0.03)  # each model's own depth effect
            for u in range(30):
                depth = u / 29
                rows.append(
                    {
                        "model_id": f"m{m}",
                        "condition": condition,
                        "unit_id": f"m{m}-u{u}",
                        "relative_depth": depth,
                        "accuracy": 0.8 + own * depth + rng.normal(0, 0.05),
                    }
                )
    units = pd.DataFrame(rows)
    trend = depth_trend(units).set_index("condition")
    assert trend.loc["natural", "ci_low"] < -0.2 < trend.loc["natural", "ci_high"] < 0
    assert trend.loc["natural", "n_models"] == 6 and (trend["p_holm"] >= trend["p"]).all()
    assert trend.loc["synthetic", "ci_low"] < 0 < trend.loc["synthetic", "ci_high"]
    correlations = depth_correlation(units)
    assert len(correlations) == 12 and (correlations["p_holm"] >= correlations["p"]).all()


def test_the_printed_mde_is_median_unbiased_for_the_holm_verdict():
    from analysis.claims import detection_power, minimum_detectable_slope, verdict_mde

    # Replicate studies of one design: their SEs scatter as sigma * sqrt(chi2_df / df).
    sigma, df, rng = 0.01, 7, np.random.default_rng(0)
    ses = sigma * np.sqrt(rng.chisquare(df, 20_000) / df)
    true_mde = minimum_detectable_slope(sigma, df, 0.05 / 2)  # Holm over 2 slopes, the other null
    printed = np.array([verdict_mde(se, df, 0.05, 0.8, family_size=2) for se in ses[:2000]])
    assert np.median(printed) == pytest.approx(true_mde, rel=0.03)
    assert detection_power(np.median(printed), sigma, df, 0.025) == pytest.approx(0.8, abs=0.02)
    # The plug-in MDE at the raw level falls short of 80 % power for the Holm verdict.
    plug_in = np.median([minimum_detectable_slope(se, df) for se in ses[:2000]])
    assert detection_power(plug_in, sigma, df, 0.025) < 0.65
    assert verdict_mde(0.01, df, family_size=4) > verdict_mde(0.01, df, family_size=2) > verdict_mde(0.01, df)


def test_the_primary_predictor_is_its_own_family_and_collinear_primaries_become_secondary():
    from analysis.config import AnalysisConfig
    from analysis.scaling import predictor_families

    both = pd.concat([simulate(0.0, seed=4), simulate(0.0, seed=8).assign(condition="synthetic")], ignore_index=True)
    trends = scaling_trends(both).set_index(["predictor", "condition"])
    assert trends.loc["log10_parameters", "family"].eq("primary").all()
    assert trends.loc["log10_train_images", "family"].eq("secondary").all()
    assert trends["family_size"].eq(2).all()  # two conditions per family, not four slopes in one
    for _, row in trends.iterrows():  # Holm within each family only
        family = trends[trends["family"] == row["family"]]
        assert row["p_holm"] == pytest.approx(
            min(1.0, row["p"] * 2) if row["p"] == family["p"].min() else row["p_holm"]
        )
    # Asking for both as primary: training images correlate with parameters (r = 1 here), so stay secondary.
    config = AnalysisConfig(primary_predictors=["log10_parameters", "log10_train_images"])
    facts = {"log10_parameters": {"a": 6.0, "b": 7.0, "c": 8.0}, "log10_train_images": {"a": 5.0, "b": 6.1, "c": 6.9}}
    families, notes = predictor_families(facts, config)
    assert families == {"log10_parameters": "primary", "log10_train_images": "secondary"}
    assert "tested as secondary" in notes[0]
    independent = {**facts, "log10_train_images": {"a": 6.0, "b": 4.0, "c": 6.5}}
    assert set(predictor_families(independent, config)[0].values()) == {"primary"}
    with pytest.raises(ValueError, match="primary_predictors"):
        AnalysisConfig(primary_predictors=["log10_flops"])


def test_a_sentence_never_prints_an_interval_that_contradicts_its_verdict():
    from analysis.config import DEFAULT_ANALYSIS
    from analysis.report import scaling_sentence
    from analysis.scaling import with_claims

    rng = np.random.default_rng(3)
    rows = []
    # Random families, and one where Holm's step-down rejects the second slope at p = 0.04.
    shifts = [rng.normal(0, 3, 2) for _ in range(30)] + [stats.t.isf([0.0005, 0.02], 7)]
    for family, pair in enumerate(shifts):
        for condition, shift in zip(("natural", "synthetic"), pair, strict=True):
            se = rng.uniform(0.002, 0.05)
            p_slope = shift * se
            p = 2 * stats.t.sf(abs(p_slope / se), 7)
            half = stats.t.ppf(0.975, 7) * se
            where = {"family": f"f{family}", "condition": condition, "unit_kind": "channel"}
            fit = {"slope": p_slope, "se": se, "df": 7.0, "p": p, "ci_low": p_slope - half, "ci_high": p_slope + half}
            rows.append({**where, "predictor": "log10_parameters", "n_models": 9, **fit})
    trends = with_claims(pd.DataFrame(rows))
    for row in trends.itertuples():
        sentence = scaling_sentence(row, DEFAULT_ANALYSIS)
        excludes_zero = not row.sim_ci_low <= 0 <= row.sim_ci_high
        assert f"[{row.sim_ci_low * 100:+.1f}, {row.sim_ci_high * 100:+.1f}]" in sentence
        if row.verdict == "inconclusive":
            assert not excludes_zero  # an interval without zero implies Holm rejects
        if row.verdict in ("rises", "falls") and not excludes_zero:
            assert "step-down rejects zero although this interval" in sentence
        assert "95% simultaneous over the 2 slopes of its Holm family" in sentence
        assert "with the Holm correction over 2 slopes, this design detects" in sentence
    assert {"rises", "falls", "inconclusive"} <= set(trends["verdict"])
    assert "step-down" in scaling_sentence(trends.iloc[-1], DEFAULT_ANALYSIS)
