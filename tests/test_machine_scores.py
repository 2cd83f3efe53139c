"""Machine scores beside human accuracy: loading, joining, correlating, and the report's section."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.load import ResponseTableError, load_machine_scores
from analysis.machine import human_and_machine_models, human_and_machine_units, human_machine_correlation


def _units(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Unit accuracies for 3 models x 10 units x 2 conditions; machine scores track them on natural only."""
    rng = np.random.default_rng(seed)
    rows, scores = [], []
    for model in ("a", "b", "c"):
        for u in range(10):
            for condition in ("natural", "synthetic"):
                accuracy = rng.uniform(0.5, 1.0)
                unit_id = f"{model}-{u}"
                rows.append({"model_id": model, "condition": condition, "unit_id": unit_id, "accuracy": accuracy})
                machine = accuracy - 0.1 if condition == "natural" else rng.uniform(0.5, 1.0)
                scores.append({"unit_id": unit_id, "condition": condition, "machine_score": machine})
    return pd.DataFrame(rows), pd.DataFrame(scores)


def test_correlation_is_perfect_where_the_score_tracks_accuracy_and_weak_where_it_does_not():
    units, scores = _units()
    joined = human_and_machine_units(units, scores)
    assert len(joined) == 60
    table = human_machine_correlation(joined).set_index(["condition", "level"])
    assert table.loc[("natural", "units"), "spearman_rho"] == pytest.approx(1.0)
    assert table.loc[("natural", "units"), "pearson_r"] == pytest.approx(1.0)
    assert table.loc[("natural", "units"), "n"] == 30 and table.loc[("natural", "models"), "n"] == 3
    assert abs(table.loc[("synthetic", "units"), "spearman_rho"]) < 0.5

    models = human_and_machine_models(joined).set_index(["model_id", "condition"])
    a = joined[(joined["model_id"] == "a") & (joined["condition"] == "natural")]
    assert models.loc[("a", "natural"), "human_accuracy"] == pytest.approx(a["accuracy"].mean())
    assert models.loc[("a", "natural"), "machine_score"] == pytest.approx(a["accuracy"].mean() - 0.1)
    assert models.loc[("a", "natural"), "n_units"] == 10


def test_units_without_a_score_drop_out_and_constant_scores_give_no_correlation():
    units, scores = _units()
    joined = human_and_machine_units(units, scores[scores["unit_id"].str.startswith("a")])
    assert set(joined["model_id"]) == {"a"}
    flat = joined.assign(machine_score=0.9)
    assert human_machine_correlation(flat).empty


def test_machine_score_files_are_validated_with_file_column_and_row(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("unit_id,condition,machine_score\nu1,natural,0.8\nu2,natural,1.3\n")
    with pytest.raises(
        ResponseTableError, match=r"scores.csv: column 'machine_score', row 3: '1.3' is not a number between 0 and 1"
    ):
        load_machine_scores(path)
    path.write_text("unit_id,machine_score\nu1,0.8\n")
    with pytest.raises(ResponseTableError, match=r"missing required column\(s\) \['condition'\]"):
        load_machine_scores(path)
    path.write_text("unit_id,condition,machine_score\nu1,natural,0.8\nu1,natural,0.7\n")
    with pytest.raises(ResponseTableError, match="row 3: unit 'u1' is scored twice"):
        load_machine_scores(path)
    path.write_text("unit_id,condition,machine_score,model_id,n_trials,observer\nu1,natural,0.75,m,4,pixel\n")
    assert load_machine_scores(path)["machine_score"].tolist() == [0.75]


def test_report_sets_machine_scores_beside_human_accuracy(tmp_path):
    from analysis.report import write_report

    rng = np.random.default_rng(1)
    units, scores = _units()
    rows = []
    for unit in units.itertuples():
        for participant in range(6):
            rows.append(
                {
                    "participant_id": f"p{participant}",
                    "model_id": unit.model_id,
                    "unit_id": unit.unit_id,
                    "condition": unit.condition,
                    "correct": int(rng.random() < unit.accuracy),
                    "confidence": 2,
                }
            )
    responses = tmp_path / "responses.csv"
    pd.DataFrame(rows).to_csv(responses, index=False)
    scores_csv = tmp_path / "scores.csv"
    scores.assign(observer="pixel").to_csv(scores_csv, index=False)
    page = write_report(responses, tmp_path / "report", n_resamples=100, exclusions="none", machine_scores=scores_csv)
    text = page.read_text()
    assert "Machine score and human accuracy" in text and "expected accuracy of pixel" in text
    correlation = pd.read_csv(tmp_path / "report" / "machine_correlation.csv").set_index(["condition", "level"])
    assert correlation.loc[("natural", "units"), "spearman_rho"] > 0.5  # the observed accuracies track the scores
    assert len(pd.read_csv(tmp_path / "report" / "machine_units.csv")) == 60
    assert (tmp_path / "report" / "machine.png").is_file()

    assert "How close the machine comes to the noise ceiling" in text and "Prediction-powered estimates" in text
    assert len(pd.read_csv(tmp_path / "report" / "ppi_models.csv")) == 6  # 3 models x 2 conditions

    other = tmp_path / "other.csv"
    other.write_text("unit_id,condition,machine_score\nzz,natural,0.5\n")
    with pytest.raises(ResponseTableError, match=r"other.csv: 30 unit\(s\) that people rated have no machine score"):
        write_report(responses, tmp_path / "report2", n_resamples=100, exclusions="none", machine_scores=other)
