"""The same server code paths against the real PostgreSQL server on 127.0.0.1:5432."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from contracts.bundle import load_bundle
from psychinterp.scripted import run_session
from tests.server_helpers import (
    POSTGRES_URL,
    SCRIPTED_CRITERIA,
    answer_body,
    correct_choice,
    free_port,
    fresh_postgres,
    fresh_redis,
    pass_practice,
    start,
    wait_until_serving,
    wipe_postgres,
)

URL = POSTGRES_URL

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_url():
    engine = fresh_postgres(URL)
    yield URL
    wipe_postgres(engine)
    engine.dispose()


def test_migrations_run_once_when_workers_start_together(pg_url):
    from experiment_server.db import make_engine
    from experiment_server.migrate import current_revision, head_revision, upgrade

    engines = [make_engine(pg_url) for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(upgrade, engines))  # the advisory lock serialises them; the later ones find head
    assert current_revision(engines[0]) == head_revision()
    for engine in engines:
        engine.dispose()


def test_sessions_assignment_duplicates_and_export_on_postgres(pg_url, tiny_bundle_dir, tmp_path):
    from experiment_server import create_app
    from experiment_server.db import ParticipantSession
    from experiment_server.export import export_csv

    bundle = load_bundle(tiny_bundle_dir)
    app = create_app(
        {"bundle_dir": tiny_bundle_dir, "database_url": pg_url, "study_group": "g", "criteria": SCRIPTED_CRITERIA}
    )
    n_tasks = len(bundle.manifest.tasks)
    barrier = threading.Barrier(2 * n_tasks)

    def arrive(i):
        client = app.test_client()
        barrier.wait()
        return start(client, platform="prolific", participant_id=f"{i:024x}")["token"]

    with ThreadPoolExecutor(2 * n_tasks) as pool:
        tokens = list(pool.map(arrive, range(2 * n_tasks)))
    with app.extensions["psychinterp_db"]() as db:
        tasks = db.scalars(select(ParticipantSession.task_id)).all()
    assert sorted(tasks.count(t) for t in set(tasks)) == [2] * n_tasks

    client = app.test_client()
    assert start(client, expect=409, platform="prolific", participant_id=f"{0:024x}")["detail"]
    token = tokens[0]
    pass_practice(client, bundle, token)
    state = client.get(f"/api/sessions/{token}").get_json()
    for i in range(state["n_trials"]):
        trial = client.get(f"/api/sessions/{token}/trials/{i}").get_json()
        body = answer_body(i, correct_choice(bundle, trial, client), shown=trial["shown"])
        assert client.post(f"/api/sessions/{token}/responses", json=body).status_code == 201
        assert client.post(f"/api/sessions/{token}/responses", json=body).status_code == 200
    assert client.post(f"/api/sessions/{token}/complete").get_json()["status"] == "completed"
    done = run_session(
        client,
        lambda t: (correct_choice(bundle, t, client), 2),
        platform={"platform": "prolific", "participant_id": "f" * 24},
    )
    assert done["status"] == "completed"
    n = export_csv(bundle, app.extensions["psychinterp_db"], tmp_path / "r.csv")
    assert n == 2 * (state["n_trials"] + state["practice_trials"])
    app.extensions["psychinterp_db"].kw["bind"].dispose()


@pytest.mark.slow
def test_gunicorn_workers_on_postgres_as_docs_deploy_md_describes(pg_url, tiny_bundle_dir, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import httpx

    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "psychinterp"), "db", "upgrade", "--db", pg_url], check=True, capture_output=True)
    port = free_port()
    import yaml

    settings = {"bundle_dir": str(tiny_bundle_dir), "criteria": SCRIPTED_CRITERIA}  # scripted: no minimum times
    server_config = tmp_path / "server.yaml"
    server_config.write_text(yaml.safe_dump(settings))
    env = {**os.environ, "PSYCHINTERP_SERVER_CONFIG": str(server_config), "PSYCHINTERP_DATABASE_URL": pg_url}
    command = [str(bin_dir / "gunicorn"), "--workers", "2", "--threads", "4", "--bind", f"127.0.0.1:{port}"]
    # Two workers with rate limits in each one's memory: refused at start, naming the setting that fixes it.
    refused = subprocess.run(
        [*command, "experiment_server.wsgi:app_from_env()"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0 and "rate_limit_storage_uri" in refused.stderr, refused.stderr[-2000:]
    server_config.write_text(yaml.safe_dump({**settings, "rate_limit_storage_uri": fresh_redis()}))
    server = subprocess.Popen([*command, "experiment_server.wsgi:app_from_env()"], env=env, stderr=subprocess.DEVNULL)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
        wait_until_serving(client)
        bundle = load_bundle(tiny_bundle_dir)
        for i in range(3):  # requests land on both workers
            done = run_session(
                client,
                lambda t: (correct_choice(bundle, t, client), 2),
                platform={"platform": "prolific", "participant_id": f"{0xABC0 + i:024x}"},
            )
            assert done["status"] == "completed"
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_nul_and_control_characters_are_a_400_on_postgres_not_a_500(pg_url, tiny_bundle_dir):
    """PostgreSQL cannot store U+0000 in text: the audit's page stopped on a 500 before completion."""
    from experiment_server import create_app

    app = create_app({"bundle_dir": tiny_bundle_dir, "database_url": pg_url})
    client = app.test_client()
    assert start(client, expect=400, user_agent="Mozilla\u0000")["detail"].startswith("user_agent:")
    prolific = {"platform": "prolific", "participant_id": "ab\u0000" + "c" * 21}
    assert start(client, expect=400, **prolific)["detail"].startswith("participant_id:")
    token = start(client)["token"]
    for path, body in (
        ("feedback", {"text": "nice\u0000study"}),
        ("events", {"events": [{"kind": "blur", "client_ms": 1, "detail": "\u0000"}]}),
    ):
        response = client.post(f"/api/sessions/{token}/{path}", json=body)
        assert response.status_code == 400, response.get_json()
    assert client.post(f"/api/sessions/{token}/feedback", json={"text": "fine\nthanks"}).status_code == 200
    app.extensions["psychinterp_db"].kw["bind"].dispose()


def test_the_event_cap_holds_under_concurrent_batches_on_postgres(pg_url, tiny_bundle_dir):
    """Counting, then inserting, stored 3,400 and 4,800 events against a cap of 2,000 under concurrent
    batches; one conditional UPDATE of the session's count cannot overshoot."""
    from sqlalchemy import func

    from experiment_server import create_app
    from experiment_server.db import ParticipantSession, SessionEvent

    app = create_app(
        {
            "bundle_dir": tiny_bundle_dir,
            "database_url": pg_url,
            "max_events_per_session": 2000,
            "rate_limits": {"events": "100000 per minute"},
        }
    )
    token = start(app.test_client())["token"]
    batch = {"events": [{"kind": "blur", "client_ms": float(i)} for i in range(150)]}

    def post(_):
        return app.test_client().post(f"/api/sessions/{token}/events", json=batch).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(post, range(40)))
    with app.extensions["psychinterp_db"]() as db:
        stored = db.scalar(select(func.count()).select_from(SessionEvent))
        counted = db.scalar(select(ParticipantSession.events_stored))
    assert codes.count(201) == 13 and stored == counted == 1950, (codes, stored, counted)
