"""Atomic, balanced task assignment with expiring reservations."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from experiment_server.db import ParticipantSession, Study

# Sessions that hold their task: valid completions, and running sessions whose reservation is live.
FILLING = ("active", "completed")


def least_filled(task_ids: Sequence[str], fill: Mapping[str, int]) -> str:
    """The task with the fewest valid completions plus live reservations; ties go to bundle order."""
    order = {t: i for i, t in enumerate(task_ids)}
    return min(task_ids, key=lambda t: (fill.get(t, 0), order[t]))


def lock_study(db: Session, study_id: str) -> None:
    """Take the study row's write lock (PostgreSQL row lock; SQLite's database write lock) until commit.

    It is the transaction's first statement, so on SQLite the snapshot that the
    following reads see starts after the lock is held.
    """
    db.execute(update(Study).where(Study.study_id == study_id).values(assignments=Study.assignments + 1))


def expire_reservations(db: Session, study_id: str, now: datetime) -> int:
    result = db.execute(
        update(ParticipantSession)
        .where(
            ParticipantSession.study_id == study_id,
            ParticipantSession.status == "active",
            ParticipantSession.reserved_until < now,
        )
        .values(status="expired")
    )
    return result.rowcount


def task_fill(db: Session, study_id: str) -> Counter:
    rows = db.execute(
        select(ParticipantSession.task_id, func.count())
        .where(ParticipantSession.study_id == study_id, ParticipantSession.status.in_(FILLING))
        .group_by(ParticipantSession.task_id)
    ).all()
    return Counter({task: n for task, n in rows if task is not None})


def choose_task(db: Session, study_id: str, task_ids: Sequence[str], now: datetime) -> str:
    """Inside the caller's transaction: lock, release expired reservations, pick the least-filled task."""
    lock_study(db, study_id)
    expire_reservations(db, study_id, now)
    return least_filled(task_ids, task_fill(db, study_id))


def reservation_end(now: datetime, minutes: float) -> datetime:
    return now + timedelta(minutes=minutes)
