"""Load responses into one tidy, validated data frame: one row per response.

Formats (``analysis.formats.FORMATS``; detected from the header, or named):

- ``psychinterp``: our export (docs/responses.md);
- ``imi``: the released responses of Zimmermann, Klein & Brendel (NeurIPS 2023);
- ``borowski``: the released trial tables of Borowski et al. (ICLR 2021);
- ``borowski-intuitiveness``: that release's intuitiveness ratings (a rating table, read by
  :func:`load_ratings`).

Columns are mapped by name and extra columns are kept. A missing required column, or a value
of the wrong type, is reported with the file, the column and the first bad row (counted as in
a spreadsheet: the header is row 1).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.formats import FORMATS, LoadOptions, TableFormat
from analysis.tables import ResponseTableError, convert_columns, read_csv_text
from contracts.bundle import Bundle, Manifest, StudyMismatchError, check_same_study
from contracts.units import CHANNEL_KIND

__all__ = [
    "FORMATS",
    "ResponseTableError",
    "as_responses",
    "detect_format",
    "load_machine_scores",
    "check_machine_scores",
    "load_ratings",
    "load_responses",
    "load_table",
]


def detect_format(columns: list[str]) -> str:
    """The format whose required columns are all present; the one with the most required columns first."""
    present = set(columns)
    for fmt in sorted(FORMATS.values(), key=lambda f: -len(f.required)):
        if set(fmt.required) <= present:
            return fmt.name
    closest = min(FORMATS.values(), key=lambda f: len(set(f.required) - present))
    missing = sorted(set(closest.required) - present)
    raise ResponseTableError(
        f"not a known table: closest format {closest.name!r} lacks column(s) {missing} "
        f"({closest.title}; formats: {sorted(FORMATS)}; name one with --format)"
    )


def load_table(path: str | Path, format: str | None = None, model_id: str = "googlenet") -> pd.DataFrame:
    """Any known table, tidy; ``attrs["format"]`` names the format and ``attrs["kind"]`` says
    whether it holds 2AFC responses or ratings."""
    path = Path(path)
    frame = read_csv_text(path)
    if format is None:
        try:
            format = detect_format(list(frame.columns))
        except ResponseTableError as exc:
            raise ResponseTableError(f"{path}: {exc}") from None
    if format not in FORMATS:
        raise ResponseTableError(f"{path}: unknown format {format!r}; choose from {sorted(FORMATS)}")
    fmt: TableFormat = FORMATS[format]
    checked = convert_columns(path, frame, fmt.required, fmt.optional, f"{fmt.name} format ({fmt.title})")
    if checked.empty:
        raise ResponseTableError(f"{path}: no {'ratings' if fmt.kind == 'ratings' else 'responses'}")
    tidy = fmt.to_tidy(path, checked, LoadOptions(model_id=model_id))
    for column in checked.columns:  # extra columns are kept, under their own names
        if column not in tidy:
            tidy[column] = checked[column]
    if fmt.kind == "responses" and "unit_kind" not in tidy:  # published studies and older exports: channels
        tidy["unit_kind"] = CHANNEL_KIND
    tidy.attrs = {"format": fmt.name, "kind": fmt.kind, "source": str(path)}
    return tidy


def load_responses(path: str | Path, format: str | None = None, model_id: str = "googlenet") -> pd.DataFrame:
    """A 2AFC response table in any known format, tidy (see the module docstring).

    ``model_id`` names the model for the Borowski et al. format, whose files carry no model column.
    """
    return as_responses(load_table(path, format, model_id))


def as_responses(tidy: pd.DataFrame) -> pd.DataFrame:
    """A table from :func:`load_table` that must hold 2AFC responses."""
    if tidy.attrs["kind"] != "responses":
        fmt = FORMATS[tidy.attrs["format"]]
        raise ResponseTableError(
            f"{tidy.attrs['source']}: this is a rating table ({fmt.title}), not 2AFC responses; "
            "`psychinterp analyze` reports its ratings (analysis.load.load_ratings reads it)"
        )
    tidy["correct"] = tidy["correct"].astype(int)
    tidy["confidence"] = tidy["confidence"].astype(int)
    return tidy


def load_ratings(path: str | Path, format: str | None = None) -> pd.DataFrame:
    """A rating table (Borowski et al.'s intuitiveness files), tidy: participant, trial name, rating."""
    tidy = load_table(path, format)
    if tidy.attrs["kind"] != "ratings":
        raise ResponseTableError(f"{path}: this is a {tidy.attrs['format']} response table, not a rating table")
    return tidy


MACHINE_SCORES_REQUIRED = {"unit_id": "str", "condition": "str", "machine_score": "probability"}
MACHINE_SCORES_OPTIONAL = {
    "model_id": "str",
    "n_trials": "int",
    "observer": "str",
    "study_id": "str",
    "temperature": "number",
    "lapse": "probability",
    "shown_to_people": "str",
    "bundle_fingerprint": "str",
}


def load_machine_scores(path: str | Path) -> pd.DataFrame:
    """Per-unit machine scores (``psychinterp simulate --scores``): expected accuracy of an observer."""
    path = Path(path)
    frame = convert_columns(
        path, read_csv_text(path), MACHINE_SCORES_REQUIRED, MACHINE_SCORES_OPTIONAL, "machine-score table"
    )
    if frame.empty:
        raise ResponseTableError(f"{path}: no machine scores")
    duplicated = frame.duplicated(["unit_id", "condition"])
    if duplicated.any():
        row = int(duplicated.to_numpy().argmax())
        raise ResponseTableError(f"{path}: row {row + 2}: unit {frame['unit_id'].iloc[row]!r} is scored twice")
    return frame


def check_machine_scores(
    path: str | Path, scores: pd.DataFrame, responses: pd.DataFrame, manifest: Manifest | None = None
) -> pd.DataFrame:
    """Machine scores that fit these responses (and, given, this bundle), with each unit's model filled in.

    Refused, naming the file, the unit and the rule: scores of another study; units that are not in the
    bundle; units that people rated in a scored condition but the file does not score (their residuals
    are what corrects the machine); units nobody rated without a model (no model_id column, no bundle).
    """
    scores = scores.copy()
    studies = sorted(set(scores.get("study_id", pd.Series(dtype=str)).dropna()) - {""})
    if manifest is not None:
        if studies and studies != [manifest.study_id]:
            raise StudyMismatchError(
                f"{path}: machine scores of study {', '.join(map(repr, studies))}, but the bundle is of study "
                f"{manifest.study_id!r}: score this bundle's units (psychinterp simulate BUNDLE --scores FILE)"
            )
        models = {u.unit_id: u.model_id for u in manifest.all_units()}
        unknown = ~scores["unit_id"].isin(models)
        if unknown.any():
            row = int(unknown.to_numpy().argmax())
            raise ResponseTableError(
                f"{path}: row {row + 2}: unit {scores['unit_id'].iloc[row]!r} is not in the bundle of study "
                f"{manifest.study_id!r} ({int(unknown.sum())} such row(s)): the scores belong to another build; "
                "score this bundle's units"
            )
        scores["model_id"] = scores["unit_id"].map(models)
        scores["unit_kind"] = scores["unit_id"].map({u.unit_id: u.unit_kind for u in manifest.all_units()})
    main = responses[responses["trial_kind"] == "main"] if "trial_kind" in responses else responses
    answered = sorted(set(main.get("study_id", pd.Series(dtype=str)).dropna().astype(str)) - {""})
    if studies and answered and studies != answered:
        raise StudyMismatchError(
            f"{path}: machine scores of study {', '.join(map(repr, studies))}, but the responses are of study "
            f"{', '.join(map(repr, answered))}: score the bundle these responses were collected with"
        )
    rated = main[main["condition"].isin(set(scores["condition"]))][["unit_id", "condition"]].drop_duplicates()
    missing = rated.merge(scores[["unit_id", "condition"]], how="left", indicator=True)
    missing = missing[missing["_merge"] == "left_only"]
    if not missing.empty:
        named = ", ".join(f"{r.unit_id} ({r.condition})" for r in missing.head(3).itertuples())
        raise ResponseTableError(
            f"{path}: {len(missing)} unit(s) that people rated have no machine score, e.g. {named}: every rated "
            "unit of a scored condition needs one (the machine is corrected by its error on them); score every "
            "unit of the bundle (psychinterp simulate BUNDLE --scores FILE)"
        )
    known = dict(zip(main["unit_id"], main["model_id"], strict=False))
    if "model_id" not in scores:
        scores["model_id"] = scores["unit_id"].map(known)
    else:
        scores["model_id"] = scores["model_id"].replace("", pd.NA).fillna(scores["unit_id"].map(known))
    orphan = scores["model_id"].isna()
    if orphan.any():
        row = int(orphan.to_numpy().argmax())
        raise ResponseTableError(
            f"{path}: row {row + 2}: unit {scores['unit_id'].iloc[row]!r} was rated by nobody and the file names "
            "no model for it: add a model_id column, or give the study's bundle (--bundle)"
        )
    return scores


def check_responses_study(path: str | Path, bundle: Bundle, allow_rebuilt_bundle: bool = False) -> None:
    """Refuse a response table of another study than ``bundle`` (or, unless allowed, of another build of
    it), by its study_id and bundle_fingerprint columns; a table without them (published formats, older
    exports) is not checked."""
    path = Path(path)
    # Only the two per-study columns: the analysis reads the whole table afterwards anyway (and says
    # what is wrong with a file it cannot read).
    wanted = {"study_id", "bundle_fingerprint"}
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=lambda column: column in wanted)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError):
        return
    frame.attrs["source"] = str(path)
    ids = _single(frame, "study_id")
    build = None if allow_rebuilt_bundle else _single(frame, "bundle_fingerprint")
    if ids is not None:
        fix = "give the bundle of the study that was served" + (
            "" if allow_rebuilt_bundle else " (--allow-rebuilt-bundle accepts another build of the same study)"
        )
        check_same_study(bundle, ids, build, f"{path}", fix)


def _single(frame: pd.DataFrame, column: str) -> str | None:
    """The one value of a per-study column (None when absent or empty); several values are refused."""
    if column not in frame:
        return None
    values = sorted(set(frame[column].dropna().astype(str)) - {""})
    if len(values) > 1:
        raise StudyMismatchError(
            f"{frame.attrs.get('source', 'the table')}: column {column} holds {len(values)} values "
            f"({', '.join(values[:4])}): the file mixes studies or builds; analyse each with its own bundle"
        )
    return values[0] if values else None
