"""Reading and checking CSV tables: every cell as text, then each column converted to its kind.

A bad value is reported with the file, the column and the first bad row, counted as in a
spreadsheet (the header is row 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from contracts.errors import PsychinterpError


class ResponseTableError(PsychinterpError):
    pass


_BOOL = {"1": True, "0": False, "true": True, "false": False, "1.0": True, "0.0": False}
_ALLOWED = {
    "binary": ({0, 1}, "0 or 1"),
    "confidence": ({1, 2, 3}, "a confidence of 1, 2 or 3"),
    "signed_confidence": ({-3, -2, -1, 1, 2, 3}, "a signed confidence of -3..-1 or 1..3"),
}

# A kind is one of the names below; a trailing "?" lets the cell be empty (NaN / None after conversion).
KINDS = ("str", "bool", "number", "int", "binary", "confidence", "signed_confidence", "probability", "rating")


def spreadsheet_row(mask: pd.Series | np.ndarray) -> int:
    """The spreadsheet row (header = row 1) of the first True in ``mask``."""
    return int(np.asarray(mask).argmax()) + 2


class _AsWritten:
    """The file's cells, kept on a converted frame's ``attrs`` for error messages.

    pandas deep-copies ``attrs`` into every derived frame; this shares one read-only copy instead.
    """

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame

    def __deepcopy__(self, memo) -> _AsWritten:
        return self


def fail(path: Path, column: str, mask, frame: pd.DataFrame, problem: str) -> ResponseTableError:
    """An error naming the file, the column, the first row where ``mask`` holds, and its text in the file."""
    row = spreadsheet_row(mask)
    written = frame.attrs.get("as_written")
    text = written.frame if written is not None else frame
    value = text[column].iloc[row - 2] if column in text else None
    return ResponseTableError(f"{path}: column {column!r}, row {row}: {value!r} {problem}")


def convert(path: Path, frame: pd.DataFrame, column: str, kind: str) -> pd.Series:
    """The text column converted to ``kind`` (see :data:`KINDS`); a bad value raises with its row."""
    nullable = kind.endswith("?")
    kind = kind.rstrip("?")
    if kind not in KINDS:
        raise AssertionError(kind)
    values = frame[column].astype(str).str.strip()
    empty = values == ""
    if kind == "str":
        converted, ok, want = values.where(~empty, None), ~empty, "a non-empty value"
    elif kind == "bool":
        converted = values.str.lower().map(_BOOL)
        ok, want = converted.notna(), "true/false or 1/0"
    else:
        numeric = pd.to_numeric(values.where(~empty, None), errors="coerce")
        if kind in _ALLOWED:
            allowed, want = _ALLOWED[kind]
            ok = numeric.isin(allowed)
        elif kind == "probability":
            ok, want = numeric.between(0, 1), "a number between 0 and 1"
        elif kind == "rating":
            ok, want = numeric.between(-100, 100), "a rating between -100 and 100"
        elif kind == "int":
            ok, want = numeric.notna() & (numeric == numeric.round()), "a whole number"
        else:
            ok, want = numeric.notna() & np.isfinite(numeric), "a number"
        converted = numeric
    if nullable:
        ok = ok | empty
    if not ok.all():
        raise fail(path, column, ~ok, frame, f"is not {want}")
    if kind == "bool":
        return converted.astype("boolean") if nullable else converted.astype(bool)
    if kind in ("int", "binary", "confidence", "signed_confidence"):
        return converted.astype("Int64") if nullable or empty.any() else converted.astype("int64")
    return converted


def read_csv_text(path: Path) -> pd.DataFrame:
    """Every cell as text; a leading unnamed index column (as pandas writes one) is dropped."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ResponseTableError(f"{path}: file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ResponseTableError(f"{path}: not a readable CSV ({exc})") from None
    return frame.drop(columns=[c for c in frame.columns if c == "" or c.startswith("Unnamed:")])


def convert_columns(
    path: Path, frame: pd.DataFrame, required: Mapping[str, str], optional: Mapping[str, str], what: str
) -> pd.DataFrame:
    """A copy with the required columns (all must exist) and the optional ones present converted."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ResponseTableError(f"{path}: missing required column(s) {missing} for the {what}")
    out = frame.copy()
    for column, kind in {**required, **{c: k for c, k in optional.items() if c in frame}}.items():
        out[column] = convert(path, frame, column, kind)
    out.attrs["as_written"] = _AsWritten(frame)
    return out
