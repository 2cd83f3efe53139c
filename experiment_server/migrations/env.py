"""Alembic environment: runs on the connection that experiment_server.migrate hands over."""

from alembic import context

from experiment_server.db import Base

connection = context.config.attributes["connection"]
# render_as_batch: SQLite can only change a table by copying it, which batch mode does.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
