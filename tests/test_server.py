import json

import pytest
from sqlalchemy import func, select

from experiment_server.db import Response
from stimuli.bundle import load_bundle


def start(client):
    response = client.post("/api/sessions", json={"platform": "direct"})
    assert response.status_code == 201
    return response.get_json()


def answer(client, token, index, chosen=0, confidence=2, rt=1234.5):
    return client.post(
        f"/api/sessions/{token}/responses",
        json={"trial_index": index, "chosen_query": chosen, "confidence": confidence, "rt_ms": rt},
    )


def n_responses(app):
    with app.extensions["psychinterp_db"]() as db:
        return db.scalar(select(func.count()).select_from(Response))


def test_participant_page_and_images_are_served(client, tiny_bundle_dir):
    page = client.get("/")
    assert page.status_code == 200 and b"app.js" in page.data
    sha = next((tiny_bundle_dir / "images").iterdir()).stem
    image = client.get(f"/images/{sha}.png")
    assert image.status_code == 200 and image.mimetype == "image/png"
    assert client.get("/images/" + "0" * 64 + ".png").status_code == 404
    assert client.get("/images/..%2Fmanifest.json.png").status_code == 404


def test_trial_json_reveals_nothing_about_the_answer(client, tiny_bundle_dir):
    session = start(client)
    bundle = load_bundle(tiny_bundle_dir)
    secrets_ = set()
    for answer_ in bundle.answer_key.answers.values():
        secrets_ |= {str(a) for a in answer_.query_activations} | set(answer_.query_sources)
    for index in range(session["n_trials"]):
        payload = client.get(f"/api/sessions/{session['token']}/trials/{index}").get_json()
        text = json.dumps(payload)
        assert set(payload) == {"trial_index", "n_trials", "condition", "max_side", "references", "queries"}
        assert "max_query" not in text and "activation" not in text
        assert not any(s in text for s in secrets_)
        assert all(q.startswith("/images/") and len(q) == len("/images/") + 64 + 4 for q in payload["queries"])


def test_full_session_stores_each_response_once_and_completes(app, client, tiny_bundle_dir):
    session = start(client)
    token = session["token"]
    assert client.post(f"/api/sessions/{token}/complete").status_code == 409
    for index in range(session["n_trials"]):
        assert answer(client, token, index, chosen=index % 2).status_code == 201
    retry = answer(client, token, 0, chosen=1)
    assert retry.status_code == 200 and retry.get_json()["duplicate"] is True
    assert n_responses(app) == session["n_trials"]
    state = client.get(f"/api/sessions/{token}").get_json()
    assert state == {"n_trials": session["n_trials"], "next_trial": None, "completed": False}
    code = client.post(f"/api/sessions/{token}/complete").get_json()["completion_code"]
    assert code and client.post(f"/api/sessions/{token}/complete").get_json()["completion_code"] == code
    assert answer(client, token, 0).status_code == 409


def test_resume_points_at_first_unanswered_trial(client):
    session = start(client)
    answer(client, session["token"], 0)
    assert client.get(f"/api/sessions/{session['token']}").get_json()["next_trial"] == 1


def test_least_filled_task_is_assigned(client, tiny_bundle_dir):
    n_tasks = len(load_bundle(tiny_bundle_dir).manifest.tasks)
    tokens = [start(client)["token"] for _ in range(n_tasks)]
    assert len(tokens) == n_tasks == 2
    # each of the first n_tasks participants gets a different task
    from experiment_server.db import ParticipantSession

    with client.application.extensions["psychinterp_db"]() as db:
        tasks = db.scalars(select(ParticipantSession.task_id)).all()
    assert len(set(tasks)) == n_tasks


@pytest.mark.parametrize(
    "body, fragment",
    [
        (None, "JSON object"),
        ({"trial_index": 0, "chosen_query": 2, "confidence": 1, "rt_ms": 1}, "chosen_query"),
        ({"trial_index": -1, "chosen_query": 0, "confidence": 1, "rt_ms": 1}, "trial_index"),
        ({"trial_index": 0, "chosen_query": 0, "confidence": 4, "rt_ms": 1}, "confidence"),
        ({"trial_index": 0, "chosen_query": 0, "confidence": 1}, "rt_ms"),
        ({"trial_index": 0, "chosen_query": 0, "confidence": 1, "rt_ms": 1, "correct": 1}, "correct"),
        ({"trial_index": 99, "chosen_query": 0, "confidence": 1, "rt_ms": 1}, "out of range"),
        ([1, 2], "body"),
    ],
)
def test_malformed_bodies_get_400_with_a_reason(app, client, body, fragment):
    token = start(client)["token"]
    if body is None:
        response = client.post(f"/api/sessions/{token}/responses", data="{not json", content_type="application/json")
    else:
        response = client.post(f"/api/sessions/{token}/responses", json=body)
    assert response.status_code == 400
    assert fragment in response.get_json()["detail"]
    assert n_responses(app) == 0


def test_unknown_session_and_bad_start_body(client):
    assert client.get("/api/sessions/nope/trials/0").status_code == 404
    assert client.post("/api/sessions/nope/responses", json={}).status_code in (400, 404)
    bad = client.post("/api/sessions", json={"platform": "carrier-pigeon"})
    assert bad.status_code == 400 and "platform" in bad.get_json()["detail"]
