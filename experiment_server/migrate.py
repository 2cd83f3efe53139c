"""Schema migrations (Alembic): bring a database to the current schema, safely from several workers."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from contracts.errors import PsychinterpError

MIGRATIONS = Path(__file__).parent / "migrations"


class LegacyDatabaseError(PsychinterpError):
    """A database made before migrations existed: it cannot be upgraded in place."""


_LOCK_ID = 727_301_2023  # any constant: serialises migrations of several workers on PostgreSQL


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate to ``revision``; concurrent callers on PostgreSQL wait for each other."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})
        tables = set(inspect(conn).get_table_names())
        if "participant_sessions" in tables and "alembic_version" not in tables:
            raise LegacyDatabaseError(
                f"database {engine.url.render_as_string(hide_password=True)} was made by a pre-release of "
                "psychinterp without migrations: export its responses with that version, then use a new database"
            )
        command.upgrade(alembic_config(conn), revision)


def new_revision(message: str) -> Path:
    """Autogenerate the next migration from the models in db.py (for maintainers).

    Compares the models with a scratch SQLite database at the current head; review the
    generated file before committing it.
    """
    import tempfile

    from experiment_server.db import make_engine

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/scratch.db")
        upgrade(engine)
        with engine.begin() as conn:
            script = command.revision(alembic_config(conn), message=message, autogenerate=True)
        engine.dispose()
    return Path(script.path)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "revision":
        sys.exit('usage: python -m experiment_server.migrate revision "what changed"')
    print(new_revision(sys.argv[2]))
