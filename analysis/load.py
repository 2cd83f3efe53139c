"""Load a response table (docs/responses.md) into a tidy, validated data frame."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from stimuli.errors import PsychinterpError


class ResponseTableError(PsychinterpError):
    pass


# column -> kind; kinds are checked row by row so the error can name the first bad row.
REQUIRED = {
    "participant_id": "str",
    "model_id": "str",
    "unit_id": "str",
    "condition": "str",
    "correct": "binary",
    "confidence": "confidence",
}
OPTIONAL_NUMERIC = ("rt_ms", "trial_index", "layer_index", "n_layers", "channel")


def _first_bad(values: pd.Series, ok: pd.Series) -> tuple[int, object] | None:
    bad = ~ok
    if not bad.any():
        return None
    i = int(bad.to_numpy().argmax())
    return i, values.iloc[i]


def load_responses(path: str | Path) -> pd.DataFrame:
    """Read our CSV export; a missing column or a bad value names the file, column and row."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise ResponseTableError(f"{path}: file not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ResponseTableError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ResponseTableError(f"{path}: missing required column(s) {missing}")
    for column, kind in REQUIRED.items():
        values = frame[column].str.strip()
        if kind == "str":
            ok = values != ""
            want = "a non-empty value"
        else:
            numeric = pd.to_numeric(values, errors="coerce")
            allowed = {0, 1} if kind == "binary" else {1, 2, 3}
            ok = numeric.isin(allowed)
            want = f"one of {sorted(allowed)}"
            frame[column] = numeric
        if (bad := _first_bad(values, ok)) is not None:
            row, value = bad
            # +2: one for the header line, one because CSV rows are counted from 1.
            raise ResponseTableError(f"{path}: column {column!r}, row {row + 2}: {value!r} is not {want}")
    for column in OPTIONAL_NUMERIC:
        if column in frame.columns:
            numeric = pd.to_numeric(frame[column].replace("", None), errors="coerce")
            bad = _first_bad(frame[column], numeric.notna() | (frame[column] == ""))
            if bad is not None:
                raise ResponseTableError(f"{path}: column {column!r}, row {bad[0] + 2}: {bad[1]!r} is not a number")
            frame[column] = numeric
    frame["correct"] = frame["correct"].astype(int)
    frame["confidence"] = frame["confidence"].astype(int)
    return frame
