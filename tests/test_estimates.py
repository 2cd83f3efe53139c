"""Estimates: the crossed bootstrap against brute force, the 2023 statistics, depth correlation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.estimate import (
    accuracy_table,
    cell_counts,
    crossed_bootstrap_accuracy,
    crossed_bootstrap_ci,
    depth_correlation,
    model_comparison,
    unit_accuracy,
)


def simulated(rng, models=("small", "big"), participants=12, units=8, trials=3):
    rows = []
    for m, model in enumerate(models):
        unit_skill = rng.normal(0, 0.8, units)
        for p in range(participants):
            person = rng.normal(0, 0.5)
            for u in range(units):
                for _ in range(rng.integers(0, trials + 1)):  # unbalanced cells, some empty
                    logit = 0.8 + 0.4 * m + person + unit_skill[u]
                    rows.append(
                        {
                            "participant_id": f"{model}-p{p}",
                            "model_id": model,
                            "unit_id": f"{model}-u{u}",
                            "condition": "natural",
                            "trial_kind": "main",
                            "correct": int(rng.random() < 1 / (1 + np.exp(-logit))),
                            "layer_index": u % 4,
                            "n_layers": 4,
                        }
                    )
    return pd.DataFrame(rows)


def test_crossed_bootstrap_equals_resampling_by_hand():
    rng = np.random.default_rng(0)
    frame = simulated(rng, models=("m",))
    k, n = cell_counts(frame)
    participants, units = sorted(frame["participant_id"].unique()), sorted(frame["unit_id"].unique())
    weights_p = rng.multinomial(len(participants), np.full(len(participants), 1 / len(participants)), size=5)
    weights_u = rng.multinomial(len(units), np.full(len(units), 1 / len(units)), size=5)
    fast = crossed_bootstrap_accuracy(k, n, weights_p.astype(float), weights_u.astype(float))
    for b in range(5):
        # Build the resampled data set explicitly: every copy of a participant meets every copy of a unit.
        copies = [
            frame[(frame["participant_id"] == p) & (frame["unit_id"] == u)]
            for i, p in enumerate(participants)
            for _ in range(weights_p[b, i])
            for j, u in enumerate(units)
            for _ in range(weights_u[b, j])
        ]
        assert np.isclose(pd.concat(copies)["correct"].mean(), fast[b])


def test_crossed_interval_is_wider_than_participants_only_and_covers_the_estimate():
    frame = simulated(np.random.default_rng(1), models=("m",), participants=30, units=30)
    table = accuracy_table(frame, n_resamples=2000).iloc[0]
    assert table["ci_low"] < table["accuracy"] < table["ci_high"]
    crossed = table["ci_high"] - table["ci_low"]
    assert crossed > table["participant_ci_high"] - table["participant_ci_low"]  # unit variance counts too
    assert table["unit_bca_low"] < table["unit_mean_accuracy"] < table["unit_bca_high"]
    k, n = cell_counts(frame)
    assert crossed_bootstrap_ci(k, n, n_resamples=2000, seed=3) != crossed_bootstrap_ci(k, n, 2000, seed=4)


def test_kruskal_conover_holm_and_depth_correlation():
    frame = simulated(np.random.default_rng(2), models=("a", "b", "c"), participants=20, units=15)
    units = unit_accuracy(frame)
    assert set(units.columns) >= {"accuracy", "relative_depth"} and units["relative_depth"].max() == 1.0
    result = model_comparison(units)["natural"]
    assert 0 <= result["kruskal_p"] <= 1 and result["kruskal_H"] > 0
    conover = result["conover_holm_p"]
    assert conover.shape == (3, 3) and np.allclose(conover.to_numpy(), conover.to_numpy().T)
    correlation = depth_correlation(units)
    assert set(correlation["model_id"]) == {"a", "b", "c"} and correlation["spearman_rho"].between(-1, 1).all()


def test_models_differ_respects_participants_nested_in_models():
    from analysis.estimate import models_differ

    rng = np.random.default_rng(0)

    def study(effects):
        rows = []
        for m, effect in enumerate(effects):
            for p in range(12):
                ability = rng.normal(0, 0.1)
                for u in range(20):
                    rows.append(
                        {
                            "participant_id": f"m{m}-p{p}",
                            "model_id": f"m{m}",
                            "unit_id": f"m{m}-u{u}",
                            "condition": "natural",
                            "correct": int(rng.random() < 0.75 + effect + ability),
                        }
                    )
        return pd.DataFrame(rows)

    different = models_differ(study([-0.15, 0.0, 0.15]), n_resamples=500).iloc[0]
    assert different["p"] < 0.001 and different["df"] == 2 and different["n_models"] == 3
    same = [models_differ(study([0.0, 0.0, 0.0]), n_resamples=300, seed=s).iloc[0]["p"] for s in range(20)]
    assert np.mean(np.asarray(same) < 0.05) <= 0.15  # at most 3 of 20 by chance
