"""Participant pages and API: start a session, fetch trials, post responses, complete."""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Literal

from flask import Blueprint, abort, current_app, jsonify, render_template, request, send_file
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from experiment_server.db import ParticipantSession, Response, utcnow
from stimuli.bundle import Bundle, Task

blueprint = Blueprint("participant", __name__)


class StartBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platform: Literal["direct"] = "direct"


class ResponseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trial_index: int = Field(ge=0)
    chosen_query: Literal[0, 1]
    confidence: Literal[1, 2, 3]
    rt_ms: float = Field(ge=0, le=24 * 3600 * 1000)


def _bundle() -> Bundle:
    return current_app.extensions["psychinterp_bundle"]


def _db() -> Session:
    return current_app.extensions["psychinterp_db"]()


def _body(model: type[BaseModel]) -> BaseModel:
    payload = request.get_json(silent=True)
    if payload is None:
        abort(400, "request body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        abort(400, detail)


def _task(task_id: str) -> Task:
    return next(t for t in _bundle().manifest.tasks if t.task_id == task_id)


def _session_or_404(db: Session, token: str) -> ParticipantSession:
    found = db.scalar(select(ParticipantSession).where(ParticipantSession.token == token))
    if found is None:
        abort(404, "unknown session")
    return found


@blueprint.get("/")
def index():
    return render_template("index.html", title=_bundle().manifest.title or _bundle().manifest.study_id)


@blueprint.get("/images/<sha>.png")
def image(sha: str):
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        abort(404)
    path = _bundle().image_path(sha)
    if not path.is_file():
        abort(404)
    return send_file(path, mimetype="image/png", max_age=86400)


@blueprint.post("/api/sessions")
def start_session():
    body = _body(StartBody)
    manifest = _bundle().manifest
    with _db() as db, db.begin():
        counts = Counter(
            dict(
                db.execute(
                    select(ParticipantSession.task_id, func.count())
                    .where(ParticipantSession.study_id == manifest.study_id)
                    .group_by(ParticipantSession.task_id)
                ).all()
            )
        )
        task = min(manifest.tasks, key=lambda t: (counts[t.task_id], t.task_id))
        session = ParticipantSession(
            token=secrets.token_urlsafe(32),
            study_id=manifest.study_id,
            task_id=task.task_id,
            participant_id=f"direct-{secrets.token_hex(8)}",
            platform=body.platform,
        )
        db.add(session)
    return jsonify(token=session.token, n_trials=len(task.trials), next_trial=0), 201


@blueprint.get("/api/sessions/<token>")
def session_state(token: str):
    with _db() as db:
        session = _session_or_404(db, token)
        answered = {r.trial_index for r in session.responses}
        n_trials = len(_task(session.task_id).trials)
        next_trial = next((i for i in range(n_trials) if i not in answered), None)
        return jsonify(n_trials=n_trials, next_trial=next_trial, completed=session.completed_at is not None)


@blueprint.get("/api/sessions/<token>/trials/<int:index>")
def trial(token: str, index: int):
    with _db() as db:
        session = _session_or_404(db, token)
    trials = _task(session.task_id).trials
    if index >= len(trials):
        abort(404, f"trial index {index} out of range (task has {len(trials)})")
    t = trials[index]

    def urls(hashes: list[str] | tuple[str, ...]) -> list[str]:
        return [f"/images/{h}.png" for h in hashes]

    # Nothing here says which query is the more activating one.
    return jsonify(
        trial_index=index,
        n_trials=len(trials),
        condition=t.condition,
        max_side=t.max_side,
        references={"min": urls(t.references.min), "max": urls(t.references.max)},
        queries=urls(t.queries),
    )


@blueprint.post("/api/sessions/<token>/responses")
def post_response(token: str):
    body = _body(ResponseBody)
    with _db() as db:
        session = _session_or_404(db, token)
        if session.completed_at is not None:
            abort(409, "session already completed")
        trials = _task(session.task_id).trials
        if body.trial_index >= len(trials):
            abort(400, f"trial_index {body.trial_index} out of range (task has {len(trials)})")
        trial_id = trials[body.trial_index].trial_id
        answer = _bundle().answer_key.answers[trial_id]
        db.add(
            Response(
                session_id=session.id,
                trial_index=body.trial_index,
                trial_id=trial_id,
                chosen_query=body.chosen_query,
                confidence=body.confidence,
                rt_ms=body.rt_ms,
                correct=body.chosen_query == answer.max_query,
            )
        )
        try:
            db.commit()
        except IntegrityError:
            # Idempotent by (session, trial index): a retry of a stored response is acknowledged.
            db.rollback()
            return jsonify(stored=True, duplicate=True), 200
    return jsonify(stored=True, duplicate=False), 201


@blueprint.post("/api/sessions/<token>/complete")
def complete(token: str):
    with _db() as db, db.begin():
        session = _session_or_404(db, token)
        n_trials = len(_task(session.task_id).trials)
        n_answered = db.scalar(select(func.count()).select_from(Response).where(Response.session_id == session.id))
        if n_answered < n_trials:
            abort(409, f"{n_trials - n_answered} trial(s) still unanswered")
        if session.completion_code is None:
            session.completion_code = secrets.token_hex(4).upper()
            session.completed_at = utcnow()
        code = session.completion_code
    return jsonify(completion_code=code)
