"""The same server code path against the real PostgreSQL server."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from experiment_server.db import Base

URL = os.environ.get("PSYCHINTERP_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url():
    engine = create_engine(URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except OperationalError as exc:
        if os.environ.get("CI"):
            raise  # CI has PostgreSQL; failing to reach it is a failure, not a skip
        pytest.skip(f"PostgreSQL is not reachable at {URL}: {exc.orig}")
    Base.metadata.drop_all(engine)
    yield URL
    Base.metadata.drop_all(engine)
    engine.dispose()


def test_session_responses_and_export_on_postgres(pg_url, tiny_bundle_dir, tmp_path):
    from experiment_server import create_app
    from experiment_server.export import export_csv

    app = create_app({"bundle_dir": tiny_bundle_dir, "database_url": pg_url})
    client = app.test_client()
    session = client.post("/api/sessions", json={}).get_json()
    for index in range(session["n_trials"]):
        body = {"trial_index": index, "chosen_query": 1, "confidence": 2, "rt_ms": 1000.0}
        assert client.post(f"/api/sessions/{session['token']}/responses", json=body).status_code == 201
        assert client.post(f"/api/sessions/{session['token']}/responses", json=body).status_code == 200
    assert client.post(f"/api/sessions/{session['token']}/complete").status_code == 200
    n = export_csv(app.extensions["psychinterp_bundle"], app.extensions["psychinterp_db"], tmp_path / "r.csv")
    assert n == session["n_trials"]
    app.extensions["psychinterp_db"].kw["bind"].dispose()
