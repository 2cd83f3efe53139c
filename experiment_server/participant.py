"""Participant page and API: consent, session, practice, trials, responses, events, completion.

The browser never learns which query is correct before it has answered: images are
served per session, trial and slot, re-encoded and padded (``experiment_server.images``),
the answer key stays here, and feedback is computed after the response is stored.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import re
import secrets
from datetime import UTC, datetime
from typing import Any

import numpy as np
from flask import Blueprint, abort, current_app, jsonify, render_template, request
from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.exceptions import HTTPException

from contracts.bundle import Task, Trial
from contracts.criteria import too_fast
from experiment_server.assignment import choose_task, reservation_end
from experiment_server.checks import session_summary
from experiment_server.config import DEFAULT_CONSENT, consent_version
from experiment_server.context import bundle as _bundle
from experiment_server.context import cfg as _cfg
from experiment_server.context import db as _db
from experiment_server.context import paradigm as _paradigm
from experiment_server.context import reservation_lapsed
from experiment_server.db import ParticipantSession, Response, SessionEvent, Study, WorkerGroupMember, utcnow
from experiment_server.images import LAST_MODIFIED
from experiment_server.platforms import PLATFORMS, PlatformRefusal
from experiment_server.schemas import (
    Decline,
    EventBatch,
    FeedbackBody,
    PhaseBody,
    PlatformParams,
    ResponseBatch,
    ResponseBody,
    StartSession,
)

blueprint = Blueprint("participant", __name__)


class Refusal(HTTPException):
    """A 4xx whose JSON names the rule that refused the request (``rule``), and when to try again."""

    def __init__(self, code: int, rule: str, detail: str, retry_after_s: float | None = None):
        super().__init__(detail)
        self.code, self.rule, self.retry_after_s = code, rule, retry_after_s

    def get_headers(self, environ=None, scope=None) -> list[tuple[str, str]]:
        headers = super().get_headers(environ, scope)
        if self.retry_after_s is not None:
            headers.append(("Retry-After", str(max(1, math.ceil(self.retry_after_s)))))
        return headers


MOBILE_AGENT = re.compile(r"Mobi|Android|iPhone|iPad|iPod|Silk|Kindle", re.IGNORECASE)


# --- helpers ----------------------------------------------------------------------


def consent_text() -> str:
    return _cfg().consent_text or _bundle().manifest.consent_text or DEFAULT_CONSENT


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def parse_body(model: type[BaseModel], beacon: bool = False) -> Any:
    """The request body as ``model``, or a 4xx that says what is wrong.

    ``beacon``: the endpoint takes ``navigator.sendBeacon``'s text/plain too; every other one needs
    application/json, so a form on another website cannot post to it.
    """
    if not beacon and request.mimetype != "application/json":
        abort(415, "Content-Type must be application/json")
    try:
        payload = json.loads(request.get_data(cache=False), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the parser goes
        abort(400, f"request body is not JSON: {str(exc)[:100] or type(exc).__name__}")
    if not isinstance(payload, dict):
        abort(400, "request body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        abort(400, detail)


def _tasks() -> dict[str, Task]:
    return current_app.extensions["psychinterp_tasks"]


def _condition(session: ParticipantSession) -> str | None:
    return _tasks()[session.task_id].condition if session.task_id else None


def _practice_trials(condition: str | None) -> list[Trial]:
    trials = [t for t in _bundle().manifest.practice_trials if t.condition == condition]
    return trials  # a block shows every practice trial of the condition (the study config sets how many)


def _block_order(token: str, block: int, n: int) -> list[int]:
    """Each practice block shows the same trials in its own order."""
    seed = int.from_bytes(hashlib.sha256(f"{token}:{block}".encode()).digest()[:8], "big")
    return [int(i) for i in np.random.default_rng(seed).permutation(n)]


def _load(db: Session, token: str) -> ParticipantSession:
    found = db.scalar(select(ParticipantSession).where(ParticipantSession.token == token))
    if found is None:
        abort(404, "unknown session")
    return found


def _require_running(session: ParticipantSession) -> None:
    """Responses are accepted only from an active session whose reservation is live.

    A lapsed reservation is refused as expired; storing that status is the assignment's job (it
    expires stale reservations in its own transaction), since abort() rolls this one back.
    """
    status = "expired" if reservation_lapsed(session.status, session.reserved_until) else session.status
    if status != "active":
        abort(409 if status in ("completed", "failed") else 410, f"session is {status}")


def _trial_json(trial: Trial, index: int, n_trials: int, images: str) -> dict[str, Any]:
    """A trial as the page shows it; ``images`` is the URL prefix of its slots (session, trial, never image).

    Nothing here says which query is the more activating one, nor whether it is a catch trial.
    """
    refs = trial.references
    return {
        "trial_index": index,
        "n_trials": n_trials,
        "condition": trial.condition,
        "max_side": trial.max_side,
        "references": {
            "min": [f"{images}/min{i}.png" for i in range(len(refs.min))],
            "max": [f"{images}/max{i}.png" for i in range(len(refs.max))],
        },
        "queries": [f"{images}/q{i}.png" for i in range(len(trial.queries))],
        **_paradigm_json(),
    }


def _paradigm_json() -> dict[str, Any]:
    """How the page asks, the same for every trial of the study (its paradigm's)."""
    paradigm = _paradigm()
    return {
        "layout": paradigm.layout,
        "question": paradigm.question,
        "wrong_feedback": paradigm.wrong_feedback,
        "answers": paradigm.answers(),
    }


def _served_image(trial: Trial, slot: str):
    """One slot's image, with a strong ETag, a fixed Last-Modified and the session's private cache."""
    served = current_app.extensions["psychinterp_images"].get(trial, slot)
    if served is None:
        abort(404)
    response = current_app.response_class(served.data, mimetype="image/png")
    response.set_etag(served.etag)
    response.last_modified = LAST_MODIFIED
    response.cache_control.private = True
    response.cache_control.max_age = 86400
    return response.make_conditional(request)


def _scored(trial: Trial, body: ResponseBody) -> bool:
    """Whether a response is right, by the bundle's paradigm; a response it cannot take is a 400."""
    paradigm = _paradigm()
    if problem := paradigm.problem_with(body.chosen_query, body.confidence):
        abort(400, problem)
    return paradigm.score(body.chosen_query, _bundle().answer_key.answers[trial.trial_id].max_query)


def _count(db: Session, session: ParticipantSession, phase: str, block: int = 0, correct: bool | None = None) -> int:
    query = (
        select(func.count())
        .select_from(Response)
        .where(Response.session_id == session.id, Response.phase == phase, Response.block == block)
    )
    if correct is not None:
        query = query.where(Response.correct == correct)
    return db.scalar(query)


def _settle_practice(db: Session, session: ParticipantSession) -> None:
    """Evaluate a finished practice block: passed, another block, or failed. Idempotent."""
    trials = _practice_trials(_condition(session))
    if not trials:
        if not session.practice_passed:
            session.practice_passed = True
        return
    while not session.practice_passed and session.status == "active":
        block = session.practice_blocks + 1
        if _count(db, session, "practice", block) < len(trials):
            return
        session.practice_blocks = block
        if _count(db, session, "practice", block, correct=True) == len(trials):
            session.practice_passed = True
        elif block >= _cfg().criteria.max_practice_blocks:
            session.status, session.failure_reason = "failed", "practice"
            session.completed_at = utcnow()


def _next_main(db: Session, session: ParticipantSession, n_trials: int) -> int | None:
    answered = set(
        db.scalars(select(Response.trial_index).where(Response.session_id == session.id, Response.phase == "main"))
    )
    return next((i for i in range(n_trials) if i not in answered), None)


def _example_trial(session: ParticipantSession) -> Trial | None:
    """The trial the instructions show: the first practice trial, else the first main trial."""
    practice = _practice_trials(_condition(session))
    task = _tasks().get(session.task_id) if session.task_id else None
    return practice[0] if practice else (task.trials[0] if task and task.trials else None)


def _state(db: Session, session: ParticipantSession) -> dict[str, Any]:
    task = _tasks().get(session.task_id) if session.task_id else None
    n_trials = len(task.trials) if task else 0
    practice = _practice_trials(_condition(session))
    block = None if session.practice_passed or not practice else session.practice_blocks + 1
    practice_next = None
    if block is not None:
        done = set(
            db.scalars(
                select(Response.trial_index).where(
                    Response.session_id == session.id, Response.phase == "practice", Response.block == block
                )
            )
        )
        practice_next = next((i for i in range(len(practice)) if i not in done), None)
    example_source = _example_trial(session)
    return {
        "token": session.token,
        "status": session.status,
        "condition": _condition(session),
        "n_trials": n_trials,
        "next_trial": _next_main(db, session, n_trials) if task else None,
        "practice_trials": len(practice),
        "practice_block": block,
        "practice_next_trial": practice_next,
        "max_practice_blocks": _cfg().criteria.max_practice_blocks,
        **_paradigm_json(),
        "natural_images": _bundle().manifest.natural_images,
        "example": _example_json(session, example_source),
    }


def _example_json(session: ParticipantSession, trial: Trial | None) -> dict[str, Any] | None:
    """The instructions' example; a practice trial comes with its answer (a worked example), a main trial
    (in a study without practice) without: its answer is paid work."""
    if trial is None:
        return None
    shown = _trial_json(trial, 0, 1, f"/api/sessions/{session.token}/example/images")
    practice = trial.kind == "practice"
    return {**shown, "answer": _bundle().answer_key.answers[trial.trial_id].max_query if practice else None}


def _require_current_consent(version: str) -> None:
    """Consent (or its refusal) counts only for the text this server shows now."""
    if version != consent_version(consent_text()):
        abort(409, "the consent text has changed since this page loaded; please reload the page")


def direct_links_allowed(cfg) -> bool:
    """Direct links start sessions unless turned off, or unless feedback is on and they were not allowed."""
    return cfg.allow_direct_links if cfg.allow_direct_links is not None else not cfg.feedback


def _platform_identity(params: PlatformParams) -> str:
    if params.platform == "direct" and not direct_links_allowed(_cfg()):
        abort(403, "this study is open only through its recruiting platform (direct links are turned off)")
    try:
        return PLATFORMS[params.platform].identify(params, _cfg())
    except PlatformRefusal as refusal:
        abort(refusal.status, refusal.detail)


def _platform_columns(params: PlatformParams, participant_id: str) -> dict[str, Any]:
    """The session columns that a landing URL fills, shared by starting and declining."""
    return {
        "token": secrets.token_urlsafe(32),
        "study_id": _bundle().manifest.study_id,
        "participant_id": participant_id,
        "platform": params.platform,
        "platform_study_id": params.platform_study_id,
        "platform_session_id": params.platform_session_id,
        "assignment_id": params.assignment_id,
        "hit_id": params.hit_id,
        "turk_submit_to": params.turk_submit_to,
    }


def _already_here(db: Session, participant_id: str) -> None:
    existing = db.scalar(
        select(ParticipantSession.status).where(
            ParticipantSession.study_id == _bundle().manifest.study_id,
            ParticipantSession.participant_id == participant_id,
        )
    )
    if existing == "declined":
        abort(409, "you declined to take part in this study, so it cannot be started again")
    if existing is not None:
        abort(
            409,
            "this worker id already has a session of this study, in another browser or tab; "
            "please continue there, or contact the researchers",
        )


# --- pages and images ---------------------------------------------------------------


@blueprint.get("/")
def index():
    cfg, manifest = _cfg(), _bundle().manifest
    text = consent_text()
    with _db() as db:
        study = db.get(Study, manifest.study_id)
    settings = {
        "full": full_message(cfg) if study is not None and study.stopped_at is not None else None,
        "title": manifest.title or manifest.study_id,
        "studyId": manifest.study_id,
        "consentVersion": consent_version(text),
        "minWidth": cfg.min_window_width,
        "minHeight": cfg.min_window_height,
        "buttonLockMs": cfg.button_lock_ms,
        "maxImagePx": cfg.max_image_px,
        "feedback": cfg.feedback,
        "maxPracticeBlocks": cfg.criteria.max_practice_blocks,
    }
    return render_template("index.html", settings=settings, consent=text, title=settings["title"])


@blueprint.get("/api/sessions/<token>/example/images/<slot>.png")
def example_image(token: str, slot: str):
    with _db() as db:
        trial = _example_trial(_load(db, token))
    if trial is None:
        abort(404, "this session has no example trial")
    return _served_image(trial, slot)


# --- sessions -------------------------------------------------------------------------


def _open_session(db, body: StartSession, participant_id: str, task_id: str, now) -> ParticipantSession:
    """The new session's row (and its study-group membership), inside the assignment's transaction."""
    cfg, manifest = _cfg(), _bundle().manifest
    if cfg.study_group:
        db.add(
            WorkerGroupMember(study_group=cfg.study_group, participant_id=participant_id, study_id=manifest.study_id)
        )
        db.flush()
    window = body.window
    session = ParticipantSession(
        **_platform_columns(body, participant_id),
        task_id=task_id,
        status="active",
        created_at=now,
        reserved_until=reservation_end(now, cfg.reservation_minutes),
        consent_version=body.consent_version,
        consented_at=now,
        window_width=window.width if window else None,
        window_height=window.height if window else None,
        device_pixel_ratio=window.device_pixel_ratio if window else None,
        user_agent=body.user_agent,
    )
    db.add(session)
    db.flush()
    return session


def full_message(cfg) -> str:
    """What a participant who arrives after the study stopped is told, in plain words."""
    text = (
        "This study is full: it has all the answers it needs, so it takes no new participants. "
        "Thank you for your interest."
    )
    if cfg.prolific.full_code:
        return f"{text} Please enter the code {cfg.prolific.full_code} on Prolific."
    return f"{text} Please return it on your platform (Prolific: 'Return submission'; MTurk: 'Return HIT')."


@blueprint.post("/api/sessions")
def start_session():
    body: StartSession = parse_body(StartSession)
    cfg, manifest = _cfg(), _bundle().manifest
    if body.user_agent and MOBILE_AGENT.search(body.user_agent):
        abort(403, "this study needs a desktop or laptop computer; phones and tablets are not supported")
    _require_current_consent(body.consent_version)
    participant_id = _platform_identity(body)
    now = utcnow()
    with _db() as db:
        try:
            with db.begin():
                allocation = current_app.extensions["psychinterp_allocation"]
                task_id = choose_task(db, manifest.study_id, list(_tasks()), now, allocation)
                _already_here(db, participant_id)  # a returning worker is sent back to their session, full or not
                if task_id is not None:
                    session = _open_session(db, body, participant_id, task_id, now)
            if task_id is None:  # the stop record is committed; nobody running is cut off
                abort(409, full_message(cfg))
        except IntegrityError as exc:
            if "group" in str(exc.orig).lower():
                abort(403, "you have already taken part in a related study, so you cannot take part in this one")
            abort(409, "this worker id already has a session of this study; please continue in that browser")
        return jsonify(_state(db, session)), 201


@blueprint.post("/api/declines")
def decline():
    body: Decline = parse_body(Decline)
    _require_current_consent(body.consent_version)
    declined = ParticipantSession(
        **_platform_columns(body, _platform_identity(body)), status="declined", consent_version=body.consent_version
    )
    with _db() as db:
        try:
            with db.begin():
                db.add(declined)
        except IntegrityError:
            abort(409, "this worker id already has a session of this study")
    return jsonify(declined=True), 201


@blueprint.get("/api/sessions/<token>")
def session_state(token: str):
    with _db() as db, db.begin():
        session = _load(db, token)
        _settle_practice(db, session)
        if reservation_lapsed(session.status, session.reserved_until):
            session.status = "expired"
        return jsonify(_state(db, session))


@blueprint.post("/api/sessions/<token>/phase")
def phase(token: str):
    body: PhaseBody = parse_body(PhaseBody)
    column = {"instructions": "instructions_at", "practice": "practice_at", "main": "main_at"}[body.phase]
    with _db() as db, db.begin():
        session = _load(db, token)
        _require_running(session)
        if getattr(session, column) is None:
            setattr(session, column, utcnow())
    return jsonify(phase=body.phase)


# --- practice -------------------------------------------------------------------------


def _practice_trial(session: ParticipantSession, block: int, index: int) -> tuple[Trial, int]:
    trials = _practice_trials(_condition(session))
    if not trials:
        abort(404, "this task has no practice trials")
    if block != session.practice_blocks + 1 or session.practice_passed:
        abort(409, f"practice block {block} is not the current block")
    if index >= len(trials):
        abort(404, f"practice trial {index} out of range (a block has {len(trials)})")
    return trials[_block_order(session.token, block, len(trials))[index]], len(trials)


@blueprint.get("/api/sessions/<token>/practice/<int:block>/<int:index>")
def practice_trial(token: str, block: int, index: int):
    with _db() as db:
        session = _load(db, token)
        trial, n = _practice_trial(session, block, index)
    return jsonify(_trial_json(trial, index, n, f"/api/sessions/{token}/practice/{block}/{index}/images"))


@blueprint.get("/api/sessions/<token>/practice/<int:block>/<int:index>/images/<slot>.png")
def practice_image(token: str, block: int, index: int, slot: str):
    with _db() as db:
        trial, _ = _practice_trial(_load(db, token), block, index)
    return _served_image(trial, slot)


@blueprint.post("/api/sessions/<token>/practice/<int:block>/responses")
def practice_response(token: str, block: int):
    body: ResponseBody = parse_body(ResponseBody)
    with _db() as db:
        with db.begin():
            session = _load(db, token)
            _require_running(session)
            trial, n = _practice_trial(session, block, body.trial_index)
            correct = _scored(trial, body)
            duplicate = _insert_response(db, session, body, trial, correct, "practice", block)
        with db.begin():
            session = _load(db, token)
            _settle_practice(db, session)
            stored = db.scalar(
                select(Response.correct).where(
                    Response.session_id == session.id,
                    Response.phase == "practice",
                    Response.block == block,
                    Response.trial_index == body.trial_index,
                )
            )
            return jsonify(
                stored=True,
                duplicate=duplicate,
                correct=bool(stored),
                block_complete=session.practice_blocks >= block,
                practice_passed=session.practice_passed,
                practice_failed=session.status == "failed",
            ), 200 if duplicate else 201


# --- main trials ----------------------------------------------------------------------


def _main_trials(session: ParticipantSession) -> list[Trial]:
    return _tasks()[session.task_id].trials


def _task_of(token: str) -> str:
    """The session's task; it never changes, so each process remembers it."""
    cache = current_app.extensions.setdefault("psychinterp_task_of", {})
    if token not in cache:
        with _db() as db:
            row = db.execute(
                select(ParticipantSession.task_id, ParticipantSession.status).where(ParticipantSession.token == token)
            ).one_or_none()
        if row is None:
            abort(404, "unknown session")
        if row.task_id is None:
            abort(409, f"session is {row.status}")
        if len(cache) > 100_000:
            cache.clear()
        cache[token] = row.task_id
    return cache[token]


def _shown_mac(token: str, index: int, moment_ms: int) -> str:
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, f"shown\x1f{token}\x1f{index}\x1f{moment_ms}".encode(), hashlib.sha256).hexdigest()[:32]


def shown_record(token: str, index: int, moment: datetime) -> str:
    """The server's signed record that it served main trial ``index`` to the session at ``moment``: the page
    sends it back with the answer, so a fetch costs no database write (a write per fetch doubled SQLite's
    commits and its latency under load) and no script can make one up."""
    moment_ms = int(moment.timestamp() * 1000)
    return f"{moment_ms}.{_shown_mac(token, index, moment_ms)}"


def _served_at(token: str, index: int, shown: str | None) -> datetime | None:
    """When the server served the trial, from a ``shown`` record it signed; None for a missing or forged one."""
    moment, _, mac = (shown or "").partition(".")
    if not moment.isdigit() or len(moment) > 15 or not hmac.compare_digest(mac, _shown_mac(token, index, int(moment))):
        return None
    return datetime.fromtimestamp(int(moment) / 1000, UTC)


@blueprint.get("/api/sessions/<token>/trials/<int:index>")
def trial(token: str, index: int):
    trials = _tasks()[_task_of(token)].trials
    if index >= len(trials):
        abort(404, f"trial index {index} out of range (task has {len(trials)})")
    shown = _trial_json(trials[index], index, len(trials), f"/api/sessions/{token}/trials/{index}/images")
    return jsonify({**shown, "shown": shown_record(token, index, utcnow())})


@blueprint.get("/api/sessions/<token>/trials/<int:index>/images/<slot>.png")
def trial_image(token: str, index: int, slot: str):
    trials = _tasks()[_task_of(token)].trials
    if index >= len(trials):
        abort(404, f"trial index {index} out of range (task has {len(trials)})")
    return _served_image(trials[index], slot)


@functools.cache
def _insert_or_ignore(dialect: str):
    """A cached INSERT ... ON CONFLICT DO NOTHING on the table (values are bound at execution)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    # RETURNING tells inserted from skipped on every driver (psycopg reports no rowcount here).
    return insert(Response.__table__).on_conflict_do_nothing().returning(Response.__table__.c.id)


def _insert_ignoring_duplicates(db: Session, values: dict[str, Any]) -> bool:
    """One statement; returns True when the row was already there (a retry)."""
    dialect = db.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):  # pragma: no cover - other databases take the portable path
        try:
            with db.begin_nested():
                db.add(Response(**values))
        except IntegrityError:
            return True
        return False
    result = db.connection().execute(_insert_or_ignore(dialect), {**values, "created_at": utcnow()})
    return result.first() is None


def _insert_response(
    db: Session,
    session: ParticipantSession,
    body: ResponseBody,
    trial: Trial,
    correct: bool,
    phase: str,
    block: int,
    fetched_at: datetime | None = None,
) -> bool:
    """Store one response; idempotent by (session, phase, block, trial index)."""
    return _insert_ignoring_duplicates(
        db,
        {
            "session_id": session.id,
            "phase": phase,
            "block": block,
            "trial_index": body.trial_index,
            "trial_id": trial.trial_id,
            "chosen_query": body.chosen_query,
            "confidence": body.confidence,
            "rt_ms": body.rt_ms,
            "correct": correct,
            "focus_lost": body.focus_lost,
            "fetched_at": fetched_at,
        },
    )


def _store_main(db: Session, session: ParticipantSession, body: ResponseBody, token: str) -> tuple[bool, bool]:
    trials = _main_trials(session)
    if body.trial_index >= len(trials):
        abort(400, f"trial_index {body.trial_index} out of range (task has {len(trials)})")
    trial = trials[body.trial_index]
    correct = _scored(trial, body)
    fetched_at = _check_shown(db, session.id, token, body)
    return _insert_response(db, session, body, trial, correct, "main", 0, fetched_at), correct


def _check_shown(db: Session, session_id: int, token: str, body: ResponseBody) -> datetime:
    """An answer counts only for a trial the server served (its signed ``shown``), after every trial before
    it was answered, and no sooner than the per-trial minimum after it was served (so a script must spend
    that time on each trial). Returns when the trial was served."""
    index = body.trial_index
    fetched_at = _served_at(token, index, body.shown)
    if fetched_at is None:
        raise Refusal(
            409,
            "fetch_first",
            f"trial {index} has no valid `shown`: GET /api/sessions/<token>/trials/{index} shows the trial, and "
            "its `shown` goes back with the answer",
        )
    earlier = db.scalar(
        select(func.count())
        .select_from(Response)
        .where(Response.session_id == session_id, Response.phase == "main", Response.trial_index < index)
    )
    if earlier < index:
        raise Refusal(
            409,
            "in_order",
            f"trial {index} was answered before {index - earlier} earlier trial(s): answer the trials in order",
        )
    minimum = _cfg().criteria.min_single_trial_s
    shown = (utcnow() - fetched_at).total_seconds()
    if shown < minimum:
        raise Refusal(
            425,
            "min_single_trial_s",
            f"trial {index} was answered {max(shown, 0):.1f} s after it was shown; this study takes an answer "
            f"after {minimum:g} s at the soonest: please look at each trial a little longer",
            retry_after_s=minimum - shown,
        )
    return fetched_at


@blueprint.post("/api/sessions/<token>/responses")
def post_response(token: str):
    body: ResponseBody = parse_body(ResponseBody)
    with _db() as db, db.begin():
        # The common case, a running session past practice, reads four columns instead of the whole row.
        lean = db.execute(
            select(
                ParticipantSession.id,
                ParticipantSession.task_id,
                ParticipantSession.status,
                ParticipantSession.reserved_until,
                ParticipantSession.practice_passed,
            ).where(ParticipantSession.token == token)
        ).one_or_none()
        if lean is None:
            abort(404, "unknown session")
        running = lean.status == "active" and not reservation_lapsed(lean.status, lean.reserved_until)
        if running and lean.practice_passed:
            session = lean
        else:
            session = _load(db, token)
            _require_running(session)
            _settle_practice(db, session)
            if not session.practice_passed:
                abort(409, "practice is not finished")
        duplicate, correct = _store_main(db, session, body, token)
    payload: dict[str, Any] = {"stored": True, "duplicate": duplicate}
    if _cfg().feedback:
        payload["correct"] = correct
    return jsonify(payload), 200 if duplicate else 201


@blueprint.post("/api/sessions/<token>/responses/batch")
def post_responses(token: str):
    """For ``navigator.sendBeacon`` on page hide: every queued response in one request."""
    body: ResponseBatch = parse_body(ResponseBatch, beacon=True)
    with _db() as db, db.begin():
        session = _load(db, token)
        _require_running(session)
        _settle_practice(db, session)
        if not session.practice_passed:
            abort(409, "practice is not finished")
        new = 0
        for position, response in enumerate(body.responses):
            try:
                new += not _store_main(db, session, response, token)[0]
            except Refusal as exc:  # say which item; the whole batch is rolled back
                raise Refusal(
                    exc.code, exc.rule, f"responses.{position}: {exc.description}", exc.retry_after_s
                ) from None
            except HTTPException as exc:
                abort(exc.code, f"responses.{position}: {exc.description}")
    return jsonify(stored=len(body.responses), new=new), 200


@blueprint.post("/api/sessions/<token>/events")
def post_events(token: str):
    body: EventBatch = parse_body(EventBatch, beacon=True)
    with _db() as db, db.begin():
        session = _load(db, token)
        _require_running(session)  # nothing is added to a session that has ended
        # One conditional UPDATE counts and checks at once: concurrent batches cannot both pass the cap.
        cap, n = _cfg().max_events_per_session, len(body.events)
        counted = db.execute(
            update(ParticipantSession)
            .where(ParticipantSession.id == session.id, ParticipantSession.events_stored + n <= cap)
            .values(events_stored=ParticipantSession.events_stored + n)
            .returning(ParticipantSession.events_stored)
        ).first()
        if counted is None:
            db.refresh(session, ["events_stored"])
            abort(409, f"this session has stored {session.events_stored} events, the most it keeps is {cap}")
        db.add_all(
            SessionEvent(session_id=session.id, kind=e.kind, client_ms=e.client_ms, detail=e.detail)
            for e in body.events
        )
    return jsonify(stored=len(body.events)), 201


@blueprint.post("/api/sessions/<token>/feedback")
def post_feedback(token: str):
    body: FeedbackBody = parse_body(FeedbackBody)
    with _db() as db, db.begin():
        session = _load(db, token)
        _require_running(session)  # feedback comes before completion, as the page sends it
        session.feedback = body.text
    return jsonify(stored=True), 200


# --- completion -----------------------------------------------------------------------


# What the end page says, in plain words, for each way a session can end (the server's failure_reason).
ENDINGS = {
    "completed": "You have completed the study.",
    "practice": "The practice trials were not passed in the tries the study allows, so the session ended before "
    "the main trials.",
    "attention": "The study includes a few check trials whose answer is plain to anyone who looks at them "
    "carefully; too many of them were answered wrongly, so the answers cannot be used.",
    "timing": "The answers came faster than anyone could read the instructions and look at each trial, so "
    "they cannot be used.",
}


def _code_note(session: ParticipantSession) -> str:
    if session.completion_code is None:
        return "There is no code to submit: please return the study on the platform."
    if session.status == "completed":
        return "Submit this code on the platform to be paid:"
    return "Submit this code on the platform: it tells the researchers that this session ended early."


def _completion(session: ParticipantSession) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "status": session.status,
        "failure_reason": session.failure_reason,
        "message": ENDINGS["completed"]
        if session.status == "completed"
        else ENDINGS.get(session.failure_reason, "The session ended before the end of the study."),
        "code_note": _code_note(session),
        "completion_code": session.completion_code,
        "redirect_url": None,
        "submit_url": None,
        "submit_fields": None,
    }
    return {**payload, **PLATFORMS[session.platform].completion(session, _cfg())}


def _issue_code(session: ParticipantSession, passed: bool) -> str:
    return PLATFORMS[session.platform].completion_code(session, passed, _cfg())


@blueprint.post("/api/sessions/<token>/complete")
def complete(token: str):
    with _db() as db, db.begin():
        session = _load(db, token)
        if session.status in ("completed", "failed"):
            if session.completion_code is None:  # failed in practice: it ends here
                session.completion_code = _issue_code(session, passed=False)
            return jsonify(_completion(session))
        _require_running(session)
        n_trials = len(_main_trials(session))
        missing = n_trials - _count(db, session, "main")
        if missing:
            abort(409, f"{missing} trial(s) still unanswered")
        # The server's own checks at completion: catch trials, and the minimum times of its criteria (a
        # script that answers in a second gets the failed code, never the pass code, and no place on a
        # payment list). The other criteria are for the experimenter.
        session.completed_at = utcnow()
        summary = session_summary(session, _main_trials(session), _paradigm())
        criteria = _cfg().criteria
        attentive = summary.catch_accuracy is None or summary.catch_accuracy >= criteria.min_catch_accuracy
        short = too_fast(summary, criteria)
        passed = attentive and not short
        session.status = "completed" if passed else "failed"
        session.failure_reason = None if passed else ("attention" if not attentive else "timing")
        session.completion_code = _issue_code(session, passed)
        return jsonify(_completion(session))
