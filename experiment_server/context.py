"""What every blueprint reads from the running app: the config, the bundle, a database session."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import current_app
from sqlalchemy.orm import Session

from contracts.bundle import Bundle
from contracts.paradigms import Paradigm, paradigm_named
from experiment_server.config import ServerConfig
from experiment_server.db import utcnow


def cfg() -> ServerConfig:
    return current_app.config["PSYCHINTERP"]


def bundle() -> Bundle:
    return current_app.extensions["psychinterp_bundle"]


def paradigm() -> Paradigm:
    """The bundle's paradigm: what its trials ask and how responses are scored."""
    return paradigm_named(bundle().manifest.paradigm)


def db() -> Session:
    return current_app.extensions["psychinterp_db"]()


def as_utc(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def reservation_lapsed(status: str, reserved_until: datetime | None, now: datetime | None = None) -> bool:
    """An active session whose reservation has run out (it no longer holds its task)."""
    return status == "active" and as_utc(reserved_until) < (now or utcnow())
