"""The scaling-trend models recover a planted slope."""

from __future__ import annotations

import numpy as np
import pandas as pd

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
    assert set(checks["method"]) == {
        "MixedLM, units, (1 | model)",
        "GEE, participant clusters",
        "GLM, model-clustered SE",
    }
    assert (checks["slope"] > 0).all() and (checks["ci_low"] < checks["slope"]).all()


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
