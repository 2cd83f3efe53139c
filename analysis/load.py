"""Load responses into one tidy, validated data frame: one row per response.

Formats (detected from the header, or named):

- ``psychinterp``: our export (docs/responses.md);
- ``imi``: the released responses of Zimmermann, Klein & Brendel (NeurIPS 2023);
- ``borowski``: the released CSVs of Borowski et al. (ICLR 2021).

Columns are mapped by name and extra columns are kept. A missing required
column, or a value of the wrong type, is reported with the file, the column and
the first bad row (counted as in a spreadsheet: the header is row 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from stimuli.errors import PsychinterpError


class ResponseTableError(PsychinterpError):
    pass


Format = Literal["psychinterp", "imi", "borowski"]
_BOOL = {"1": 1, "0": 0, "true": 1, "false": 0, "1.0": 1, "0.0": 0}


@dataclass(frozen=True)
class FormatSpec:
    required: Mapping[str, str]  # original column -> kind: str, binary, confidence, signed_confidence, number, bool
    optional: Mapping[str, str]


SPECS: dict[str, FormatSpec] = {
    "psychinterp": FormatSpec(
        required={
            "participant_id": "str",
            "model_id": "str",
            "unit_id": "str",
            "condition": "str",
            "correct": "binary",
            "confidence": "confidence",
        },
        optional={
            "rt_ms": "number",
            "trial_index": "number",
            "layer_index": "number",
            "n_layers": "number",
            "channel": "number",
            "chosen_query": "number",
            "instruction_s": "number",
            "session_s": "number",
            "practice_blocks": "number",
        },
    ),
    "imi": FormatSpec(
        required={
            "participant_id": "str",
            "task_id": "str",
            "model": "str",
            "mode": "str",
            "layer": "str",
            "channel": "number",
            "correct": "bool",
            "confidence": "confidence",
        },
        optional={
            "task_number": "number",
            "batch": "number",
            "rt": "number",
            "catch_trial": "bool",
            "is_demo": "bool",
            "passed_checks": "bool",
        },
    ),
    "borowski": FormatSpec(
        required={
            "subject_id": "str",
            "trial_nr": "number",
            "instr_type": "str",
            "trial_type": "str",
            "layer": "str",
            "channel": "number",
            "correct": "bool",
            "conf_rating": "signed_confidence",
        },
        optional={
            "block_nr": "number",
            "catch_trial": "bool",
            "batch": "number",
            "kernel_size": "str",
            "abs_conf_rating": "confidence",
            "RT": "number",
            "unit_name": "str",
        },
    ),
}


def detect_format(columns: list[str]) -> Format:
    """The format whose required columns are all present; the most specific one first."""
    present = set(columns)
    for name in ("borowski", "imi", "psychinterp"):
        if set(SPECS[name].required) <= present:
            return name  # type: ignore[return-value]
    closest = min(SPECS, key=lambda n: len(set(SPECS[n].required) - present))
    missing = sorted(set(SPECS[closest].required) - present)
    raise ResponseTableError(
        f"not a known response table: closest format {closest!r} lacks column(s) {missing} "
        f"(formats: {sorted(SPECS)}; name one with --format)"
    )


def _check(path: Path, frame: pd.DataFrame, column: str, kind: str) -> pd.Series:
    """The column converted to its kind; a bad value names the file, column and first bad row."""
    values = frame[column].str.strip()
    if kind == "str":
        ok, converted, want = values != "", values, "a non-empty value"
    elif kind == "bool":
        converted = values.str.lower().map(_BOOL)
        ok, want = converted.notna(), "true/false or 1/0"
    else:
        numeric = pd.to_numeric(values.replace("", None), errors="coerce")
        allowed = {
            "binary": ({0, 1}, "0 or 1"),
            "confidence": ({1, 2, 3}, "a confidence of 1, 2 or 3"),
            "signed_confidence": ({-3, -2, -1, 1, 2, 3}, "a signed confidence of -3..-1 or 1..3"),
        }.get(kind)
        if allowed:
            ok, want = numeric.isin(allowed[0]), allowed[1]
        elif kind == "probability":
            ok, want = numeric.between(0, 1), "a number between 0 and 1"
        else:
            ok, want = numeric.notna() | (values == ""), "a number"
        converted = numeric
    bad = ~ok
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise ResponseTableError(f"{path}: column {column!r}, row {row + 2}: {frame[column].iloc[row]!r} is not {want}")
    return converted


def _validated(path: Path, frame: pd.DataFrame, spec: FormatSpec, name: str) -> pd.DataFrame:
    missing = [c for c in spec.required if c not in frame.columns]
    if missing:
        raise ResponseTableError(f"{path}: missing required column(s) {missing} for the {name} format")
    out = frame.copy()
    for column, kind in {**spec.required, **{k: v for k, v in spec.optional.items() if k in frame}}.items():
        out[column] = _check(path, frame, column, kind)
    return out


def _from_imi(frame: pd.DataFrame) -> pd.DataFrame:
    model = frame["model"].str.extract(r"^(?P<model>.*?)(?:_(?P<queries>hard85|hard95|hard99))?$")
    mode = frame["mode"].str.lower()
    catch = mode.eq("catch_trial")
    if "catch_trial" in frame:
        catch |= frame["catch_trial"].astype(bool)
    condition = mode.map({"natural": "natural", "optimized": "synthetic"})
    # A catch trial belongs to its task: take the condition of the task's other trials.
    task_condition = condition.groupby(frame["task_id"]).transform(
        lambda s: s.dropna().mode().iat[0] if s.notna().any() else None
    )
    kind = pd.Series("main", index=frame.index).mask(catch, "catch")
    if "is_demo" in frame:
        kind = kind.mask(frame["is_demo"].astype(bool), "practice")
    tidy = pd.DataFrame(
        {
            "participant_id": frame["participant_id"],
            "model_id": model["model"],
            "unit_id": model["model"] + "__" + frame["layer"] + "__" + frame["channel"].astype(int).astype(str),
            "layer": frame["layer"],
            "channel": frame["channel"],
            "condition": condition.fillna(task_condition).fillna("natural"),
            "trial_kind": kind,
            "correct": frame["correct"].astype(int),
            "confidence": frame["confidence"].astype(int),
            "task_id": frame["task_id"],
            "queries": model["queries"].fillna("easy"),
        }
    )
    renames = {"task_number": "trial_index", "batch": "batch", "rt": "rt_ms", "passed_checks": "passed_checks"}
    for source, target in renames.items():
        if source in frame:
            tidy[target] = frame[source]
    return tidy


def _from_borowski(frame: pd.DataFrame, model_id: str) -> pd.DataFrame:
    instr = frame["instr_type"].str.lower()
    condition = instr.map({"optimized": "synthetic", "natural": "natural", "none_pre": "none", "none_post": "none"})
    if condition.isna().any():
        row = int(condition.isna().to_numpy().argmax())
        raise ResponseTableError(f"column 'instr_type', row {row + 2}: {frame['instr_type'].iloc[row]!r} is unknown")
    kind = frame["trial_type"].str.lower().map({"practice": "practice", "main": "main", "repeated": "repeated"})
    if kind.isna().any():
        row = int(kind.isna().to_numpy().argmax())
        raise ResponseTableError(f"column 'trial_type', row {row + 2}: {frame['trial_type'].iloc[row]!r} is unknown")
    if "catch_trial" in frame:
        kind = kind.mask(frame["catch_trial"].astype(bool) & kind.eq("main"), "catch")
    if "unit_name" in frame:
        unit = model_id + "__" + frame["unit_name"]
    else:
        unit = model_id + "__" + frame["layer"] + "__" + frame["channel"].astype(int).astype(str)
    tidy = pd.DataFrame(
        {
            "participant_id": frame["subject_id"],
            "model_id": model_id,
            "unit_id": unit,
            "layer": frame["layer"],
            "channel": frame["channel"],
            "condition": condition,
            "instr_type": instr,
            "trial_kind": kind,
            "correct": frame["correct"].astype(int),
            "confidence": frame["conf_rating"].abs().astype(int),
            "trial_index": frame["trial_nr"],
        }
    )
    if "RT" in frame:
        tidy["rt_ms"] = frame["RT"] * 1000  # the release records seconds
    for column in ("block_nr", "batch", "kernel_size", "expert_level", "condition_name"):
        if column in frame:
            tidy[column] = frame[column]
    return tidy


def _read_csv(path: Path) -> pd.DataFrame:
    """Every cell as text, unnamed index columns dropped."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ResponseTableError(f"{path}: file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ResponseTableError(f"{path}: not a readable CSV ({exc})") from None
    return frame.drop(columns=[c for c in frame.columns if c == "" or c.startswith("Unnamed:")])


MACHINE_SCORES = FormatSpec(
    required={"unit_id": "str", "condition": "str", "machine_score": "probability"},
    optional={"model_id": "str", "n_trials": "number", "observer": "str"},
)


def load_machine_scores(path: str | Path) -> pd.DataFrame:
    """Per-unit machine scores (``psychinterp simulate --scores``): expected accuracy of an observer."""
    path = Path(path)
    frame = _validated(path, _read_csv(path), MACHINE_SCORES, "machine-score")
    if frame.empty:
        raise ResponseTableError(f"{path}: no machine scores")
    duplicated = frame.duplicated(["unit_id", "condition"])
    if duplicated.any():
        row = int(duplicated.to_numpy().argmax())
        raise ResponseTableError(f"{path}: row {row + 2}: unit {frame['unit_id'].iloc[row]!r} is scored twice")
    return frame


def load_responses(path: str | Path, format: Format | None = None, model_id: str = "googlenet") -> pd.DataFrame:
    """Read a response table in any known format into the tidy table (see the module docstring).

    ``model_id`` names the model for the Borowski et al. format, whose files carry no model column.
    """
    path = Path(path)
    frame = _read_csv(path)
    if format is None:
        try:
            format = detect_format(list(frame.columns))
        except ResponseTableError as exc:
            raise ResponseTableError(f"{path}: {exc}") from None
    if format not in SPECS:
        raise ResponseTableError(f"{path}: unknown format {format!r}; choose from {sorted(SPECS)}")
    frame = _validated(path, frame, SPECS[format], format)
    try:
        if format == "imi":
            tidy = _from_imi(frame)
        elif format == "borowski":
            tidy = _from_borowski(frame, model_id)
        else:
            tidy = frame
            if "trial_kind" not in tidy:
                tidy["trial_kind"] = "main"
    except ResponseTableError as exc:
        raise ResponseTableError(f"{path}: {exc}") from None
    # Extra columns are kept, under their own names.
    for column in frame.columns:
        if column not in tidy:
            tidy[column] = frame[column]
    if tidy.empty:
        raise ResponseTableError(f"{path}: no responses")
    tidy["correct"] = tidy["correct"].astype(int)
    tidy["confidence"] = tidy["confidence"].astype(int)
    tidy.attrs["format"] = format
    return tidy
