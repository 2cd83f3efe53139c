"""The dashboard's panels, each one SQL query over the study's sessions or responses (never every row in Python).

- ``task_progress``: per task, sessions reserved, in progress, completed, excluded, expired;
- ``funnel``: how many sessions reached consent, instructions, practice, the main trials and a completion;
- ``over_time``: per hour, responses and completions; catch-trial accuracy; median session minutes;
- ``feedback``: participants' free text, newest first, with their row.

Hours are bucketed in the database (SQLite ``strftime``, PostgreSQL ``date_trunc``).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.orm import Session

from contracts.bundle import Manifest
from experiment_server.context import as_utc
from experiment_server.db import ParticipantSession, Response, utcnow

LIVE_STATES = ("reserved", "in progress", "completed", "excluded", "expired")
FUNNEL_STAGES = (
    ("started", ParticipantSession.created_at),
    ("consented", ParticipantSession.consented_at),
    ("read the instructions", ParticipantSession.instructions_at),
    ("practised", ParticipantSession.practice_at),
    ("main trials", ParticipantSession.main_at),
)


def live_state(now: datetime):
    """The state a session shows on the dashboard, as a SQL expression (the participants table's words)."""
    answered = exists(select(Response.id).where(Response.session_id == ParticipantSession.id))
    return case(
        (
            ParticipantSession.status == "active",
            case(
                (ParticipantSession.reserved_until < now, "expired"),
                # A session in its instructions or practice is at work, though nothing is answered yet.
                (or_(answered, ParticipantSession.instructions_at.is_not(None)), "in progress"),
                else_="reserved",
            ),
        ),
        (and_(ParticipantSession.status == "completed", ParticipantSession.excluded_by_experimenter), "excluded"),
        (ParticipantSession.status == "failed", "excluded"),
        else_=ParticipantSession.status,
    )


def task_progress(db: Session, manifest: Manifest, now: datetime) -> list[dict[str, Any]]:
    state = live_state(now).label("state")
    query = (
        select(ParticipantSession.task_id, state, func.count())
        .where(ParticipantSession.study_id == manifest.study_id, ParticipantSession.task_id.is_not(None))
        .group_by(ParticipantSession.task_id, state)
    )
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for task_id, name, n in db.execute(query):
        counts[task_id][name] = n
    return [
        {
            "task_id": task.task_id,
            "condition": task.condition,
            "model_id": task.model_id,
            "n_trials": len(task.trials),
            **{k: counts[task.task_id].get(k, 0) for k in LIVE_STATES},
        }
        for task in manifest.tasks
    ]


def funnel(db: Session, study_id: str) -> list[dict[str, Any]]:
    """Sessions at each stage, and how many of the previous stage's did not get there."""
    columns = [func.count(column) for _, column in FUNNEL_STAGES]
    completed = func.count(case((ParticipantSession.status == "completed", 1)))
    failed = func.count(case((ParticipantSession.status == "failed", 1)))
    row = db.execute(select(*columns, completed, failed).where(ParticipantSession.study_id == study_id)).one()
    names = [name for name, _ in FUNNEL_STAGES] + ["completed"]
    reached = list(row[: len(names)])
    stages = []
    for k, (name, n) in enumerate(zip(names, reached, strict=True)):
        before = reached[k - 1] if k else n
        stages.append(
            {
                "stage": name,
                "sessions": int(n),
                "dropped": int(before - n),
                "dropped_share": (before - n) / before if before else 0.0,
            }
        )
    stages[-1]["failed_by_server"] = int(row[-1])
    return stages


def _hour(db: Session, column):
    if db.get_bind().dialect.name == "postgresql":
        return func.to_char(func.date_trunc("hour", column), "YYYY-MM-DD HH24:00")
    return func.strftime("%Y-%m-%d %H:00", column)


# An hour is summed once it is over (with a margin for a response stamped just before the hour and
# committed just after); later refreshes read only the responses since.
CLOSED_AFTER = timedelta(minutes=2)


def _hour_key(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:00")


def _hourly(db: Session, manifest: Manifest, since: datetime | None) -> dict[str, dict[str, Any]]:
    """Per hour from ``since`` on: main responses, catch trials and catch accuracy, completions and their median."""
    study = ParticipantSession.study_id == manifest.study_id
    hour = _hour(db, Response.created_at).label("hour")
    catch_ids = [t.trial_id for task in manifest.tasks for t in task.trials if t.kind == "catch"]
    is_catch = Response.trial_id.in_(catch_ids) if catch_ids else False
    sessions = select(ParticipantSession.id).where(study)
    query = select(
        hour,
        func.count(),
        func.count(case((is_catch, 1))),
        func.sum(case((and_(is_catch, Response.correct), 1), else_=0)),
    ).group_by(hour)
    if since is None:
        query = query.where(Response.phase == "main", Response.session_id.in_(sessions))
    else:
        # SQLite, without statistics, would read the responses through their session index; "+ 0"
        # makes it find the few since the last summed hour through the time index. PostgreSQL plans
        # from its statistics and needs no hint.
        session_id = Response.session_id + 0 if db.get_bind().dialect.name == "sqlite" else Response.session_id
        query = query.where(Response.phase == "main", Response.created_at >= since, session_id.in_(sessions))
    rows: dict[str, dict[str, Any]] = defaultdict(dict)
    for key, n, n_catch, catch_right in db.execute(query):
        rows[key] |= {"responses": n, "catch_trials": n_catch, "catch_right": int(catch_right or 0)}
    done = _hour(db, ParticipantSession.completed_at).label("hour")
    completions = select(done, ParticipantSession.consented_at, ParticipantSession.completed_at).where(
        study, ParticipantSession.status == "completed", ParticipantSession.consented_at.is_not(None)
    )
    if since is not None:
        completions = completions.where(ParticipantSession.completed_at >= since)
    for key, start, end in db.execute(completions):
        rows[key].setdefault("minutes", []).append((as_utc(end) - as_utc(start)).total_seconds() / 60)
    return rows


def over_time(
    db: Session, manifest: Manifest, cache: dict | None = None, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Per hour (UTC): main responses, completions, catch-trial accuracy and the median session length.

    With a ``cache`` (a dict kept between calls, e.g. in the app), hours that are over are summed
    once: a refresh reads only the responses of the hours since.
    """
    now = now or utcnow()
    horizon = (now - CLOSED_AFTER).replace(minute=0, second=0, microsecond=0)
    entry = cache.setdefault(manifest.study_id, {"through": None, "rows": {}}) if cache is not None else None
    fresh = _hourly(db, manifest, entry["through"] if entry else None)
    rows = dict(entry["rows"]) if entry else {}
    rows |= fresh
    if entry is not None:
        closed = _hour_key(horizon)
        entry["rows"] |= {key: row for key, row in fresh.items() if key < closed}
        entry["through"] = horizon
    series = []
    for key in sorted(rows):
        row = rows[key]
        minutes = row.get("minutes", [])
        n_catch = row.get("catch_trials", 0)
        series.append(
            {
                "hour": key,
                "responses": row.get("responses", 0),
                "completions": len(minutes),
                "catch_trials": n_catch,
                "catch_accuracy": row["catch_right"] / n_catch if n_catch else None,
                "median_minutes": statistics.median(minutes) if minutes else None,
            }
        )
    return series


def feedback(db: Session, study_id: str, limit: int = 100) -> list[dict[str, Any]]:
    rows = db.execute(
        select(
            ParticipantSession.id,
            ParticipantSession.participant_id,
            ParticipantSession.task_id,
            ParticipantSession.status,
            ParticipantSession.completed_at,
            ParticipantSession.feedback,
        )
        .where(ParticipantSession.study_id == study_id, ParticipantSession.feedback.is_not(None))
        .order_by(ParticipantSession.id.desc())
        .limit(limit)
    )
    return [
        {"id": i, "participant_id": p, "task_id": t, "status": s, "completed_at": c, "feedback": f}
        for i, p, t, s, c, f in rows
    ]


def count_sessions(db: Session, study_id: str) -> int:
    return db.scalar(select(func.count()).where(ParticipantSession.study_id == study_id))


# A bar is never wider than this share of the chart: one hour of data is a bar, not a solid block.
MIN_SLOTS = 24


def chart_points(values: Iterable[float | None], height: float = 60.0, width: float = 600.0) -> list[dict]:
    """Bars for an inline SVG chart: each value's x, width and height, scaled to the largest (at most
    1/MIN_SLOTS of the width each, from the left)."""
    values = list(values)
    top = max((v for v in values if v is not None), default=0) or 1
    step = width / max(len(values), MIN_SLOTS)
    return [
        {"x": round(i * step, 2), "w": round(max(step - 1, 1), 2), "h": round(height * (v or 0) / top, 2), "v": v}
        for i, v in enumerate(values)
    ]


def cell_progress(db: Session, study_id: str, allocation) -> dict[str, Any] | None:
    """Per model x condition: participants, half-width against the target, what is still needed, and
    whether the study stopped (None when assignment is not adaptive: no stopping rule, balanced)."""
    import math

    from experiment_server.allocation import cell_done
    from experiment_server.assignment import cell_states, task_fill
    from experiment_server.db import Study

    if not allocation.adaptive:
        return None
    target, top = allocation.target, allocation.max_fill
    trials = allocation.trials_per_task
    rows = []
    for cell in cell_states(db, study_id, allocation, task_fill(db, study_id)):
        precision = cell.precision
        done = cell_done(cell, target, allocation.min_fill, top)
        needed = precision.responses_needed(target) if precision is not None and target is not None else None
        per_participant = max(trials[t] for t in cell.tasks)
        more = (
            None
            if needed is None or math.isinf(needed)
            else max(math.ceil((needed - precision.responses) / per_participant), 0)
        )
        if needed is not None and math.isinf(needed):
            state = f"unreachable: its units' spread alone gives ±{100 * precision.floor:.2f} pp; stops at the maximum"
        elif top is not None and more is not None and not done and cell.fill + more > top:
            state = f"unreachable within {top} participants (needs about {cell.fill + more}); stops at the maximum"
        else:
            state = f"closed: {done}" if done else "open"
        rows.append(
            {
                "cell": cell.name,
                "participants": cell.fill,
                "responses": precision.responses if precision is not None else 0,
                "half_width_pp": None if precision is None else 100 * precision.half_width,
                "floor_pp": None if precision is None else 100 * precision.floor,
                "target_pp": None if target is None else 100 * target,
                "more_participants": more,
                "more_responses": None if more is None else more * per_participant,
                "state": state,
            }
        )
    study = db.get(Study, study_id)
    stopped = None if study is None or study.stopped_at is None else (study.stopped_at, study.stop_reason)
    return {"strategy": allocation.strategy.name, "cells": rows, "stopped": stopped}
