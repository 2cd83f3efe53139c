"""The experiment server through its HTTP API (Flask test client; SQLite)."""

from __future__ import annotations

import csv
import io
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from contracts.bundle import load_bundle
from contracts.paradigms import TWO_AFC
from experiment_server.db import ParticipantSession, Response, SessionEvent
from psychinterp.scripted import run_session
from tests.server_helpers import (
    SCRIPTED_CRITERIA,
    answer_all,
    answer_body,
    correct_choice,
    page_settings,
    pass_practice,
    show,
    start,
)


def n_rows(app, model=Response):
    with app.extensions["psychinterp_db"]() as db:
        return db.scalar(select(func.count()).select_from(model))


def make_app(bundle_dir: Path, db_path: Path, **settings):
    from experiment_server import create_app

    if "criteria_file" not in settings:  # scripted participants are fast: no minimum times unless a test sets them
        settings["criteria"] = {**SCRIPTED_CRITERIA, **settings.get("criteria", {})}
    return create_app({"bundle_dir": bundle_dir, "database_url": f"sqlite:///{db_path}", **settings})


@pytest.fixture
def bundle(tiny_bundle_dir):
    return load_bundle(tiny_bundle_dir)


def oracle(bundle, client, correct=True):
    def decide(trial):
        right = correct_choice(bundle, trial, client)
        return (right if correct else 1 - right), 3

    return decide


def test_page_images_and_no_secrets_in_page(client, tiny_bundle_dir, bundle):
    page = client.get("/")
    assert page.status_code == 200 and b"app.js" in page.data
    text = page.get_data(as_text=True)
    assert page_settings(client)["minWidth"] == 940
    assert "completion" not in json.dumps(page_settings(client)).lower()
    for answer in bundle.answer_key.answers.values():
        assert not any(s in text for s in answer.query_sources)
    # The bundle's content-hash URLs are gone: images are served only per session, trial and slot.
    sha = next((tiny_bundle_dir / "images").iterdir()).stem
    assert client.get(f"/images/{sha}.png").status_code == 404


def test_nothing_sent_before_a_response_reveals_the_answer(client, bundle):
    session = start(client)
    token = session["token"]
    secrets_ = set()
    for answer in bundle.answer_key.answers.values():
        secrets_ |= {str(a) for a in answer.query_activations} | set(answer.query_sources)
    payloads = [session, client.get(f"/api/sessions/{token}").get_json()]
    payloads.append(client.get(f"/api/sessions/{token}/practice/1/0").get_json())
    pass_practice(client, bundle, token)
    payloads += [client.get(f"/api/sessions/{token}/trials/{i}").get_json() for i in range(session["n_trials"])]
    for payload in payloads:
        text = json.dumps(payload)
        assert "max_query" not in text and "activation" not in text and "catch" not in text
        assert not any(s in text for s in secrets_)
    trial = payloads[-1]
    assert set(trial) == {
        "trial_index", "n_trials", "condition", "max_side", "references", "queries", "layout", "question",
        "wrong_feedback", "answers", "shown",
    }  # fmt: skip
    # The same buttons and words on every trial: they say nothing either.
    assert trial["answers"] == TWO_AFC.answers() and trial["layout"] == "pair"
    assert trial["wrong_feedback"] == TWO_AFC.wrong_feedback
    assert trial["queries"] == [f"/api/sessions/{token}/trials/{trial['trial_index']}/images/q{i}.png" for i in (0, 1)]


def test_served_images_tell_nothing_but_their_pixels(client, bundle):
    """A catch query copies a reference, and a main trial's queries were written one after the other:
    neither URL, header, size, chunk length, bytes nor exact pixels may say so. A main trial's pixels are
    what a person sees, and they are kept."""
    from experiment_server.images import decode
    from tests.test_served_images import chunk_lengths

    token = start(client)["token"]
    pass_practice(client, bundle, token)
    n_trials = client.get(f"/api/sessions/{token}").get_json()["n_trials"]
    task = next(t for t in bundle.manifest.tasks if len(t.trials) == n_trials)  # the tiny bundle's tasks differ
    catch_seen = 0
    for i in range(n_trials):
        trial = client.get(f"/api/sessions/{token}/trials/{i}").get_json()
        urls = [*trial["references"]["max"], *trial["references"]["min"], *trial["queries"]]
        served = [client.get(url) for url in urls]
        assert len({r.headers["Content-Length"] for r in served}) == 1  # one size per trial
        assert len({r.headers["ETag"] for r in served}) == len(urls)
        assert {r.headers["Last-Modified"] for r in served} == {"Sat, 01 Jan 2000 00:00:00 GMT"}
        assert len({r.data for r in served}) == len(urls)  # no two slots share bytes ...
        pixels = [decode(r.data).tobytes() for r in served]
        stored = bundle.manifest.tasks[bundle.manifest.tasks.index(task)].trials[i]
        # ... nor the chunk lengths in the PNG headers, which a script reads without decoding a pixel ...
        assert len({tuple(chunk_lengths(r.data)) for r in served}) == 1
        queries = pixels[-len(trial["queries"]) :]
        if stored.kind == "catch":  # ... nor exact pixels: a catch query is a transformed copy of a reference
            catch_seen += 1
            assert not set(queries) & set(pixels[: -len(queries)]) and len(set(queries)) == len(queries)
        # A reload revalidates: the same ETag gives 304 and no body.
        again = client.get(urls[-1], headers={"If-None-Match": served[-1].headers["ETag"]})
        assert again.status_code == 304 and not again.data
        assert served[-1].headers["Cache-Control"] == "private, max-age=86400"
    assert catch_seen
    assert client.get(f"/api/sessions/{token}/trials/0/images/q9.png").status_code == 404
    assert client.get(f"/api/sessions/{token}/trials/0/images/q01.png").status_code == 404
    assert client.get(f"/api/sessions/{token}/trials/0/images/..%2F..%2Fmanifest.json.png").status_code == 404


def test_full_session_consent_practice_trials_completion(app, client, bundle):
    session = start(client, window={"width": 1400, "height": 900, "device_pixel_ratio": 2})
    token = session["token"]
    assert session["status"] == "active" and session["practice_block"] == 1 and session["example"]
    assert client.post(f"/api/sessions/{token}/responses", json=answer_body(0)).status_code == 409  # practice first
    state = pass_practice(client, bundle, token)
    assert state["practice_block"] is None and state["next_trial"] == 0
    assert client.post(f"/api/sessions/{token}/complete").status_code == 409  # trials missing
    answer_all(client, bundle, token, session["n_trials"])
    retry = client.post(
        f"/api/sessions/{token}/responses", json=answer_body(0, chosen=1, shown=show(client, token, 0)[0])
    )
    assert retry.status_code == 200 and retry.get_json()["duplicate"] is True
    assert n_rows(app) == session["n_trials"] + state["practice_trials"]
    done = client.post(f"/api/sessions/{token}/complete").get_json()
    assert done["status"] == "completed" and done["completion_code"]
    assert client.post(f"/api/sessions/{token}/complete").get_json()["completion_code"] == done["completion_code"]
    assert client.post(f"/api/sessions/{token}/responses", json=answer_body(0)).status_code == 409
    with app.extensions["psychinterp_db"]() as db:
        row = db.scalar(select(ParticipantSession))
        assert (row.window_width, row.device_pixel_ratio, row.practice_blocks) == (1400, 2.0, 1)


def test_reload_resumes_at_the_first_unanswered_trial(client, bundle):
    session = start(client)
    token = session["token"]
    pass_practice(client, bundle, token)
    shown = show(client, token, 0, 1, 2)
    assert client.post(f"/api/sessions/{token}/responses", json=answer_body(0, shown=shown[0])).status_code == 201
    skipped = client.post(f"/api/sessions/{token}/responses", json=answer_body(2, shown=shown[2]))
    assert skipped.status_code == 409 and skipped.get_json()["rule"] == "in_order"
    state = client.get(f"/api/sessions/{token}").get_json()
    assert state["next_trial"] == 1 and state["practice_block"] is None


def test_failed_practice_ends_the_session_and_catch_trials_decide_the_code(tmp_path, tiny_bundle_dir, bundle):
    app = make_app(
        tiny_bundle_dir,
        tmp_path / "p.db",
        criteria={"max_practice_blocks": 2},
        prolific={"completion_code": "GOOD123", "failed_code": "BAD456"},
    )
    client = app.test_client()
    prolific = {
        "platform": "prolific",
        "participant_id": "111111111111111111111111",
        "platform_study_id": "555555555555555555555555",
        "platform_session_id": "eeeeeeeeeeeeeeeeeeeeeeee",
    }
    token = start(client, **prolific)["token"]
    state = pass_practice(client, bundle, token, wrong_first_blocks=2)
    assert state["status"] == "failed"
    done = client.post(f"/api/sessions/{token}/complete").get_json()
    assert done["completion_code"] == "BAD456" and done["redirect_url"].endswith("cc=BAD456")

    passed = run_session(
        client, oracle(bundle, client), platform={**prolific, "participant_id": "222222222222222222222222"}
    )
    assert passed["status"] == "completed" and passed["completion_code"] == "GOOD123"

    inattentive = start(client, **{**prolific, "participant_id": "333333333333333333333333"})
    pass_practice(client, bundle, inattentive["token"])
    answer_all(client, bundle, inattentive["token"], inattentive["n_trials"], correct=False)
    done = client.post(f"/api/sessions/{inattentive['token']}/complete").get_json()
    assert (done["status"], done["completion_code"]) == ("failed", "BAD456")  # all catch trials wrong


def test_practice_block_repeats_until_all_correct(client, bundle):
    token = start(client)["token"]
    state = pass_practice(client, bundle, token, wrong_first_blocks=1)
    assert state["status"] == "active" and state["practice_block"] is None
    assert client.get(f"/api/sessions/{token}/practice/1/0").status_code == 409  # no longer the current block


def test_two_arrivals_at_once_get_different_tasks(app, bundle):
    n_tasks = len(bundle.manifest.tasks)
    barrier = threading.Barrier(n_tasks * 2)

    def arrive(_):
        client = app.test_client()
        barrier.wait()
        return start(client)["token"]

    with ThreadPoolExecutor(n_tasks * 2) as pool:
        tokens = list(pool.map(arrive, range(n_tasks * 2)))
    assert len(set(tokens)) == n_tasks * 2
    with app.extensions["psychinterp_db"]() as db:
        tasks = db.scalars(select(ParticipantSession.task_id)).all()
    counts = {t: tasks.count(t) for t in set(tasks)}
    assert sorted(counts.values()) == [2] * n_tasks  # least-filled first, never double-booked


def test_reservations_expire_and_return_the_task(tmp_path, tiny_bundle_dir, bundle):
    app = make_app(tiny_bundle_dir, tmp_path / "e.db", reservation_minutes=0.02)  # 1.2 s
    client = app.test_client()
    first = start(client)
    second = start(client)
    assert first["condition"] != second["condition"]  # two tasks, one each
    time.sleep(1.5)
    third = start(client)
    assert third["condition"] == first["condition"]  # first task's reservation ran out: it is least filled again
    late = client.post(f"/api/sessions/{first['token']}/practice/1/responses", json=answer_body(0))
    assert late.status_code == 410 and "expired" in late.get_json()["detail"]
    assert client.get(f"/api/sessions/{first['token']}").get_json()["status"] == "expired"


def test_preview_mode_writes_nothing(app, client):
    page = client.get("/?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=h&turkSubmitTo=https://www.mturk.com")
    assert page.status_code == 200
    preview = client.post(
        "/api/sessions",
        json={
            "platform": "mturk",
            "assignment_id": "ASSIGNMENT_ID_NOT_AVAILABLE",
            "hit_id": "h",
            "consent_version": page_settings(client)["consentVersion"],
        },
    )
    assert preview.status_code == 400 and "preview" in preview.get_json()["detail"]
    assert n_rows(app, ParticipantSession) == 0


def test_mturk_completion_submits_to_turk_and_bad_hosts_are_refused(app, client, bundle):
    mturk = {
        "platform": "mturk",
        "participant_id": "A1B2C3D4E5F6G7",
        "assignment_id": "ASSIGN111111111111111111111111",
        "hit_id": "HIT111111111111111111111111111",
    }
    bad = start(client, expect=400, **mturk, turk_submit_to="https://evil.example")
    assert "turk_submit_to" in bad["detail"]
    done = run_session(
        client, oracle(bundle, client), platform={**mturk, "turk_submit_to": "https://workersandbox.mturk.com"}
    )
    assert done["submit_url"] == "https://workersandbox.mturk.com/mturk/externalSubmit"
    assert (
        done["submit_fields"]["assignmentId"] == "ASSIGN111111111111111111111111"
        and done["submit_fields"]["completion_code"]
    )


def test_one_session_per_worker_decline_locks_out_and_study_groups(tmp_path, tiny_bundle_dir, bundle):
    app = make_app(tiny_bundle_dir, tmp_path / "g.db", study_group="scaling-2026")
    client = app.test_client()
    prolific = {"platform": "prolific", "participant_id": "c1c1c1c1c1c1c1c1c1c1c1c1"}
    start(client, **prolific)
    again = start(client, expect=409, **prolific)
    assert "already has a session" in again["detail"]
    version = page_settings(client)["consentVersion"]
    declined = client.post(
        "/api/declines",
        json={"platform": "prolific", "participant_id": "c2c2c2c2c2c2c2c2c2c2c2c2", "consent_version": version},
    )
    assert declined.status_code == 201
    assert (
        "declined"
        in start(client, expect=409, platform="prolific", participant_id="c2c2c2c2c2c2c2c2c2c2c2c2")["detail"]
    )

    # A second study of the same group, sharing the database: worker-1 may not take part.
    other = tmp_path / "other_bundle"
    shutil.copytree(tiny_bundle_dir, other)
    for name in ("manifest.json", "answer_key.json"):
        raw = json.loads((other / name).read_text())
        raw["study_id"] = "tiny-followup"
        (other / name).write_text(json.dumps(raw))
    followup = make_app(other, tmp_path / "g.db", study_group="scaling-2026").test_client()
    assert "related study" in start(followup, expect=403, **prolific)["detail"]
    start(followup, platform="prolific", participant_id="c3c3c3c3c3c3c3c3c3c3c3c3")


def test_mobile_and_stale_consent_are_refused(client):
    phone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148"
    assert "phones" in start(client, expect=403, user_agent=phone)["detail"]
    assert "consent" in start(client, expect=409, consent_version="0" * 16)["detail"]


def test_events_feedback_and_beacon_batches(app, client, bundle):
    token = start(client)["token"]
    events = {"events": [{"kind": "blur", "client_ms": 10.5}, {"kind": "fullscreen_exit", "client_ms": 12}]}
    assert client.post(f"/api/sessions/{token}/events", json=events).status_code == 201
    assert n_rows(app, SessionEvent) == 2
    pass_practice(client, bundle, token)
    shown = show(client, token, 0, 1)
    batch = json.dumps({"responses": [answer_body(i, shown=shown[i]) for i in (0, 1, 0)]})
    # sendBeacon posts its body as text/plain
    stored = client.post(f"/api/sessions/{token}/responses/batch", data=batch, content_type="text/plain")
    assert stored.status_code == 200 and stored.get_json()["new"] == 2
    assert client.post(f"/api/sessions/{token}/feedback", json={"text": "fun"}).status_code == 200


@pytest.mark.parametrize(
    "body, fragment",
    [
        (None, "not JSON"),
        ({"trial_index": 0, "chosen_query": 2, "confidence": 1, "rt_ms": 1}, "chosen_query"),
        ({"trial_index": -1, "chosen_query": 0, "confidence": 1, "rt_ms": 1}, "trial_index"),
        ({"trial_index": 0, "chosen_query": 0, "confidence": 4, "rt_ms": 1}, "confidence"),
        ({"trial_index": 0, "chosen_query": 0, "confidence": 1}, "rt_ms"),
        ({"trial_index": 0, "chosen_query": 0, "confidence": 1, "rt_ms": 1, "correct": 1}, "correct"),
        ({"trial_index": 99, "chosen_query": 0, "confidence": 1, "rt_ms": 1}, "out of range"),
        ([1, 2], "JSON object"),
    ],
)
def test_malformed_bodies_get_400_with_a_reason(app, client, bundle, body, fragment):
    token = start(client)["token"]
    pass_practice(client, bundle, token)
    before = n_rows(app)
    if body is None:
        response = client.post(f"/api/sessions/{token}/responses", data="{not json", content_type="application/json")
    else:
        response = client.post(f"/api/sessions/{token}/responses", json=body)
    assert response.status_code == 400
    assert fragment in response.get_json()["detail"]
    assert n_rows(app) == before


def test_unknown_session_and_bad_start_bodies(client):
    assert client.get("/api/sessions/nope/trials/0").get_json()["error"] == "Not Found"
    assert client.post("/api/sessions/nope/responses", json=answer_body(0)).status_code == 404
    bad = client.post("/api/sessions", json={"platform": "carrier-pigeon", "consent_version": "x"})
    assert bad.status_code == 400 and "platform" in bad.get_json()["detail"]
    assert "consent_version" in client.post("/api/sessions", json={}).get_json()["detail"]
    assert client.post("/api/sessions", json={"platform": "prolific", "consent_version": "x"}).status_code in (400, 409)
    events = client.post("/api/sessions/nope/events", json={"events": [{"kind": "teleport", "client_ms": 1}]})
    assert events.status_code == 400 and "kind" in events.get_json()["detail"]


def test_openapi_document_is_served_and_docs_api_md_is_current(client):
    from experiment_server.api_docs import markdown, openapi_document

    served = client.get("/api/openapi.json").get_json()
    assert served["openapi"].startswith("3.") and "/api/sessions/{token}/responses" in served["paths"]
    assert "StartSession" in served["components"]["schemas"]
    docs = Path(__file__).parents[1] / "docs" / "api.md"
    assert docs.read_text() == markdown(openapi_document()), "regenerate: python -m experiment_server.api_docs"


def test_migrations_build_exactly_the_model_schema(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from experiment_server.db import Base, make_engine
    from experiment_server.migrate import current_revision, head_revision, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_a_database_from_before_migrations_is_refused(tmp_path, tiny_bundle_dir):
    from sqlalchemy import create_engine, text

    from contracts.errors import PsychinterpError

    old = tmp_path / "old.db"
    with create_engine(f"sqlite:///{old}").begin() as conn:
        conn.execute(text("CREATE TABLE participant_sessions (id INTEGER PRIMARY KEY)"))
    with pytest.raises(PsychinterpError, match="pre-release"):
        make_app(tiny_bundle_dir, old)


def test_sqlite_writer_threads_take_turns_without_deadlock_or_loss(tmp_path):
    from sqlalchemy import Column, Integer, MetaData, Table, insert

    from experiment_server.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("v", Integer))
    table.metadata.create_all(engine)

    def writer(k):
        for i in range(25):
            with engine.begin() as conn:
                conn.execute(insert(table).values(v=k * 100 + i))
            if i % 5 == 0:  # an aborted transaction must hand the turn on too
                with pytest.raises(RuntimeError), engine.begin() as conn:
                    conn.execute(insert(table).values(v=-1))
                    raise RuntimeError

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(writer, range(8)))
    with engine.connect() as conn:
        values = [v for (v,) in conn.execute(select(table.c.v))]
    assert sorted(values) == sorted(k * 100 + i for k in range(8) for i in range(25))


def test_feedback_setting_and_consent_text_override(tmp_path, tiny_bundle_dir, bundle):
    quiet = make_app(tiny_bundle_dir, tmp_path / "q.db").test_client()
    loud = make_app(tiny_bundle_dir, tmp_path / "l.db", feedback=True, consent_text="Custom consent.").test_client()
    assert "Custom consent." in loud.get("/").get_data(as_text=True)
    assert page_settings(loud)["consentVersion"] != page_settings(quiet)["consentVersion"]
    assert "consent" in start(loud, expect=409, consent_version=page_settings(quiet)["consentVersion"])["detail"]
    # With feedback, direct-link sessions could learn every answer and pass them on: refused unless allowed.
    assert "direct links are turned off" in start(loud, expect=403)["detail"]
    allowed = make_app(tiny_bundle_dir, tmp_path / "d.db", feedback=True, allow_direct_links=True).test_client()
    start(allowed)
    closed = make_app(tiny_bundle_dir, tmp_path / "c.db", allow_direct_links=False).test_client()
    assert start(closed, expect=403)
    prolific = {"platform": "prolific", "participant_id": "f00d" * 6}
    for client, says in ((quiet, False), (loud, True)):
        token = start(client, **prolific)["token"]
        pass_practice(client, bundle, token)
        shown = show(client, token, 0)
        reply = client.post(f"/api/sessions/{token}/responses", json=answer_body(0, shown=shown[0])).get_json()
        assert ("correct" in reply) is says


def test_new_revision_helper_finds_no_change_when_models_match_migrations():
    from experiment_server.migrate import head_revision, new_revision

    head = head_revision()
    path = new_revision("nothing changed")
    try:
        text = path.read_text()
        upgrade_body = text.split("def upgrade() -> None:")[1].split("def downgrade")[0]
        statements = [line.strip() for line in upgrade_body.splitlines() if line.strip() and "#" not in line]
        assert statements == ["pass"] and f"down_revision = '{head}'" in text
    finally:
        path.unlink()


def test_the_server_config_names_a_criteria_file_relative_to_itself(tmp_path):
    from contracts.errors import ConfigError
    from experiment_server.config import load_server_config

    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "criteria.yaml").write_text("min_catch_accuracy: 0.9\nmax_practice_blocks: 2\n")
    server = tmp_path / "conf" / "server.yaml"
    server.write_text("criteria_file: criteria.yaml\n")
    config = load_server_config(server, bundle_dir=tmp_path)
    assert config.criteria.min_catch_accuracy == 0.9 and config.criteria.max_practice_blocks == 2
    assert config.criteria.min_session_s is None  # the rest keep the defaults (derived from each session)
    server.write_text("criteria_file: criteria.yaml\ncriteria: {min_catch_accuracy: 0.5}\n")
    with pytest.raises(ConfigError, match="give criteria_file or criteria, not both"):
        load_server_config(server, bundle_dir=tmp_path)
    server.write_text("criteria_file: missing.yaml\n")
    with pytest.raises(ConfigError, match=r"conf/missing.yaml: exclusion criteria not found"):
        load_server_config(server, bundle_dir=tmp_path)
    examples = Path(__file__).parents[1] / "examples" / "server.yaml"
    assert (
        load_server_config(examples, bundle_dir=tmp_path).criteria
        == load_server_config(None, bundle_dir=tmp_path).criteria
    )


def test_examples_server_yaml_is_generated_from_the_config_model(tmp_path):
    from experiment_server.config import ServerConfig, load_server_config
    from experiment_server.config_example import example_yaml

    examples = Path(__file__).parents[1] / "examples" / "server.yaml"
    assert examples.read_text() == example_yaml(), "regenerate: python -m experiment_server.config_example"
    loaded = load_server_config(examples, bundle_dir=tmp_path)
    assert loaded == ServerConfig(bundle_dir=tmp_path)  # every value in it is the default
    for name in ServerConfig.model_fields:
        assert f"{name}:" in examples.read_text()


def test_every_platform_the_api_accepts_has_a_module():
    import typing

    from experiment_server.platforms import PLATFORMS
    from experiment_server.schemas import PlatformParams

    assert set(typing.get_args(PlatformParams.model_fields["platform"].annotation)) == set(PLATFORMS)


def test_responses_are_checked_and_scored_by_the_bundles_paradigm(client, bundle):
    from contracts.paradigms import TWO_AFC

    assert [(a["query"], a["confidence"], a["key"]) for a in TWO_AFC.answers()] == [
        (0, 3, "1"),
        (0, 2, "2"),
        (0, 1, "3"),
        (1, 1, "4"),
        (1, 2, "5"),
        (1, 3, "6"),
    ]  # the 2023 layout: A very sure ... A unsure | B unsure ... B very sure
    token = start(client)["token"]
    pass_practice(client, bundle, token)
    wrong_query = client.post(f"/api/sessions/{token}/responses", json={**answer_body(0), "chosen_query": 2})
    assert wrong_query.status_code == 400 and "not one of the 2 queries" in wrong_query.get_json()["detail"]
    wrong_confidence = client.post(f"/api/sessions/{token}/responses", json={**answer_body(0), "confidence": 4})
    assert (
        wrong_confidence.status_code == 400
        and "confidence: 4 is not one of [1, 2, 3]" in wrong_confidence.get_json()["detail"]
    )


def test_every_api_route_is_in_the_openapi_document(app):
    """The document lists exactly the API's operations: a route added without documenting it fails here."""
    import re

    from experiment_server.api_docs import openapi_document

    documented = {(m, p) for p, ops in openapi_document()["paths"].items() for m in ops}
    served = {
        (method.lower(), re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/") and rule.rule != "/api/openapi.json"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert served == documented


def test_no_pass_code_for_work_too_fast_to_be_real(tmp_path, tiny_bundle_dir, bundle, monkeypatch):
    """The audit's script completed a Prolific session in 0.3 s and was given the completion code."""
    from datetime import timedelta

    from experiment_server import participant
    from experiment_server.db import utcnow

    codes = {"completion_code": "GOOD123", "failed_code": "BAD456"}
    app = make_app(tiny_bundle_dir, tmp_path / "t.db", criteria={"min_trial_s": 1.0}, prolific=codes)
    client = app.test_client()
    prolific = {"platform": "prolific", "participant_id": "a" * 24}
    fast = run_session(client, oracle(bundle, client), platform=prolific)
    assert (fast["status"], fast["completion_code"]) == ("failed", "BAD456")
    # The end page says what happened and what the code is for, in plain words.
    assert "faster than anyone could read" in fast["message"] and "ended early" in fast["code_note"]
    with app.extensions["psychinterp_db"]() as db:
        row = db.scalar(select(ParticipantSession))
        assert row.failure_reason == "timing"
    from experiment_server.export import export_csv

    export_csv(bundle, app.extensions["psychinterp_db"], tmp_path / "r.csv")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert {r["failure_reason"] for r in rows} == {"timing"} and float(rows[0]["trial_s"]) < 1.0

    # The same work at a person's pace (the server's clock moves 2 s between requests) is paid.
    start_at = utcnow()
    ticks = iter(range(10_000))
    monkeypatch.setattr(participant, "utcnow", lambda: start_at + timedelta(seconds=2 * next(ticks)))
    slow = run_session(client, oracle(bundle, client), platform={**prolific, "participant_id": "b" * 24})
    assert (slow["status"], slow["completion_code"]) == ("completed", "GOOD123")
    assert slow["message"] == "You have completed the study." and "to be paid" in slow["code_note"]


def test_platform_ids_are_validated_and_normalised_so_variants_are_not_new_people(tmp_path, tiny_bundle_dir):
    """The audit took part again as `skip01`, `SKIP01.` and `SKIP01_2`."""
    allow = tmp_path / "invited.txt"
    allow.write_text("# invited\nABCDEF0123456789ABCDEF01\nA1B2C3D4E5F6G7\n")
    client = make_app(tiny_bundle_dir, tmp_path / "i.db").test_client()
    for bad in ("skip01", "SKIP01.", "abcdef0123456789abcdef01_2", "g" * 24):
        refused = start(client, expect=400, platform="prolific", participant_id=bad)
        assert refused["detail"].startswith("participant_id:") and "Prolific id" in refused["detail"]
    start(client, platform="prolific", participant_id="ABCDEF0123456789ABCDEF01")
    again = start(client, expect=409, platform="prolific", participant_id="abcdef0123456789abcdef01")
    assert "already has a session" in again["detail"]
    with client.application.extensions["psychinterp_db"]() as db:
        assert db.scalar(select(ParticipantSession.participant_id)) == "abcdef0123456789abcdef01"
    study = start(client, expect=400, platform="prolific", participant_id="1" * 24, platform_study_id="study-1")
    assert study["detail"].startswith("platform_study_id:")

    mturk = {
        "platform": "mturk",
        "assignment_id": "3" * 30,
        "hit_id": "4" * 30,
        "turk_submit_to": "https://www.mturk.com",
    }
    assert start(client, expect=400, **mturk, participant_id="W1")["detail"].startswith("participant_id:")
    assert start(client, expect=400, **{**mturk, "hit_id": "h"}, participant_id="A1B2C3D4E5F6G7")["detail"].startswith(
        "hit_id:"
    )
    start(client, **mturk, participant_id="a1b2c3d4e5f6g7")
    assert start(client, expect=409, **mturk, participant_id="A1B2C3D4E5F6G7")

    invited = make_app(tiny_bundle_dir, tmp_path / "a.db", allowed_participants_file=allow).test_client()
    assert start(invited, expect=403, platform="prolific", participant_id="2" * 24)["detail"].endswith(
        "not invited to this study"
    )
    start(invited, platform="prolific", participant_id="abcdef0123456789abcdef01")
    start(invited, **mturk, participant_id="A1B2C3D4E5F6G7")
    with pytest.raises(Exception, match="allowed_participants_file: cannot read"):
        make_app(tiny_bundle_dir, tmp_path / "b.db", allowed_participants_file=tmp_path / "missing.txt")
