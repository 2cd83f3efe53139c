"""The response table: one row per stored response, streamed; its columns are contracts.responses'."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from contracts.bundle import Bundle, Manifest, StudyMismatchError, Unit, check_same_study
from contracts.criteria import ExclusionCriteria
from contracts.files import atomic_text_file
from contracts.responses import COLUMN_NAMES
from experiment_server.db import ParticipantSession, Response, Study


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end.replace(tzinfo=None) - start.replace(tzinfo=None)).total_seconds(), 3)


def trial_seconds(main_at: datetime | None, first: datetime | None, last: datetime | None, n: int) -> float | None:
    """Mean seconds per main trial on the server's clock: from the start of the main trials (else the first
    response) to the last main response, over the intervals that span."""
    start, intervals = (main_at, n) if main_at is not None else (first, n - 1)
    if last is None or start is None or intervals <= 0:
        return None
    return round(_seconds(start, last) / intervals, 3)


def shown_seconds(fetched: Mapping[int, datetime | None], answered: Mapping[int, datetime]) -> dict[int, float | None]:
    """Each answered main trial's seconds on screen, on the server's clock: from its fetch (the one whose
    signed ``shown`` came back with the answer) to its answer, or to the next trial's fetch where that came
    sooner (the page fetches a trial only once the one before is answered; a script that fetches ahead gets
    no time for the trials it skipped past).

    The intervals never overlap, so their sum is at most the time the session really took. None: no fetch
    time (responses stored before per-trial timing)."""
    times: dict[int, float | None] = {}
    for index, answer in answered.items():
        start = fetched.get(index)
        if start is None:
            times[index] = None
            continue
        following = fetched.get(index + 1)
        end = min(answer, following, key=_naive) if following is not None else answer
        times[index] = max(0.0, _seconds(start, end))
    return times


def _naive(moment: datetime) -> datetime:
    return moment.replace(tzinfo=None)


def session_trial_times(session: ParticipantSession) -> dict[int, float | None]:
    """:func:`shown_seconds` of the session's loaded main responses."""
    main = [r for r in session.responses if r.phase == "main"]
    return shown_seconds({r.trial_index: r.fetched_at for r in main}, {r.trial_index: r.created_at for r in main})


def main_span(session: ParticipantSession) -> tuple[datetime | None, datetime | None, int]:
    """First and last main response times and their count, from the session's loaded responses."""
    times = [r.created_at for r in session.responses if r.phase == "main"]
    return (min(times), max(times), len(times)) if times else (None, None, 0)


def session_facts(
    session: ParticipantSession, span: tuple[datetime | None, datetime | None, int] | None = None
) -> dict[str, Any]:
    """Per-session columns, repeated on each of the session's rows (and used by the dashboard).

    ``span``: the session's (first, last, count) of main responses; read from its responses when not given.
    """
    first, last, n = span if span is not None else main_span(session)
    return {
        "session_status": session.status,
        "session_completed": int(session.status == "completed"),
        # Reading the instructions: from their first display to the start of practice (or of the main trials).
        # A session that answered main trials without ever reporting the instructions (the page always
        # does; a script need not) read them for 0 s: the rule fails rather than being skipped.
        "instruction_s": _seconds(session.instructions_at, session.practice_at or session.main_at)
        if session.instructions_at is not None or not n
        else 0.0,
        "session_s": _seconds(session.consented_at, session.completed_at),
        "trial_s": trial_seconds(session.main_at, first, last, n),
        "practice_blocks": session.practice_blocks,
        "window_width": session.window_width,
        "window_height": session.window_height,
        "device_pixel_ratio": session.device_pixel_ratio,
        "failure_reason": session.failure_reason,
        "excluded_by_experimenter": int(session.excluded_by_experimenter),
        "exclusion_reason": session.exclusion_reason,
        "feedback": session.feedback,
    }


def served_build(bundle: Bundle, session_factory: sessionmaker, allow_rebuilt_bundle: bool = False) -> str | None:
    """The build of the bundle the database's sessions of this study took; a database that never served
    the study, or served another build of it, is refused (naming both)."""
    study_id = bundle.manifest.study_id
    with session_factory() as db:
        study = db.get(Study, study_id)
        others = db.scalars(select(Study.study_id).where(Study.study_id != study_id)).all()
    where = f"the database {session_factory.kw['bind'].url.render_as_string(hide_password=True)}"
    if study is None:
        held = f"it holds study {', '.join(map(repr, sorted(others)))}" if others else "it holds no study"
        raise StudyMismatchError(
            f"{where} never served study {study_id!r} of the bundle {bundle.root} ({held}): give the database the "
            "study was served from (--db), or the bundle of the study it holds"
        )
    if not allow_rebuilt_bundle:
        check_same_study(
            bundle,
            study_id,
            study.bundle_fingerprint,
            where,
            "give the bundle its sessions took; --allow-rebuilt-bundle exports with this one anyway",
        )
    return study.bundle_fingerprint


def response_rows(
    bundle: Bundle, session_factory: sessionmaker, allow_rebuilt_bundle: bool = False
) -> Iterator[dict[str, Any]]:
    """Rows in (session, phase, block, trial index) order, joined with the bundle's unit and answer facts."""
    build = served_build(bundle, session_factory, allow_rebuilt_bundle)
    manifest = bundle.manifest
    trials = {**manifest.trials(), **{t.trial_id: t for t in manifest.practice_trials}}
    units = {u.unit_id: u for u in manifest.units}
    answers = bundle.answer_key.answers
    query = (
        select(Response, ParticipantSession)
        .join(ParticipantSession)
        .where(ParticipantSession.study_id == manifest.study_id)
        .order_by(ParticipantSession.id, Response.phase.desc(), Response.block, Response.trial_index)
    )
    spans_query = (
        select(Response.session_id, func.min(Response.created_at), func.max(Response.created_at), func.count())
        .join(ParticipantSession)
        .where(ParticipantSession.study_id == manifest.study_id, Response.phase == "main")
        .group_by(Response.session_id)
    )
    with session_factory() as db:
        study = db.get(Study, manifest.study_id)
        stopped = f"{study.stopped_at.isoformat()}: {study.stop_reason}" if study and study.stopped_at else None
        spans = {row[0]: tuple(row[1:]) for row in db.execute(spans_query)}
        shown = _study_trial_times(db, manifest.study_id)
        facts: dict[int, dict[str, Any]] = {}
        for response, session in db.execute(query).yield_per(1000):
            if session.id not in facts:
                facts = {session.id: session_facts(session, spans.get(session.id, (None, None, 0)))}
            trial = trials[response.trial_id]
            unit = units[trial.unit_id]
            row = {
                "study_id": session.study_id,
                "bundle_fingerprint": build,
                "study_stopped": stopped,
                "paradigm": manifest.paradigm,
                "participant_id": session.participant_id,
                "platform": session.platform,
                "task_id": session.task_id,
                "trial_index": response.trial_index,
                "trial_id": response.trial_id,
                "model_id": unit.model_id,
                "unit_id": unit.unit_id,
                "layer": unit.layer,
                **unit_columns(manifest, unit),
                "layer_index": unit.layer_index,
                "n_layers": unit.n_layers,
                "condition": trial.condition,
                "trial_kind": trial.kind,
                "practice_block": response.block if response.phase == "practice" else None,
                "batch": trial.batch,
                "max_side": trial.max_side,
                "chosen_query": response.chosen_query,
                "max_query": answers[response.trial_id].max_query,
                "correct": int(response.correct),
                "confidence": response.confidence,
                "rt_ms": round(response.rt_ms, 3),
                "focus_lost": response.focus_lost,
                "responded_at": response.created_at.isoformat(),
                "shown_s": shown.get(session.id, {}).get(response.trial_index) if response.phase == "main" else None,
                **facts[session.id],
            }
            yield {name: row[name] for name in COLUMN_NAMES}


def _study_trial_times(db, study_id: str) -> dict[int, dict[int, float | None]]:
    """:func:`shown_seconds` of every session of the study, from one narrow query."""
    fetched: dict[int, dict[int, datetime | None]] = {}
    answered: dict[int, dict[int, datetime]] = {}
    for session_id, index, fetched_at, created_at in db.execute(
        select(Response.session_id, Response.trial_index, Response.fetched_at, Response.created_at)
        .join(ParticipantSession)
        .where(ParticipantSession.study_id == study_id, Response.phase == "main")
    ):
        fetched.setdefault(session_id, {})[index] = fetched_at
        answered.setdefault(session_id, {})[index] = created_at
    return {session_id: shown_seconds(fetched[session_id], times) for session_id, times in answered.items()}


def unit_columns(manifest: Manifest, unit: Unit) -> dict[str, Any]:
    """What kind of unit a row measured: a channel, or a row of a named dictionary and where that came from."""
    selector = unit.selector
    if selector is None or selector.kind == "channel":
        channel = selector.channel if selector is not None else None
        return {"channel": channel, "unit_kind": unit.unit_kind, "dictionary_method": None, "dictionary_row": None}
    dictionary = manifest.dictionary(unit.model_id, unit.layer or "", selector.dictionary)
    return {
        "channel": None,
        "unit_kind": unit.unit_kind,
        "dictionary_method": dictionary.method if dictionary is not None else None,
        "dictionary_row": selector.index,
    }


def study_criteria(session_factory: sessionmaker, study_id: str) -> ExclusionCriteria | None:
    """The exclusion criteria the study's server last ran with; None for a database that never said."""
    with session_factory() as db:
        study = db.get(Study, study_id)
    if study is None or study.exclusion_criteria is None:
        return None
    return ExclusionCriteria.model_validate_json(study.exclusion_criteria)


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, quoted so that it stays text (OWASP's advice).

    Numbers are written as numbers; only text is touched, so a negative number keeps its sign.
    """
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_chunks(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The CSV text in chunks of rows, for streaming; text that looks like a formula is quoted."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMN_NAMES)
    writer.writeheader()
    for n, row in enumerate(rows, start=1):
        writer.writerow({k: spreadsheet_safe(v) for k, v in row.items()})
        if n % 500 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def jsonl_chunks(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, separators=(",", ":")) + "\n"


def export_csv(bundle: Bundle, session_factory: sessionmaker, out: Path, allow_rebuilt_bundle: bool = False) -> int:
    """Write the table atomically; returns the number of rows."""
    counted = 0

    def counting(rows: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal counted
        for row in rows:
            counted += 1
            yield row

    with atomic_text_file(out, newline="") as fh:
        for chunk in csv_chunks(counting(response_rows(bundle, session_factory, allow_rebuilt_bundle))):
            fh.write(chunk)
    return counted
