"""The released CSVs of Borowski et al. (ICLR 2021), bethgelab/testing_visualizations.

Read from the release itself (``data_from_human_experiments/README.md`` and the five files):

- Experiments I and II: one row per trial. Practice and catch trials name no real unit:
  their ``layer`` / ``kernel_size`` / ``channel`` are placeholders such as ``layer_r``, ``r``,
  ``channel_r`` (Experiment II's catch trials do use real units). A real unit is
  ``layer_<k>`` (the k-th mixed layer of InceptionV1, 3a ... 5b), ``kernel_size`` 0-3 (the
  1x1, 3x3, 5x5 and pool branch) and ``channel_0`` (sampled at random) or ``channel_1``
  (hand-picked); the file does not give the channel's number. ``unit_name`` says the same in
  words ("4b, P int.", with a trailing space after the branch).
- ``conf_rating`` is signed: negative when query ``a`` was chosen. ``query_order`` says which
  query was the max one; ``RT`` is in seconds (a few are slightly negative).
- Experiment I repeats some trials at the end (``trial_type`` repeated, with the first
  showing's ``old_trial_nr`` / ``old_block_nr`` written as floats such as ``78.0``); its none
  condition comes in two blocks, ``none_pre`` and ``none_post``.
- Experiment II adds ``batch_block`` (each block is its own set of sampled channels, so a
  unit is also named by its block), the instruction conditions (``condition_name``,
  ``instruction_grid_mode``, ``n_instruction_patches``) and ``expert_level``.
- The intuitiveness files hold slider ratings from -100 to 100 of three trials (``a``, ``b``,
  ``c``), with ``rt`` in seconds. Experiment II's name no expert level; its ``subject_id`` is the
  within-group id for experts and that id + 10 for lay participants. Whether a file was
  collected at the beginning or the end of the session is only in its file name.
- Every file starts with an unnamed index column.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.formats.base import LoadOptions, TableFormat
from analysis.tables import ResponseTableError, fail
from contracts.paradigms import TWO_AFC

# InceptionV1's mixed layers, in forward order: ``layer_<k>`` in the release is the k-th.
INCEPTION_V1_MIXED = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
# ``kernel_size`` <k> is the k-th branch of a mixed layer; ``unit_name`` writes the pool branch "P".
BRANCHES = ("1x1", "3x3", "5x5", "pool")
UNIT_SELECTION = {"channel_0": "random", "channel_1": "hand-picked"}
CONDITIONS = {"natural": "natural", "optimized": "synthetic", "none_pre": "none", "none_post": "none"}
TRIAL_KINDS = {"practice": "practice", "main": "main", "repeated": "repeated"}
LAY_ID_OFFSET = 10  # Experiment II: subject_id = within-group id (+ 10 for lay participants)

_PLACEHOLDER = re.compile(r"^layer_[a-z]$")
_REAL_LAYER = re.compile(r"^layer_(\d+)$")
_UNIT_NAME = re.compile(r"^(?P<code>\d[a-e]), (?P<branch>1x1|3x3|5x5|P)(?P<picked> int\.)?$")


def _mapped(path: Path, frame: pd.DataFrame, column: str, mapping: dict[str, str]) -> pd.Series:
    values = frame[column].str.strip().str.lower().map(mapping)
    if values.isna().any():
        raise fail(path, column, values.isna(), frame, f"is unknown (expected one of {sorted(mapping)})")
    return values


def _units(path: Path, frame: pd.DataFrame, kind: pd.Series, model_id: str) -> pd.DataFrame:
    """Layer, branch, selection and unit id per row; placeholders (practice, catch) get no layer."""
    layer = frame["layer"].str.strip()
    placeholder = layer.str.match(_PLACEHOLDER)
    scored = kind.isin(["main", "repeated"]) & placeholder
    if scored.any():
        raise fail(path, "layer", scored, frame, "is a placeholder, but a main or repeated trial needs a real unit")
    real = ~placeholder
    index = pd.to_numeric(layer.str.extract(_REAL_LAYER)[0], errors="coerce")
    bad = real & ~index.between(0, len(INCEPTION_V1_MIXED) - 1)
    if bad.any():
        raise fail(
            path, "layer", bad, frame, f"is neither layer_0 ... layer_{len(INCEPTION_V1_MIXED) - 1} nor a placeholder"
        )
    branch = pd.to_numeric(frame["kernel_size"].str.strip(), errors="coerce")
    bad = real & ~branch.between(0, len(BRANCHES) - 1)
    if bad.any():
        raise fail(path, "kernel_size", bad, frame, f"is not a branch 0-{len(BRANCHES) - 1}")
    selection = frame["channel"].str.strip().map(UNIT_SELECTION)
    bad = real & selection.isna()
    if bad.any():
        raise fail(path, "channel", bad, frame, f"is not one of {sorted(UNIT_SELECTION)}")
    # Placeholder rows get empty strings here, and no unit below.
    code = index.map(lambda k: INCEPTION_V1_MIXED[int(k)] if pd.notna(k) else "")
    branch_name = branch.map(lambda k: BRANCHES[int(k)] if pd.notna(k) and 0 <= k < len(BRANCHES) else "")
    selection = selection.fillna("")
    if "unit_name" in frame:
        parsed = frame["unit_name"].str.strip().str.extract(_UNIT_NAME)
        said = (
            parsed["code"]
            + "/"
            + parsed["branch"].replace("P", "pool")
            + "/"
            + parsed["picked"].notna().map({True: "hand-picked", False: "random"})
        )
        disagree = real & (said != code + "/" + branch_name + "/" + selection)
        if disagree.any():
            raise fail(path, "unit_name", disagree, frame, "disagrees with the row's layer, kernel_size and channel")
    unit_id = (
        model_id + "__mixed" + code + "__" + branch_name + np.where(selection == "hand-picked", "__hand-picked", "")
    )
    if "batch_block" in frame:  # Experiment II: each block sampled its own channels
        unit_id = unit_id + "__block-" + frame["batch_block"].str.strip()
    return pd.DataFrame(
        {
            "unit_id": unit_id.where(real, model_id + "__" + layer),
            "layer": ("mixed" + code).where(real, None),
            "layer_index": index.where(real).astype("Int64"),
            "n_layers": pd.Series(len(INCEPTION_V1_MIXED), index=frame.index).where(real).astype("Int64"),
            "branch": branch_name.where(real, None),
            "unit_selection": selection.where(real, None),
        }
    )


def _choices(path: Path, frame: pd.DataFrame, correct: pd.Series) -> pd.DataFrame:
    """Which query was chosen (0 = ``a``) and which was the max one, checked against ``correct``."""
    out = pd.DataFrame(index=frame.index)
    if "response" not in frame:
        return out
    response = _mapped(path, frame, "response", {"a": "a", "b": "b"})
    out["chosen_query"] = (response == "b").astype(int)
    negative = frame["conf_rating"] < 0
    if (negative != (response == "a")).any():
        raise fail(path, "conf_rating", negative != (response == "a"), frame, "has the wrong sign for the response")
    if "correct_response" in frame:
        expected = _mapped(path, frame, "correct_response", {"a": "a", "b": "b"})
        if ((response == expected) != correct).any():
            raise fail(path, "correct", (response == expected) != correct, frame, "disagrees with response")
        out["max_query"] = (expected == "b").astype(int)
    if "query_order" in frame:
        order = _mapped(path, frame, "query_order", {"max_min": "max_min", "min_max": "min_max"})
        max_query = (order == "min_max").astype(int)
        if "max_query" in out and (out["max_query"] != max_query).any():
            raise fail(path, "query_order", out["max_query"] != max_query, frame, "disagrees with correct_response")
        out["max_query"] = max_query
    return out


def _check_repeats(path: Path, frame: pd.DataFrame, tidy: pd.DataFrame) -> None:
    """A repeated trial must point at an earlier trial of the same participant, on the same unit."""
    repeated = tidy["trial_kind"] == "repeated"
    if not repeated.any():
        return
    if "old_trial_nr" not in frame:
        raise fail(path, "trial_type", repeated, frame, "is a repeated trial, but the file has no old_trial_nr")
    missing = repeated & frame["old_trial_nr"].isna()
    if missing.any():
        raise fail(path, "old_trial_nr", missing, frame, "is empty for a repeated trial")
    first = tidy.set_index(["participant_id", "trial_index"])["unit_id"]
    keys = list(zip(tidy["participant_id"], frame["old_trial_nr"].astype("Int64"), strict=True))
    found = pd.Series([first.get(k) for k in keys], index=tidy.index)
    bad = repeated & (found != tidy["unit_id"])
    if bad.any():
        raise fail(path, "old_trial_nr", bad, frame, "names no earlier trial of this participant on the same unit")


def _to_tidy(path: Path, frame: pd.DataFrame, options: LoadOptions) -> pd.DataFrame:
    participant = frame["subject_id"].astype(str)
    duplicated = pd.Series(list(zip(participant, frame["trial_nr"], strict=True))).duplicated().to_numpy()
    if duplicated.any():
        raise fail(path, "trial_nr", duplicated, frame, "appears twice for this subject_id")
    instr = frame["instr_type"].str.strip().str.lower()
    condition = _mapped(path, frame, "instr_type", CONDITIONS)
    kind = _mapped(path, frame, "trial_type", TRIAL_KINDS)
    kind = kind.mask(frame["catch_trial"] & kind.eq("main"), "catch")
    correct = frame["correct"]
    confidence = frame["conf_rating"].abs()
    if "abs_conf_rating" in frame and (frame["abs_conf_rating"] != confidence).any():
        bad = frame["abs_conf_rating"] != confidence
        raise fail(path, "abs_conf_rating", bad, frame, "is not the absolute value of conf_rating")
    tidy = pd.DataFrame(
        {
            "paradigm": TWO_AFC.name,
            "participant_id": participant,
            "model_id": options.model_id,
            "condition": condition,
            "instr_type": instr,
            "trial_kind": kind,
            "correct": correct.astype(int),
            "confidence": confidence.astype(int),
            "trial_index": frame["trial_nr"],
        }
    )
    tidy = pd.concat([tidy, _units(path, frame, kind, options.model_id), _choices(path, frame, correct)], axis=1)
    if "RT" in frame:
        tidy["rt_ms"] = frame["RT"] * 1000  # the release records seconds
    if "old_trial_nr" in frame:
        tidy["first_trial_index"] = frame["old_trial_nr"].where(kind == "repeated").astype("Int64")
    _check_repeats(path, frame, tidy)
    renames = {"block_nr": "block", "batch_block": "batch_block", "batch": "batch"}
    for column in ("expert_level", "condition_name", "instruction_grid_mode", "n_instruction_patches", *renames):
        if column in frame:
            tidy[renames.get(column, column)] = frame[column]
    return tidy


def experiment_title(tidy: pd.DataFrame) -> str:
    """Which experiment a loaded table is: only Experiment II's files have ``batch_block``."""
    return f"Borowski et al. (ICLR 2021), Experiment {'II' if 'batch_block' in tidy else 'I'}"


RESPONSES = TableFormat(
    name="borowski",
    title="Borowski et al. (ICLR 2021), Experiment I or II",
    describe=experiment_title,
    lead_by=("condition_name", "expert_level"),  # Experiment II: four instruction conditions, experts and lay
    kind="responses",
    required={
        "subject_id": "int",
        "trial_nr": "int",
        "instr_type": "str",
        "trial_type": "str",
        "catch_trial": "bool",
        "layer": "str",
        "kernel_size": "str",
        "channel": "str",
        "correct": "bool",
        "conf_rating": "signed_confidence",
    },
    optional={
        "block_nr": "int",
        "batch": "int",
        "batch_block": "str",
        "query_order": "str",
        "response": "str",
        "correct_response": "str",
        "RT": "number",
        "unit_name": "str",
        "abs_conf_rating": "confidence",
        "old_trial_nr": "int?",
        "old_block_nr": "int?",
        "timeout": "bool",
        "seed": "int",
        "subject_id_within_expert_type": "int",
        "instruction_grid_mode": "str",
        "n_instruction_patches": "int",
        "condition_name": "str",
        "expert_level": "str",
    },
    to_tidy=_to_tidy,
    published_keep={},
    published_note="the release holds only the participants the paper analysed; none are marked as excluded",
)


# --- intuitiveness ratings ------------------------------------------------------------------------


def _phase(path: Path) -> str | None:
    """'beginning' or 'end': the release says when the ratings were collected only in the file name."""
    words = set(re.split(r"[^a-z]+", path.stem.lower()))
    found = [phase for phase in ("beginning", "end") if phase in words]
    return found[0] if len(found) == 1 else None


def expert_levels(path: Path, frame: pd.DataFrame) -> pd.Series:
    """Experiment II's rule: subject_id is the within-group id for experts, that id + 10 for lay people."""
    within, subject = frame["subject_id_within_expert_type"], frame["subject_id"]
    level = pd.Series(None, index=frame.index, dtype=object)
    level[subject == within] = "expert"
    level[subject == within + LAY_ID_OFFSET] = "naive"
    if level.isna().any():
        raise fail(
            path,
            "subject_id",
            level.isna(),
            frame,
            f"is neither subject_id_within_expert_type nor it + {LAY_ID_OFFSET}",
        )
    return level


def _ratings_to_tidy(path: Path, frame: pd.DataFrame, options: LoadOptions) -> pd.DataFrame:
    participant = frame["subject_id"].astype(str)
    name = frame["trial_name"].str.strip()
    duplicated = pd.Series(list(zip(participant, name, strict=True))).duplicated().to_numpy()
    if duplicated.any():
        raise fail(path, "trial_name", duplicated, frame, "is rated twice by this subject_id")
    tidy = pd.DataFrame(
        {
            "participant_id": participant,
            "trial_name": name,
            "trial_nr": frame["trial_nr"],
            "rating": frame["rating"],
            "rt_s": frame["rt"],
        }
    )
    if "expert_level" in frame:
        tidy["expert_level"] = frame["expert_level"].str.strip()
    elif "subject_id_within_expert_type" in frame:
        tidy["expert_level"] = expert_levels(path, frame)
    if (phase := _phase(path)) is not None:
        tidy["phase"] = phase
    return tidy


INTUITIVENESS = TableFormat(
    name="borowski-intuitiveness",
    title="Borowski et al. (ICLR 2021), intuitiveness ratings",
    kind="ratings",
    required={"subject_id": "int", "trial_name": "str", "trial_nr": "int", "rating": "rating", "rt": "number"},
    optional={
        "subject_id_within_expert_type": "int",
        "trial_name_number": "number",
        "trial_name_as_jittered_number": "number",
        "expert_level": "str",
    },
    to_tidy=_ratings_to_tidy,
)

__all__ = ["INTUITIVENESS", "RESPONSES", "ResponseTableError", "expert_levels"]
