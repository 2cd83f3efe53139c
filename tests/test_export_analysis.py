import csv

import numpy as np
import pandas as pd
import pytest

from analysis.estimate import accuracy_table, participant_bootstrap_ci
from analysis.load import ResponseTableError, load_responses
from analysis.report import write_report
from contracts.responses import COLUMN_NAMES as RESPONSE_COLUMNS
from experiment_server.export import export_csv


def test_export_joins_unit_and_answer_facts(app, client, tmp_path):
    from psychinterp.scripted import run_session

    given = []

    def decide(trial):
        chosen, confidence = len(given) % 2, 1 + len(given) % 3
        given.append((trial["trial_index"], chosen, confidence))
        return chosen, confidence

    run_session(client, decide, stop_after=99)
    out = tmp_path / "responses.csv"
    bundle = app.extensions["psychinterp_bundle"]
    assert export_csv(bundle, app.extensions["psychinterp_db"], out) == len(given)
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == RESPONSE_COLUMNS
    assert [(int(r["trial_index"]), int(r["chosen_query"]), int(r["confidence"])) for r in rows] == given
    assert [r["trial_kind"] for r in rows][:1] == ["practice"] and rows[-1]["session_status"] == "completed"
    units = {u.unit_id: u for u in bundle.manifest.units}
    for row in rows:
        answer = bundle.answer_key.answers[row["trial_id"]]
        assert int(row["max_query"]) == answer.max_query
        assert int(row["correct"]) == int(int(row["chosen_query"]) == answer.max_query)
        assert row["model_id"] == units[row["unit_id"]].model_id
        assert row["session_completed"] == "1" and row["window_width"] == "1280"


def _table(tmp_path, rows, name="r.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _row(participant="p1", model="m", condition="natural", correct=1, confidence=2, unit="u1"):
    return {
        "participant_id": participant,
        "model_id": model,
        "unit_id": unit,
        "condition": condition,
        "correct": correct,
        "confidence": confidence,
        "rt_ms": 1000,
    }


def test_loader_names_file_column_and_first_bad_row(tmp_path):
    path = _table(tmp_path, [_row(), _row(correct=1), _row(correct="yes")])
    with pytest.raises(ResponseTableError, match=r"r.csv: column 'correct', row 4: 'yes' is not 0 or 1"):
        load_responses(path)
    path = _table(tmp_path, [_row(confidence=5)])
    with pytest.raises(ResponseTableError, match=r"column 'confidence', row 2: '5'"):
        load_responses(path)
    path = _table(tmp_path, [{k: v for k, v in _row().items() if k != "model_id"}])
    with pytest.raises(ResponseTableError, match=r"r.csv: .*'psychinterp' lacks column\(s\) \['model_id'\]"):
        load_responses(path)
    with pytest.raises(ResponseTableError, match=r"missing required column\(s\) \['model_id'\] for the psychinterp"):
        load_responses(path, format="psychinterp")
    path = _table(tmp_path, [_row(), {**_row(), "rt_ms": "slow"}])
    with pytest.raises(ResponseTableError, match=r"column 'rt_ms', row 3: 'slow' is not a number"):
        load_responses(path)
    with pytest.raises(ResponseTableError, match="file not found"):
        load_responses(tmp_path / "missing.csv")
    extra = _table(tmp_path, [{**_row(), "extra_column": "kept"}])
    assert load_responses(extra)["extra_column"].tolist() == ["kept"]


def test_participant_bootstrap_matches_brute_force():
    rng = np.random.default_rng(0)
    n = rng.integers(5, 30, size=12).astype(float)
    k = rng.binomial(n.astype(int), 0.7).astype(float)
    low, high = participant_bootstrap_ci(k, n, n_resamples=20_000, seed=1)
    # brute force: resample participants with replacement, pool their responses
    idx = rng.integers(0, len(n), size=(20_000, len(n)))
    pooled = k[idx].sum(1) / n[idx].sum(1)
    brute = np.percentile(pooled, [2.5, 97.5])
    assert low == pytest.approx(brute[0], abs=0.01) and high == pytest.approx(brute[1], abs=0.01)
    assert low < k.sum() / n.sum() < high
    assert np.isnan(participant_bootstrap_ci(k[:1], n[:1])).all()


def test_accuracy_table_and_report(tmp_path):
    rows = [
        _row(participant=f"p{p}", condition=c, correct=int((p + t) % 4 != 0), unit=f"u{t}")
        for p in range(6)
        for t in range(8)
        for c in ("natural", "synthetic")
    ]
    table = accuracy_table(pd.DataFrame(rows), n_resamples=2000)
    assert list(table["condition"]) == ["natural", "synthetic"]
    assert table["accuracy"].tolist() == [0.75, 0.75]
    assert (table["n_participants"] == 6).all() and (table["n_responses"] == 48).all()
    assert (table["ci_low"] <= 0.75).all() and (table["ci_high"] >= 0.75).all()
    page = write_report(_table(tmp_path, rows), tmp_path / "report", n_resamples=500)
    assert page.exists() and "accuracy.png" in page.read_text()
    for name in ("accuracy.png", "accuracy.pdf", "accuracy.csv"):
        assert (tmp_path / "report" / name).stat().st_size > 0


def test_report_refuses_an_empty_table(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text(",".join(RESPONSE_COLUMNS) + "\n")
    with pytest.raises(ResponseTableError, match="no responses"):
        write_report(path, tmp_path / "report")


def test_docs_response_table_is_generated_from_the_contract():
    from pathlib import Path

    from contracts.responses import markdown_table

    docs = (Path(__file__).parents[1] / "docs" / "responses.md").read_text()
    generated = docs.split("<!-- response-columns")[1].split("-->", 1)[1].split("<!-- /response-columns -->")[0]
    assert generated.strip() == markdown_table(), "regenerate with: python -m contracts.responses"


def test_the_pipeline_returns_results_and_the_report_only_renders_them(tmp_path):
    from analysis.pipeline import StudyResults, analyse
    from analysis.report import render_report

    rows = [
        {
            **_row(participant="<b>p</b>" if p == 0 else f"p{p}", correct=int(t % 3 != 0), unit=f"u{t}"),
            "excluded_by_experimenter": int(p == 0),
        }
        for p in range(4)
        for t in range(6)
    ]
    source = _table(tmp_path, rows)
    before = sorted(p.name for p in tmp_path.iterdir())
    results = analyse(source, n_resamples=200, exclusions="none")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # analysing writes nothing
    assert isinstance(results, StudyResults) and results.chance == 0.5
    assert results.accuracy["accuracy"].tolist() == [pytest.approx(4 / 6)]
    assert len(results.included) == 24 and results.exclusions.mode == "none" and results.scaling is None
    page = render_report(results, tmp_path / "r").read_text()
    assert "No exclusions applied." in page and "24 main-trial responses analysed" in page
    # Each interval is printed with its measured coverage, the alternatives' shortfall included.
    assert "participants-only CI: 71.5% when units dominate" in page and "units-only BCa:" in page
    # What a table holds is escaped, never markup: a participant id cannot inject HTML.
    kept = analyse(source, n_resamples=200)
    assert kept.exclusions.table["excluded"].sum() == 1 and len(kept.included) == 18
    page = render_report(kept, tmp_path / "r2").read_text()
    assert "&lt;b&gt;p&lt;/b&gt;" in page and "<b>p</b>" not in page


def test_accuracy_below_chance_is_flagged_by_the_primary_interval():
    from analysis.estimate import against_chance

    table = pd.DataFrame({"ci_low": [0.55, 0.38, 0.45], "ci_high": [0.7, 0.47, 0.56]})
    assert against_chance(table, 0.5).tolist() == ["above", "below", "not distinguishable"]
