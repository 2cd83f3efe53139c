"""Loading the published response formats (IMI 2023, Borowski et al. 2021) into the tidy table."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis.load import ResponseTableError, detect_format, load_responses


def imi_rows():
    rows = []
    for participant, model, mode in (("a", "resnet50", "natural"), ("b", "resnet50_hard95", "optimized")):
        for trial in range(4):
            rows.append(
                {
                    "participant_id": participant,
                    "task_id": f"{model}_{mode}_{participant}",
                    "task_number": trial,
                    "model": model,
                    "mode": "catch_trial" if trial == 3 else mode,
                    "layer": "layer3.1",
                    "channel": 7 + trial,
                    "batch": trial,
                    "correct": "True" if trial % 2 == 0 or trial == 3 else "False",  # catch trials right
                    "confidence": 1 + trial % 3,
                    "rt": 1500 + trial,
                    "catch_trial": str(trial == 3),
                    "is_demo": "False",
                    "passed_checks": "True",
                    "extra": "kept",
                }
            )
    return rows


def borowski_rows(exp2=False):
    rows = []
    for subject in (1, 2):
        for trial, (instr, kind) in enumerate(
            [
                ("natural", "practice"),
                ("natural", "main"),
                ("optimized", "main"),
                ("none_pre", "main"),
                ("optimized", "repeated"),
            ]
        ):
            row = {
                "": trial,  # the release's leading unnamed index column
                "subject_id": subject,
                "trial_nr": trial,
                "block_nr": 1,
                "instr_type": instr,
                "trial_type": kind,
                "catch_trial": "True" if trial == 2 and subject == 2 else "False",
                "batch": 0,
                "layer": "mixed4b",
                "kernel_size": "3x3",
                "channel": 10 + trial,
                "correct": trial % 2,
                "conf_rating": [-3, 2, -1, 3, 1][trial],
                "abs_conf_rating": [3, 2, 1, 3, 1][trial],
                "RT": 2.5,
                "unit_name": f"mixed4b_3x3_{10 + trial}",
            }
            if exp2:
                row |= {
                    "expert_level": "lay",
                    "condition_name": "c",
                    "instruction_grid_mode": "g",
                    "n_instruction_patches": 9,
                }
            rows.append(row)
    return rows


def write(tmp_path, rows, name):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_imi_format_is_detected_and_mapped(tmp_path):
    frame = load_responses(write(tmp_path, imi_rows(), "imi.csv"))
    assert frame.attrs["format"] == "imi"
    assert set(frame["model_id"]) == {"resnet50"}  # the difficulty suffix is split off...
    assert frame.groupby("participant_id")["queries"].first().to_dict() == {"a": "easy", "b": "hard95"}
    assert frame.groupby("participant_id")["condition"].agg(set).to_dict() == {"a": {"natural"}, "b": {"synthetic"}}
    assert frame["trial_kind"].tolist().count("catch") == 2  # catch trials keep their task's condition
    assert frame["unit_id"].iloc[0] == "resnet50__layer3.1__7"
    assert frame["correct"].tolist()[:4] == [1, 0, 1, 1] and frame["extra"].iloc[0] == "kept"
    assert frame["rt_ms"].iloc[1] == 1501


def test_borowski_format_both_experiments(tmp_path):
    for exp2 in (False, True):
        frame = load_responses(write(tmp_path, borowski_rows(exp2), "b.csv"), model_id="googlenet")
        assert frame.attrs["format"] == "borowski" and "" not in frame.columns
        assert frame["trial_kind"].tolist()[:5] == ["practice", "main", "main", "main", "repeated"]
        assert frame["trial_kind"].tolist()[7] == "catch"
        assert frame["condition"].tolist()[:4] == ["natural", "natural", "synthetic", "none"]
        assert frame["confidence"].tolist()[:5] == [3, 2, 1, 3, 1]  # |conf_rating|
        assert frame["unit_id"].iloc[1] == "googlenet__mixed4b_3x3_11" and frame["rt_ms"].iloc[0] == 2500
        assert ("expert_level" in frame) is exp2


def test_published_formats_name_file_column_and_row(tmp_path):
    rows = imi_rows()
    rows[2]["correct"] = "maybe"
    with pytest.raises(ResponseTableError, match=r"imi.csv: column 'correct', row 4: 'maybe' is not true/false"):
        load_responses(write(tmp_path, rows, "imi.csv"))
    rows = borowski_rows()
    rows[1]["conf_rating"] = 0
    with pytest.raises(ResponseTableError, match=r"b.csv: column 'conf_rating', row 3: '0' is not a signed"):
        load_responses(write(tmp_path, rows, "b.csv"))
    rows = borowski_rows()
    rows[3]["instr_type"] = "telepathy"
    with pytest.raises(ResponseTableError, match=r"b.csv: column 'instr_type', row 5: 'telepathy' is unknown"):
        load_responses(write(tmp_path, rows, "b.csv"))
    rows = [{k: v for k, v in r.items() if k != "mode"} for r in imi_rows()]
    with pytest.raises(ResponseTableError, match=r"missing required column\(s\) \['mode'\] for the imi format"):
        load_responses(write(tmp_path, rows, "imi.csv"), format="imi")
    with pytest.raises(ResponseTableError, match="not a known response table"):
        detect_format(["a", "b"])


def test_analyze_runs_on_each_published_format(tmp_path):
    from typer.testing import CliRunner

    from psychinterp.cli import app

    for rows, name in ((imi_rows(), "imi.csv"), (borowski_rows(), "borowski.csv")):
        out = tmp_path / name.replace(".csv", "")
        path = write(tmp_path, rows, name)
        result = CliRunner().invoke(app, ["analyze", str(path), "--out", str(out), "--resamples", "100"])
        assert result.exit_code == 0, result.output
        accuracy = pd.read_csv(out / "accuracy.csv")
        assert len(accuracy) >= 1 and (out / "index.html").read_text().count("Exclusions") == 1
