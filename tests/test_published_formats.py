"""The published response tables, read as they are: Borowski et al. 2021 (five CSVs) and the 2023 release.

The fixtures under tests/fixtures/published/ are our own files with the real files' quirks
(see the generators beside them, and analysis/formats/*.py for the quirks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from analysis.breakdown import breakdowns, participant_means, rating_summary, repeat_agreement
from analysis.exclusions import apply_exclusions, published_exclusions
from analysis.formats import FORMATS
from analysis.load import ResponseTableError, detect_format, load_ratings, load_responses, load_table
from psychinterp.cli import app

FIXTURES = Path(__file__).parent / "fixtures" / "published"
BOROWSKI = FIXTURES / "borowski"
EXP1 = BOROWSKI / "experiment_I_main_practice_catch_repeated_trials_preprocessed.csv"
EXP2 = BOROWSKI / "experiment_II_main_practice_catch_trials_preprocessed.csv"
EXP2_BEGINNING = BOROWSKI / "experiment_II_intuitiveness_beginning_preprocessed.csv"
IMI_ALL = FIXTURES / "imi_responses_all.csv"
IMI_MAIN = FIXTURES / "imi_responses_main.csv"


def _edited(tmp_path: Path, source: Path, row: int, column: str, value) -> Path:
    """A copy of ``source`` with one cell changed (``row`` counted as in a spreadsheet)."""
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    frame.loc[row - 2, column] = str(value)
    path = tmp_path / source.name
    frame.to_csv(path, index=False)
    return path


# --- Borowski et al. 2021 ---------------------------------------------------------------------


def test_every_borowski_file_is_read_as_what_it_is():
    kinds = {path.name: load_table(path).attrs["kind"] for path in sorted(BOROWSKI.glob("*.csv"))}
    assert len(kinds) == 5
    assert sorted(kinds.values()) == ["ratings", "ratings", "ratings", "responses", "responses"]
    assert "" not in load_table(EXP1).columns and "Unnamed: 0" not in load_table(EXP1).columns


def test_experiment_one_trials_map_to_the_tidy_table():
    frame = load_responses(EXP1)
    assert frame.attrs["format"] == "borowski"
    assert frame["trial_kind"].value_counts().to_dict() == {"main": 22, "practice": 4, "catch": 4, "repeated": 4}
    practice = frame[frame["trial_kind"] == "practice"]
    # Placeholder units (layer_r / r / channel_r) name no layer.
    assert practice["layer"].isna().all() and practice["unit_id"].iloc[0] == "googlenet__layer_r"
    main = frame[frame["trial_kind"] == "main"].set_index("trial_index")
    first = main[main["participant_id"] == "5"]
    assert first.loc[4, "unit_id"] == "googlenet__mixed3a__1x1" and first.loc[4, "layer_index"] == 0
    assert first.loc[5, "unit_id"] == "googlenet__mixed4c__pool__hand-picked"
    assert first.loc[5, "unit_selection"] == "hand-picked" and first.loc[4, "unit_selection"] == "random"
    assert (frame["n_layers"].dropna() == 9).all()
    assert set(frame.loc[frame["condition"] == "none", "instr_type"]) == {"none_pre", "none_post"}
    # Signed confidence -> 1..3; query a chosen -> 0; RT seconds -> ms, a negative one kept.
    assert frame["confidence"].between(1, 3).all() and frame.loc[0, "chosen_query"] == 0
    assert frame.loc[0, "rt_ms"] == pytest.approx(5660.0)
    assert (frame["rt_ms"] < 0).sum() == 1
    assert ((frame["chosen_query"] == frame["max_query"]) == frame["correct"].astype(bool)).all()
    repeated = frame[frame["trial_kind"] == "repeated"]
    assert repeated["first_trial_index"].tolist() == [4, 3, 9, 14]


def test_experiment_one_means_over_participants_by_hand():
    frame = load_responses(EXP1)
    table = participant_means(frame, ["model_id", "condition"]).set_index("condition")
    # natural: participant 5 got 3 of 4, participant 7 got 4 of 4 (catch and repeated trials left out).
    assert table.loc["natural", "accuracy"] == pytest.approx(0.875)
    assert table.loc["natural", "sem"] == pytest.approx(0.125)
    assert table.loc["natural", "low_2sem"] == pytest.approx(0.625)
    assert table.loc["synthetic", "accuracy"] == pytest.approx(2 / 3) and table.loc["synthetic", "sem"] == 0
    assert table.loc["none", "accuracy"] == pytest.approx(0.375)
    blocks = breakdowns(frame)["instr_type"].set_index("instr_type")
    assert blocks.loc["none_pre", "accuracy"] == pytest.approx(0.5)
    assert blocks.loc["none_post", "accuracy"] == pytest.approx(0.25)
    selection = breakdowns(frame)["unit_selection"].set_index(["condition", "unit_selection"])
    assert selection.loc[("natural", "hand-picked"), "accuracy"] == pytest.approx(1.0)


def test_repeated_trials_are_scored_against_the_first_showing():
    agreement = repeat_agreement(load_responses(EXP1), ["model_id", "condition"]).set_index("condition")
    assert agreement["agreement"].to_dict() == {"natural": 1.0, "none": 0.0, "synthetic": 1.0}
    assert agreement["n_repeats"].sum() == 4


def test_experiment_two_blocks_instruction_conditions_and_expertise():
    frame = load_responses(EXP2)
    main = frame[frame["trial_kind"] == "main"]
    assert main["unit_id"].iloc[0] == "googlenet__mixed4a__3x3__block-a"  # each block sampled its own channels
    catch = frame[frame["trial_kind"] == "catch"]
    assert catch["layer"].notna().all()  # Experiment II's catch trials use real units
    tables = breakdowns(frame)
    assert "instr_type" not in tables  # it only repeats the condition here
    by = tables["condition_name+expert_level"].set_index(["condition", "condition_name", "expert_level"])
    assert by.loc[("natural", "Max-1", "expert"), "accuracy"] == pytest.approx(2 / 3)
    assert by.loc[("natural", "Max-1", "naive"), "accuracy"] == pytest.approx(1 / 3)
    assert by.loc[("synthetic", "Max-1", "naive"), "accuracy"] == 0.0
    assert by.loc[("synthetic", "Min-Max-9", "naive"), ["accuracy", "n_instruction_patches"]].tolist() == [2 / 3, 9]
    assert by.loc[("synthetic", "Min-Max-9", "expert"), "instruction_grid_mode"] == "min_max"


def test_intuitiveness_ratings_with_derived_expertise_and_phase():
    ratings = load_ratings(EXP2_BEGINNING)
    assert ratings.attrs["format"] == "borowski-intuitiveness"
    levels = ratings.groupby("participant_id")["expert_level"].first().to_dict()
    assert levels == {"12": "expert", "15": "naive"}  # lay participants' ids are within-group id + 10
    summary = rating_summary(ratings).set_index(["expert_level", "trial_name"])
    assert summary.loc[("expert", "b"), "mean_rating"] == 23 and summary.loc[("naive", "a"), "mean_rating"] == 100
    assert set(summary["phase"]) == {"beginning"}
    exp1 = load_ratings(BOROWSKI / "experiment_I_intuitiveness_beginning_preprocessed.csv")
    assert "expert_level" not in exp1 and len(rating_summary(exp1)) == 3
    with pytest.raises(ResponseTableError, match="a rating table"):
        load_responses(EXP2_BEGINNING)


@pytest.mark.parametrize(
    "source, row, column, value, message",
    [
        (EXP1, 2, "conf_rating", 1, r"column 'conf_rating', row 2: '1' has the wrong sign for the response"),
        (EXP1, 5, "layer", "layer_x", r"column 'layer', row 5: 'layer_x' is a placeholder, but a main"),
        (EXP1, 5, "unit_name", "5b, P ", r"row 5: '5b, P ' disagrees with the row's layer"),
        (EXP1, 17, "old_trial_nr", "6.0", r"column 'old_trial_nr', row 17: '6.0' names no earlier trial"),
        (EXP1, 3, "instr_type", "telepathy", r"column 'instr_type', row 3: 'telepathy' is unknown"),
        (EXP1, 3, "correct", "False", r"column 'correct', row 3: 'False' disagrees with response"),
        (EXP1, 4, "channel", "channel_7", r"column 'channel', row 4: 'channel_7' is not one of"),
        (EXP1, 4, "conf_rating", "0", r"column 'conf_rating', row 4: '0' is not a signed confidence"),
        (EXP2_BEGINNING, 3, "subject_id", 30, r"column 'subject_id', row 3: '30' is neither"),
        (EXP2_BEGINNING, 3, "rating", 150, r"column 'rating', row 3: '150' is not a rating between -100 and 100"),
    ],
)
def test_bad_borowski_cells_name_file_column_and_row(tmp_path, source, row, column, value, message):
    with pytest.raises(ResponseTableError, match=message):
        load_table(_edited(tmp_path, source, row, column, value))


# --- the 2023 release ---------------------------------------------------------------------------


def test_imi_table_as_the_release_writes_it():
    frame = load_responses(IMI_ALL)
    assert frame.attrs["format"] == "imi" and detect_format(list(pd.read_csv(IMI_MAIN, nrows=1).columns)) == "imi"
    assert set(frame["model_id"]) == {"resnet50-l2", "resnet50_hard95"}  # hard variants stay apart
    hard = frame[frame["model_id"] == "resnet50_hard95"]
    assert set(hard["queries"]) == {"hard95"} and set(hard["base_model_id"]) == {"resnet50"}
    assert set(hard["condition"]) == {"synthetic"}
    # Demo rows carry no model in the file: they take their task's, and are practice rows in blocks of 5.
    practice = frame[frame["trial_kind"] == "practice"]
    assert practice["unit_id"].isna().all() and practice["model_id"].notna().all()
    blocks = practice.groupby("session_id")["practice_block"].max()
    assert blocks.to_dict() == practice.groupby("session_id")["practice_blocks"].first().to_dict()
    # Catch rows (model catch/manual, batch -1) count for their task's model.
    catch = frame[frame["trial_kind"] == "catch"]
    assert catch["unit_id"].str.startswith("catch__").all() and set(catch["batch"]) == {-1}
    main = frame[frame["trial_kind"] == "main"]
    # trial_index is the corrected index: main and catch trials of each session count 0, 1, ...
    per_session = frame[frame["trial_kind"] != "practice"].groupby("session_id")["trial_index"]
    assert all(sorted(v) == list(range(len(v))) for _, v in per_session)
    assert ((main["chosen_query"] == main["max_query"]) == main["correct"].astype(bool)).all()
    # P0003 took part in two experiments: two sessions, the second flagged.
    sessions = frame[frame["participant_id"] == "P0003"].groupby("session_id")["multi_participation"].first()
    assert sorted(sessions.tolist()) == [False, True]


def test_our_criteria_recomputed_agree_with_the_releases_checks():
    frame = load_responses(IMI_ALL)
    _, ours = apply_exclusions(frame)
    released = frame.groupby("session_id")["passed_checks"].first()
    assert (~ours.set_index("session_id")["excluded"]).to_dict() == released.to_dict()
    failed = ours.set_index("participant_id").loc[["P0002", "P0004", "P0005"], "failed_rules"].tolist()
    assert failed == ["catch_accuracy", "instruction_time", "practice_blocks"]


def test_published_exclusions_keep_what_responses_main_keeps():
    frame = load_responses(IMI_ALL)
    kept, table = published_exclusions(frame, FORMATS["imi"].published_keep)
    main = load_responses(IMI_MAIN)
    assert sorted(kept["session_id"].unique()) == sorted(main["session_id"].unique())
    assert table["excluded"].sum() == 4  # three failed checks, one multi-participation


@pytest.mark.parametrize(
    "row, column, value, message",
    [
        (40, "model", "", r"column 'model', row 40: '' is empty, but a main or catch trial needs it"),
        (40, "task_number", "7", r"column 'task_number', row 40: '7' is not the number at the end of task_id"),
        (40, "mode", "telepathy", r"column 'mode', row 40: 'telepathy' is unknown"),
        (40, "choice", "a", r"column 'choice', row 40: 'a' disagrees with correct"),
    ],
)
def test_bad_imi_cells_name_file_column_and_row(tmp_path, row, column, value, message):
    with pytest.raises(ResponseTableError, match=message):
        load_responses(_edited(tmp_path, IMI_ALL, row, column, value))


# --- through the command line ---------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(BOROWSKI.glob("*.csv")) + [IMI_ALL, IMI_MAIN], ids=lambda p: p.name)
def test_analyze_reads_every_published_file(tmp_path, path):
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["analyze", str(path), "--out", str(out), "--resamples", "50"])
    assert result.exit_code == 0, result.output
    page = (out / "index.html").read_text()
    if "intuitiveness" in path.name:
        ratings = pd.read_csv(out / "ratings.csv")
        assert ratings["mean_rating"].between(-100, 100).all() and "Ratings per trial" in page
    else:
        assert len(pd.read_csv(out / "accuracy.csv")) >= 1 and page.count("<h2>Exclusions</h2>") == 1
        assert (out / "participant_means.csv").exists()


def test_analyze_with_the_published_exclusions(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["analyze", str(IMI_ALL), "--out", str(tmp_path / "r"), "--exclusions", "published"])
    assert result.exit_code == 0, result.output
    kept = pd.read_csv(tmp_path / "r" / "accuracy.csv")["n_participants"].sum()
    assert kept == load_responses(IMI_MAIN)["session_id"].nunique()
    assert "passed_checks not as kept" in (tmp_path / "r" / "index.html").read_text()
    result = runner.invoke(app, ["analyze", str(EXP1), "--out", str(tmp_path / "b"), "--exclusions", "published"])
    assert result.exit_code == 0 and "none are marked as excluded" in (tmp_path / "b" / "index.html").read_text()
    result = runner.invoke(app, ["analyze", str(EXP1), "--out", str(tmp_path / "x"), "--exclusions", "maybe"])
    assert result.exit_code == 2 and "choose from ours, published, none" in result.output


def test_unknown_tables_say_what_they_are_closest_to(tmp_path):
    with pytest.raises(ResponseTableError, match=r"not a known table: closest format"):
        detect_format(["a", "b"])
    path = tmp_path / "x.csv"
    pd.DataFrame({"subject_id": [1], "trial_name": ["a"]}).to_csv(path, index=False)
    with pytest.raises(ResponseTableError, match=r"'borowski-intuitiveness' lacks column\(s\) \['rating', 'rt', "):
        load_table(path)


def test_breakdowns_of_a_study_without_them_are_empty():
    frame = pd.DataFrame(
        {
            "participant_id": np.repeat(["a", "b"], 4),
            "model_id": "m",
            "condition": "natural",
            "unit_id": ["u1", "u2"] * 4,
            "correct": [1, 0, 1, 1, 1, 1, 0, 1],
            "trial_kind": "main",
        }
    )
    assert breakdowns(frame) == {} and repeat_agreement(frame).empty


def test_docs_list_every_format_the_loader_reads():
    docs = (Path(__file__).parents[1] / "docs" / "responses.md").read_text()
    for name, fmt in FORMATS.items():
        if name != "psychinterp":
            assert f"| `{name}` |" in docs, name
            assert all(f"`{column}`" in docs for column in fmt.required), name


def test_each_borowski_report_names_its_experiment():
    """Both reports said "Experiment I or II"."""
    from analysis.pipeline import analyse

    assert analyse(EXP1, n_resamples=50).format_title == "Borowski et al. (ICLR 2021), Experiment I"
    assert analyse(EXP2, n_resamples=50).format_title == "Borowski et al. (ICLR 2021), Experiment II"


def test_a_summary_sentence_about_chance_reads_as_a_sentence():
    """A single model's line said "...; not distinguishable chance)"."""
    import pandas as pd

    from analysis.estimate import against_chance
    from analysis.report import CHANCE_WORDS, summary_points

    assert set(CHANCE_WORDS) == set(
        against_chance(pd.DataFrame({"ci_low": [0.6, 0.1, 0.4], "ci_high": [0.7, 0.2, 0.6]}), 0.5)
    )

    class Results:  # only the accuracy table: every other section absent
        def __getattr__(self, name):
            return None

    results = Results()
    results.accuracy = pd.DataFrame(
        [
            {
                "condition": "natural",
                "model_id": "m",
                "accuracy": 0.55,
                "ci_low": 0.45,
                "ci_high": 0.65,
                "vs_chance": "not distinguishable",
            }
        ]
    )
    (point,) = summary_points(results, ["m"], {"m": "Model M"})
    assert point.endswith("(95% CI 45.0% to 65.0%; not distinguishable from chance)")


def test_the_experiment_two_report_leads_with_the_instruction_conditions(tmp_path):
    """Its summary led with numbers pooled over four reference designs that the paper never pools."""
    from analysis.pipeline import analyse
    from analysis.report import _models, summary_points, write_report

    results = analyse(EXP2, n_resamples=50)
    assert results.lead_by == ("condition_name", "expert_level")
    points = summary_points(results, *_models(results))
    conditions = sorted(results.breakdowns["condition_name"]["condition_name"].unique())
    lead = points[: len(results.breakdowns["condition_name"])]
    assert all("(mean over" in p and "participants ± 2 SEM)" in p for p in lead)
    assert {p.split(",")[0] for p in lead} == set(conditions)
    pooled = [p for p in points if "accuracy" in p and "pooled over" in p]
    assert pooled and all("(secondary: the paper reports them separately)" in p for p in pooled)
    assert points.index(pooled[0]) == len(lead)
    page = write_report(EXP2, tmp_path / "report", n_resamples=50).read_text()
    assert page.index("By condition_name × expert_level") < page.index("Accuracy per model and condition")
    assert "a secondary view" in page
    # Experiment I has no such breakdown: it leads with its conditions as before.
    assert analyse(EXP1, n_resamples=50).lead_by == ()
