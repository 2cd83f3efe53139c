"""The response table of Zimmermann, Klein & Brendel (NeurIPS 2023): ``responses_all.csv`` /
``responses_main.csv`` of the released data set, as ``tools/data_analysis/comparison.ipynb``
(brendel-group/imi) writes it.

What that code makes, read from ``utils_data.py`` (``parse_results``,
``append_trial_structure_to_results``, ``append_checks_to_results``) and the notebook:

- One row per trial of the jsPsych plugin ``2afc-image-confidence-response``: practice
  ("demo") and main trials of every participant. ``trial_index`` is jsPsych's global index;
  ``corrected_trial_index`` counts main trials from 0 (demo rows are negative).
- ``task_id`` is ``<task namespace>-<k>`` (e.g. ``clip-resnet50_natural-12``) and ``task_number``
  is that k: the task's number, not a trial index.
- Demo rows have no ``model``, ``layer``, ``channel``, ``batch`` or ``mode``: the structure file
  describes main trials only. Demo rows of all participants come first in the file.
- Catch trials have ``mode`` catch_trial, ``model`` ``catch/manual`` and ``batch`` -1; the
  ``layer`` and ``channel`` are those of the hand-made catch unit.
- ``model`` carries the query difficulty as a suffix: ``resnet50_hard95`` is ResNet-50 with
  queries from the 95th percentile (a separate experiment in the paper). Model names use
  hyphens and underscores as the release does (``resnet50-l2``, ``clip-resnet50``, ``wide_resnet50``).
- ``button_pressed`` 0-2 is the upper row of buttons, 3-5 the lower; ``switched_queries`` says
  the max query was shown on top; ``choice`` is ``a`` (min query) or ``b`` (max query) and
  ``correct`` is ``choice == "b"``. ``rt`` is in milliseconds.
- The exclusion checks of each response sit on every one of its rows: ``passed_checks``, the
  per-check ``*_result`` and ``*_details`` columns and the numbers extracted from them
  (instruction time, total time, rows chosen, catch ratio, practice blocks);
  ``multi_participation`` marks workers who took part in more than one experiment.
- ``participant_id`` is anonymised (``P0001``...); query and reference paths read "anonymized".
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from analysis.formats.base import LoadOptions, TableFormat
from analysis.tables import ResponseTableError, fail
from contracts.paradigms import TWO_AFC

MODES = {"natural": "natural", "optimized": "synthetic", "catch_trial": None}
CATCH_MODEL = "catch/manual"
# task.js shows 4 "obvious" and 1 other demo trial per practice block.
PRACTICE_BLOCK_SIZE = 5
UPPER_ROW_BUTTONS = (0, 1, 2)
_DIFFICULTY = re.compile(r"^(?P<model>.+?)_(?P<queries>hard\d+)$")
_TASK_ID = re.compile(r"^(?P<namespace>.+)-(?P<number>\d+)$")

SESSION_COLUMNS = {  # extracted check details -> the tidy per-session columns (docs/responses.md)
    "instruction_time_details_extracted": "instruction_s",
    "total_response_time_details_extracted": "session_s",
    "demo_trials_details_extracted": "practice_blocks",
}


def _per_task(values: pd.Series, task: pd.Series) -> pd.Series:
    """Each task's most common non-empty value, on every row of the task (empty when it has none)."""
    common = values.dropna().groupby(task[values.notna()]).agg(lambda s: s.mode().iat[0])
    return task.map(common)


def _from_namespace(task_id: pd.Series) -> pd.DataFrame:
    """Model and condition from a task id such as ``resnet50_hard95_natural-3`` (for tasks without main rows)."""
    namespace = task_id.str.extract(_TASK_ID)["namespace"].fillna("")
    parts = namespace.str.extract(r"^(?P<model>.+)_(?P<mode>natural|optimized)$")
    return pd.DataFrame({"model": parts["model"], "condition": parts["mode"].map(MODES)})


def _to_tidy(path: Path, frame: pd.DataFrame, options: LoadOptions) -> pd.DataFrame:
    demo = frame["is_demo"]
    trial = ~demo
    for column in ("model", "layer", "channel", "mode"):
        missing = trial & frame[column].isna()
        if missing.any():
            raise fail(path, column, missing, frame, "is empty, but a main or catch trial needs it")
    mode = frame["mode"].where(trial)
    unknown = trial & ~mode.isin(list(MODES))
    if unknown.any():
        raise fail(path, "mode", unknown, frame, f"is unknown (expected one of {sorted(MODES)})")
    catch = trial & frame["catch_trial"]
    disagree = trial & (catch != (mode == "catch_trial"))
    if disagree.any():
        raise fail(path, "catch_trial", disagree, frame, "disagrees with mode")
    number = frame["task_id"].str.extract(_TASK_ID)["number"]
    bad = number.isna() | (pd.to_numeric(number) != frame["task_number"])
    if bad.any():
        raise fail(path, "task_number", bad, frame, "is not the number at the end of task_id")

    # A row's model and condition are its task's: catch and demo rows take them from the main rows.
    model = frame["model"].where(trial & ~catch)
    condition = mode.map(MODES).where(trial & ~catch)
    fallback = _from_namespace(frame["task_id"])
    model = _per_task(model, frame["task_id"]).fillna(fallback["model"])
    condition = _per_task(condition, frame["task_id"]).fillna(fallback["condition"])
    unknown = model.isna() | condition.isna()
    if unknown.any():
        raise fail(path, "task_id", unknown, frame, "has no main trials and a name that says no model and condition")
    split = model.str.extract(_DIFFICULTY)
    base = split["model"].fillna(model)
    layer, channel = frame["layer"].astype("string"), frame["channel"].astype("string")
    unit = base + "__" + layer + "__" + channel
    unit = unit.mask(catch, "catch__" + layer + "__" + channel).where(trial)

    session = frame["task_id"] + "#" + (frame["response_index"].astype(str) if "response_index" in frame else "0")
    order = frame["trial_index"] if "trial_index" in frame else frame["corrected_trial_index"]
    practice_position = order.where(demo).groupby(session).rank(method="first") - 1
    trial_index = frame["corrected_trial_index"].where(trial, practice_position)

    tidy = pd.DataFrame(
        {
            "paradigm": TWO_AFC.name,
            "participant_id": frame["participant_id"],
            "session_id": frame["participant_id"] + "/" + session,
            "task_id": frame["task_id"],
            "task_number": frame["task_number"],
            "model_id": model,
            "base_model_id": base,
            "queries": split["queries"].fillna("easy"),
            "unit_id": unit,
            "layer": frame["layer"],
            "channel": frame["channel"],
            "batch": frame["batch"] if "batch" in frame else pd.NA,
            "condition": condition,
            "trial_kind": pd.Series("main", index=frame.index).mask(catch, "catch").mask(demo, "practice"),
            "practice_block": (practice_position // PRACTICE_BLOCK_SIZE + 1).where(demo).astype("Int64"),
            "trial_index": trial_index.astype("Int64"),
            "correct": frame["correct"].astype(int),
            "confidence": frame["confidence"],
        }
    )
    if "button_pressed" in frame:
        tidy["chosen_query"] = (~frame["button_pressed"].isin(UPPER_ROW_BUTTONS)).astype(int)
    if "switched_queries" in frame:
        tidy["max_query"] = (~frame["switched_queries"]).astype(int)
    if {"chosen_query", "max_query"} <= set(tidy):
        bad = (tidy["chosen_query"] == tidy["max_query"]) != frame["correct"]
        if bad.any():
            raise fail(path, "correct", bad, frame, "disagrees with button_pressed and switched_queries")
    if "choice" in frame:
        bad = (frame["choice"] == "b") != frame["correct"]
        if bad.any():
            raise fail(path, "choice", bad, frame, "disagrees with correct (b is the max query)")
    if "rt" in frame:
        tidy["rt_ms"] = frame["rt"]
    for source, target in SESSION_COLUMNS.items():
        if source in frame:
            tidy[target] = frame[source]
    for column in ("passed_checks", "multi_participation"):
        if column in frame:
            tidy[column] = frame[column]
    return tidy


FORMAT = TableFormat(
    name="imi",
    title="Zimmermann, Klein & Brendel (NeurIPS 2023), responses_all.csv / responses_main.csv",
    kind="responses",
    required={
        "participant_id": "str",
        "task_id": "str",
        "task_number": "int",
        "corrected_trial_index": "int",
        "is_demo": "bool",
        "catch_trial": "bool",
        "correct": "bool",
        "confidence": "confidence",
        "model": "str?",
        "layer": "str?",
        "channel": "int?",
        "mode": "str?",
    },
    optional={
        "batch": "int?",
        "rt": "number",
        "button_pressed": "int",
        "switched_queries": "bool",
        "choice": "str",
        "trial_index": "int",
        "time_elapsed": "number",
        "response_index": "int",
        "passed_checks": "bool",
        "multi_participation": "bool",
        "instruction_time_details_extracted": "number?",
        "total_response_time_details_extracted": "number?",
        "demo_trials_details_extracted": "int?",
    },
    to_tidy=_to_tidy,
    published_keep={"passed_checks": True, "multi_participation": False},
    published_note="the release's own passed_checks and multi_participation flags, per response",
)

__all__ = ["FORMAT", "ResponseTableError"]
