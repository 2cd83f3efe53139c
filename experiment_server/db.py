"""Database schema and engine setup (SQLite by default, PostgreSQL for multi-worker deploys).

The schema is created and changed only by the Alembic migrations in
``experiment_server/migrations`` (see :mod:`experiment_server.migrate`).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Study(Base):
    """One row per served study; assignment takes this row's write lock to serialise arrivals."""

    __tablename__ = "studies"

    study_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    assignments: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The exclusion criteria the server last ran with (JSON), so that `analyze --db` uses the same.
    exclusion_criteria: Mapped[str | None] = mapped_column(Text)
    # The build of the bundle its sessions were served (contracts.bundle.Bundle.fingerprint).
    bundle_fingerprint: Mapped[str | None] = mapped_column(String(64))
    # When every cell met the stopping rule: no new participants from then on (sessions running go on).
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stop_reason: Mapped[str | None] = mapped_column(Text)


# Session status: active (reserved, running), completed (valid, counts toward filling), failed
# (attention or practice checks), declined (consent), expired (reservation ran out).
SESSION_STATUSES = ("active", "completed", "failed", "declined", "expired")


class ParticipantSession(Base):
    __tablename__ = "participant_sessions"
    __table_args__ = (UniqueConstraint("study_id", "participant_id", name="uq_session_study_participant"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    study_id: Mapped[str] = mapped_column(ForeignKey("studies.study_id"), index=True)
    task_id: Mapped[str | None] = mapped_column(String(200), index=True)
    participant_id: Mapped[str] = mapped_column(String(200))
    platform: Mapped[str] = mapped_column(String(20))
    platform_study_id: Mapped[str | None] = mapped_column(String(200))  # Prolific STUDY_ID
    platform_session_id: Mapped[str | None] = mapped_column(String(200))  # Prolific SESSION_ID
    assignment_id: Mapped[str | None] = mapped_column(String(200))  # MTurk
    hit_id: Mapped[str | None] = mapped_column(String(200))
    turk_submit_to: Mapped[str | None] = mapped_column(String(300))
    status: Mapped[str] = mapped_column(String(20), default="active", index=True)
    failure_reason: Mapped[str | None] = mapped_column(String(40))
    excluded_by_experimenter: Mapped[bool] = mapped_column(Boolean, default=False)
    exclusion_reason: Mapped[str | None] = mapped_column(String(500))  # the experimenter's note
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    reserved_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    consent_version: Mapped[str | None] = mapped_column(String(64))
    consented_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    instructions_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    practice_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    main_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    practice_blocks: Mapped[int] = mapped_column(Integer, default=0)
    practice_passed: Mapped[bool] = mapped_column(Boolean, default=False)
    completion_code: Mapped[str | None] = mapped_column(String(64))
    window_width: Mapped[int | None] = mapped_column(Integer)
    window_height: Mapped[int | None] = mapped_column(Integer)
    device_pixel_ratio: Mapped[float | None] = mapped_column(Float)
    user_agent: Mapped[str | None] = mapped_column(String(400))
    feedback: Mapped[str | None] = mapped_column(Text)
    # Events stored so far: the cap is one conditional UPDATE of this count (race-free on every engine).
    events_stored: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    responses: Mapped[list[Response]] = relationship(back_populates="session", order_by="Response.id")
    events: Mapped[list[SessionEvent]] = relationship(back_populates="session", order_by="SessionEvent.id")


class WorkerGroupMember(Base):
    """A worker's one study within a group of studies: the database refuses a second."""

    __tablename__ = "worker_group_members"
    __table_args__ = (UniqueConstraint("study_group", "participant_id", name="uq_group_participant"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    study_group: Mapped[str] = mapped_column(String(200))
    participant_id: Mapped[str] = mapped_column(String(200))
    study_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Response(Base):
    __tablename__ = "responses"
    __table_args__ = (
        UniqueConstraint("session_id", "phase", "block", "trial_index", name="uq_response_session_trial"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("participant_sessions.id"), index=True)
    phase: Mapped[str] = mapped_column(String(10), default="main")  # main or practice
    block: Mapped[int] = mapped_column(Integer, default=0)  # practice block (1-based); 0 for main trials
    trial_index: Mapped[int] = mapped_column(Integer)
    trial_id: Mapped[str] = mapped_column(String(300))
    chosen_query: Mapped[int] = mapped_column(Integer)
    confidence: Mapped[int] = mapped_column(Integer)
    rt_ms: Mapped[float]
    correct: Mapped[bool]
    focus_lost: Mapped[int] = mapped_column(Integer, default=0)  # blur events while the trial was shown
    # When the server served the main trial that was answered (from the answer's signed `shown`).
    fetched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)

    session: Mapped[ParticipantSession] = relationship(back_populates="responses")


class SessionEvent(Base):
    """Focus, blur, fullscreen exits, resizes: what happened around the trials."""

    __tablename__ = "session_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("participant_sessions.id"), index=True)
    kind: Mapped[str] = mapped_column(String(30))
    client_ms: Mapped[float]  # milliseconds since the page loaded (performance.now())
    detail: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    session: Mapped[ParticipantSession] = relationship(back_populates="events")


class Admin(Base):
    __tablename__ = "admins"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # In every login cookie; logout and a new password bump it, so every older cookie stops working.
    session_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class AppSetting(Base):
    """Server-wide values that every worker must share (never a secret: database copies are not secrets)."""

    __tablename__ = "app_settings"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(500))


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers run during writes; FULL sync makes an acknowledged commit survive power loss.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _serialise_sqlite_writers(engine: Engine) -> None:
    """Writer threads of one process queue on a lock instead of SQLite's sleeping busy handler.

    SQLite allows one writer at a time; a second one polls with growing sleeps
    (1, 2, 5, 10 ms, ...), which shows up as tail latency under load. A lock taken
    before a transaction's first write, and released once its commit or rollback
    has returned, hands the turn over at once. Other processes are still kept out
    by SQLite's own lock.
    """
    lock = threading.Lock()
    holders: set[int] = set()  # ids of the DBAPI connections whose transaction holds the lock
    dialect = engine.dialect

    def before_write(conn, _cursor, statement, *_args) -> None:
        dbapi = id(conn.connection.dbapi_connection)
        if dbapi not in holders and statement.lstrip()[:7].upper().startswith(_WRITES):
            lock.acquire()
            holders.add(dbapi)

    def ending(original):
        def end(connection) -> None:
            # SQLAlchemy passes its pool's proxy here; the hooks above saw the DBAPI connection inside it.
            key = id(getattr(connection, "dbapi_connection", connection))
            try:
                original(connection)
            finally:
                if key in holders:
                    holders.discard(key)
                    lock.release()

        return end

    # The dialect's commit and rollback return only after SQLite has finished (the fsync included).
    dialect.do_commit = ending(dialect.do_commit)
    dialect.do_rollback = ending(dialect.do_rollback)
    event.listen(engine, "before_cursor_execute", before_write)


DEFAULT_DATABASE_URL = "sqlite:///psychinterp.db"  # in the folder the server is started from


def make_engine(url: str | None = None) -> Engine:
    url = url or DEFAULT_DATABASE_URL
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        _serialise_sqlite_writers(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    return engine


def make_session_factory(url: str | None = None) -> sessionmaker:
    return sessionmaker(bind=make_engine(url), expire_on_commit=False)
