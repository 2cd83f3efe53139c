"""Opt-in: the real published files, when ``PSYCHINTERP_REAL_DATA=DIR`` points at a folder holding them.

    DIR/borowski/   the five CSVs of bethgelab/testing_visualizations, data_from_human_experiments/
    DIR/imi/        a work tree of brendel-group/imi (its analysis code and task folders)
    DIR/imi-responses/responses_all.csv, responses_main.csv   the 2023 data set, if you have it

DEVELOPERS.md says how to fill DIR. The release's data files may not be redistributed, so they
are never committed; the fixtures in tests/fixtures/published/ reproduce their quirks instead.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from analysis.breakdown import breakdowns, participant_means, repeat_agreement
from analysis.load import load_ratings, load_responses
from psychinterp.cli import app

REAL = Path(os.environ["PSYCHINTERP_REAL_DATA"]) if os.environ.get("PSYCHINTERP_REAL_DATA") else None
FIXTURES = Path(__file__).parent / "fixtures" / "published"
BOROWSKI_FILES = sorted(p.name for p in (FIXTURES / "borowski").glob("*.csv"))

pytestmark = pytest.mark.skipif(REAL is None, reason="PSYCHINTERP_REAL_DATA is not set (opt-in; see DEVELOPERS.md)")


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not there (see DEVELOPERS.md for how to fill PSYCHINTERP_REAL_DATA)")
    return path


@pytest.mark.parametrize("name", BOROWSKI_FILES)
def test_each_borowski_file_through_the_command_line(tmp_path, name):
    path = _need(REAL / "borowski" / name)
    result = CliRunner().invoke(app, ["analyze", str(path), "--out", str(tmp_path), "--resamples", "200"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / ("ratings.csv" if "intuitiveness" in name else "participant_means.csv")).exists()


def test_borowski_experiment_one_headline_numbers():
    """The paper: natural 92 ± 2 %, synthetic 82 ± 4 % (mean over participants ± 2 SEM)."""
    frame = load_responses(
        _need(REAL / "borowski" / "experiment_I_main_practice_catch_repeated_trials_preprocessed.csv")
    )
    table = participant_means(frame, ["condition"]).set_index("condition")
    as_printed = {c: (round(100 * table.loc[c, "accuracy"]), round(200 * table.loc[c, "sem"])) for c in table.index}
    assert as_printed["natural"] == (92, 2) and as_printed["synthetic"] == (82, 4)
    assert table["n_participants"].tolist() == [10, 10, 10]
    blocks = breakdowns(frame)["instr_type"]
    assert set(blocks["instr_type"]) == {"natural", "optimized", "none_pre", "none_post"}
    agreement = repeat_agreement(frame, ["condition"]).set_index("condition")
    assert agreement["n_repeats"].sum() == 180 and 0 < agreement.loc["natural", "agreement"] <= 1


def test_borowski_experiment_two_conditions_and_expertise():
    frame = load_responses(_need(REAL / "borowski" / "experiment_II_main_practice_catch_trials_preprocessed.csv"))
    crossed = breakdowns(frame)["condition_name+expert_level"]
    assert len(crossed) == 2 * 4 * 2  # synthetic/natural x four instruction conditions x expert/naive
    assert crossed.groupby("expert_level")["n_participants"].max().to_dict() == {"expert": 10, "naive": 13}
    ratings = load_ratings(_need(REAL / "borowski" / "experiment_II_intuitiveness_end_preprocessed.csv"))
    assert ratings.groupby("expert_level")["participant_id"].nunique().to_dict() == {"expert": 10, "naive": 13}


def test_the_imi_fixture_is_what_the_releases_code_makes(tmp_path):
    """Regenerate the committed fixture with the release's own parsing code; it must come out the same."""
    imi = _need(REAL / "imi" / "tools" / "data_analysis" / "utils" / "utils_data.py").parents[3]
    spec = importlib.util.spec_from_file_location("make_imi_fixture", FIXTURES / "make_imi_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for made, committed in zip(
        module.build(imi, tmp_path), ("imi_responses_all.csv", "imi_responses_main.csv"), strict=True
    ):
        keys = ["task_id", "response_index", "trial_index"]
        new = pd.read_csv(made).sort_values(keys).reset_index(drop=True)
        old = pd.read_csv(FIXTURES / committed).sort_values(keys).reset_index(drop=True)
        pd.testing.assert_frame_equal(new, old)  # row order follows the file system's listing


@pytest.mark.parametrize(
    "name", ["demo_natural_9_references", "demo_optimized_9_references", "screenshots_9_references"]
)
def test_the_releases_task_folders_import(tmp_path, name):
    from stimuli.imi_import import import_imi_tasks

    folder = _need(REAL / "imi" / "mturk" / "2afc" / "data" / "additional-mturk-data" / name)
    imported = import_imi_tasks(folder, tmp_path / "bundle", study_id="imi", condition="natural")
    assert all(len(t.references.max) == 9 for t in imported.bundle.manifest.tasks[0].trials)


@pytest.mark.parametrize("name", ["responses_all.csv", "responses_main.csv"])
@pytest.mark.parametrize("exclusions", ["ours", "published"])
def test_the_2023_data_set(tmp_path, name, exclusions):
    path = _need(REAL / "imi-responses" / name)
    args = ["analyze", str(path), "--out", str(tmp_path), "--resamples", "200", "--exclusions", exclusions]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "accuracy.csv")) >= 9


def test_borowski_experiment_one_report_counts_main_trials_and_tests_chance(tmp_path):
    """The report: 1,350 main-trial responses analysed of 1,860 rows; the none condition (43.1 %) is
    tested against chance with the primary interval, beside the paper's 2 x SEM."""
    from analysis.pipeline import analyse
    from analysis.report import render_report

    path = _need(REAL / "borowski" / "experiment_I_main_practice_catch_repeated_trials_preprocessed.csv")
    results = analyse(path, n_resamples=2000)
    accuracy = results.accuracy.set_index("condition")
    assert round(100 * accuracy.loc["natural", "accuracy"], 1) == 92.2
    assert round(100 * accuracy.loc["synthetic", "accuracy"], 1) == 82.0
    assert round(100 * accuracy.loc["none", "accuracy"], 1) == 43.1
    assert accuracy.loc["none", "vs_chance"] in {"below", "not distinguishable"}
    assert accuracy.loc["natural", "vs_chance"] == "above"
    page = render_report(results, tmp_path).read_text()
    assert "1350 main-trial responses analysed (1860 rows" in page and "± 2 SEM" in page
