"""The dashboard's panels: each SQL aggregate equals the same count made row by row, on SQLite and PostgreSQL,
and the page shows them (in chromium)."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select

from contracts.bundle import load_bundle
from experiment_server.db import ParticipantSession, Response, utcnow
from psychinterp.scripted import run_session
from tests.server_helpers import POSTGRES_URL, SCRIPTED_CRITERIA, correct_choice, fresh_postgres, start

PASSWORD = "correct horse battery staple"


def _app(bundle_dir, database_url):
    from experiment_server import create_app
    from experiment_server.admin import set_admin_password

    app = create_app({"bundle_dir": bundle_dir, "database_url": database_url, "criteria": SCRIPTED_CRITERIA})
    set_admin_password(app.extensions["psychinterp_db"], "ada", PASSWORD)
    return app


def _sessions_at_every_stage(app, bundle):
    """Two completions (one with feedback), one left at the instructions, one in practice, one only started."""
    client = app.test_client()

    def right(trial):
        return correct_choice(bundle, trial, client), 3

    run_session(client, right, feedback="the grids were clear")
    run_session(client, right)
    token = start(client)["token"]
    client.post(f"/api/sessions/{token}/phase", json={"phase": "instructions"})
    token = start(client)["token"]
    client.post(f"/api/sessions/{token}/phase", json={"phase": "instructions"})
    client.post(f"/api/sessions/{token}/phase", json={"phase": "practice"})
    start(client)


def _by_hand(app, bundle) -> dict:
    """The same numbers, from every row in Python."""
    catch = {t.trial_id for t in bundle.manifest.all_trials() if t.kind == "catch"}
    with app.extensions["psychinterp_db"]() as db:
        sessions = list(db.scalars(select(ParticipantSession)))
        responses = [r for r in db.scalars(select(Response)) if r.phase == "main"]
    catch_rows = [r for r in responses if r.trial_id in catch]
    return {
        "started": len(sessions),
        "consented": sum(s.consented_at is not None for s in sessions),
        "read the instructions": sum(s.instructions_at is not None for s in sessions),
        "practised": sum(s.practice_at is not None for s in sessions),
        "main trials": sum(s.main_at is not None for s in sessions),
        "completed": sum(s.status == "completed" for s in sessions),
        "responses": len(responses),
        "catch_accuracy": sum(r.correct for r in catch_rows) / len(catch_rows),
        "feedback": sorted(s.feedback for s in sessions if s.feedback),
    }


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'd.db'}"
        return
    engine = fresh_postgres()
    yield POSTGRES_URL
    engine.dispose()


def test_each_panel_equals_the_row_by_row_count(tiny_bundle_dir, database_url):
    from experiment_server.admin import panels

    app = _app(tiny_bundle_dir, database_url)
    bundle = load_bundle(tiny_bundle_dir)
    _sessions_at_every_stage(app, bundle)
    truth = _by_hand(app, bundle)
    with app.app_context(), app.extensions["psychinterp_db"]() as db:
        shown = panels(db)
    funnel = {stage["stage"]: stage["sessions"] for stage in shown["funnel"]}
    assert funnel == {k: truth[k] for k in funnel}
    assert [s["dropped"] for s in shown["funnel"]][1:] == [
        truth[a] - truth[b] for a, b in zip(list(funnel)[:-1], list(funnel)[1:], strict=True)
    ]
    assert sum(row["responses"] for row in shown["over_time"]) == truth["responses"]
    assert sum(row["completions"] for row in shown["over_time"]) == truth["completed"]
    (hour,) = [row for row in shown["over_time"] if row["catch_trials"]]  # the test ran within the hour
    assert hour["catch_accuracy"] == pytest.approx(truth["catch_accuracy"])
    assert hour["hour"] <= utcnow().strftime("%Y-%m-%d %H:00")  # a UTC hour, as both databases write it
    assert hour["median_minutes"] is not None and hour["median_minutes"] >= 0
    assert [f["feedback"] for f in shown["feedback"]] == truth["feedback"]
    assert shown["totals"]["completed"] == truth["completed"] and shown["n_sessions"] == truth["started"]


def test_participants_are_paginated_newest_first(tiny_bundle_dir, tmp_path):
    app = _app(tiny_bundle_dir, f"sqlite:///{tmp_path / 'p.db'}")
    client = app.test_client()
    ids = [start(client)["token"] for _ in range(3)]
    assert len(ids) == 3
    client.post("/admin/login", data={"username": "ada", "password": PASSWORD, "csrf_token": _csrf(client)})
    first = client.get("/api/admin/participants?per_page=2").get_json()
    second = client.get("/api/admin/participants?per_page=2&page=2").get_json()
    assert [len(first["participants"]), len(second["participants"])] == [2, 1]
    assert first["participants"][0]["id"] > first["participants"][1]["id"] > second["participants"][0]["id"]
    assert client.get("/api/admin/participants?page=x").status_code == 400
    page = client.get("/admin/?page=1").get_data(as_text=True)
    assert "page 1 of 1" in page and "Funnel" in page and "Feedback from participants" in page


def _csrf(client) -> str:
    import re

    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/admin/login").get_data(as_text=True)).group(1)


@pytest.mark.browser
def test_the_dashboard_in_chromium_shows_the_database_s_funnel_charts_and_feedback(
    tiny_bundle_dir, tmp_path, artifacts
):
    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, serving

    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    bundle = load_bundle(tiny_bundle_dir)
    with serving(tiny_bundle_dir, tmp_path / "live.db") as (app, url), sync_playwright() as pw:
        from experiment_server.admin import set_admin_password

        set_admin_password(app.extensions["psychinterp_db"], "ada", PASSWORD)
        _sessions_at_every_stage(app, bundle)
        truth = _by_hand(app, bundle)
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(url + "/admin/login")
        page.fill("input[name=username]", "ada")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("#funnel")
        for stage in ("started", "consented", "read the instructions", "practised", "main trials", "completed"):
            assert int(page.text_content(f"td[data-stage='{stage}']")) == truth[stage]
        assert page.locator("svg rect").count() >= 4  # four charts, one bar per hour
        assert "the grids were clear" in page.text_content("#feedback + table")
        page.screenshot(path=artifacts / "dashboard.png", full_page=True)

        # The live microscope, from the dashboard's link: the index's counts are the database's.
        page.click("#units-link")
        page.wait_for_selector("#units tbody tr")
        shown = sum(int(n) for n in page.locator("#units tbody tr td:nth-child(10)").all_text_contents())
        assert shown == _main_responses_by_unit(app, bundle).total()
        page.click("#units th:has-text('responses')")  # the sorting script loads under the admin CSP
        assert page.get_attribute("#units th:has-text('responses')", "aria-sort") == "ascending"
        page.screenshot(path=artifacts / "dashboard-units.png", full_page=True)
        unit = bundle.manifest.units[0]
        page.click(f"a[href='{unit.unit_id}']")
        page.wait_for_selector("h2:has-text('How people did')")
        images = page.locator("img")
        assert images.count() > 18  # exemplars, visualisations and queries
        for i in range(images.count()):
            images.nth(i).scroll_into_view_if_needed()  # the page loads them lazily
            assert images.nth(i).evaluate("img => img.decode().then(() => img.naturalWidth > 0)")
        rows = page.locator("h2:has-text('How people did') ~ table").first.locator("tbody tr td:nth-child(4)")
        assert sum(int(n) for n in rows.all_text_contents()) == _main_responses_by_unit(app, bundle)[unit.unit_id]
        page.screenshot(path=artifacts / "dashboard-unit.png", full_page=True)
        browser.close()


def _main_responses_by_unit(app, bundle, statuses=("active", "completed")) -> Counter:
    """Main-trial responses per unit, row by row, of sessions that count on the live pages."""
    unit_of = {t.trial_id: t.unit_id for t in bundle.manifest.all_trials() if t.kind == "main"}
    with app.extensions["psychinterp_db"]() as db:
        sessions = {s.id: s for s in db.scalars(select(ParticipantSession))}
        responses = list(db.scalars(select(Response)))
    return Counter(
        unit_of[r.trial_id]
        for r in responses
        if r.trial_id in unit_of
        and sessions[r.session_id].status in statuses
        and not sessions[r.session_id].excluded_by_experimenter
    )


def test_live_unit_counts_equal_the_row_by_row_count(tiny_bundle_dir, database_url):
    from experiment_server import create_app
    from experiment_server.microscope import unit_results, unit_scores

    app = _app(tiny_bundle_dir, database_url)
    bundle = load_bundle(tiny_bundle_dir)
    _sessions_at_every_stage(app, bundle)
    with app.extensions["psychinterp_db"]() as db:  # one completed session excluded: it stops counting
        first = db.scalars(select(ParticipantSession).where(ParticipantSession.status == "completed")).first()
        first.excluded_by_experimenter = True
        db.commit()
    truth = _main_responses_by_unit(app, bundle)
    assert truth.total() > 0
    with app.app_context(), app.extensions["psychinterp_db"]() as db:
        scores = unit_scores(db, bundle.manifest)
        assert {u: sum(h.n_responses for h in hs) for u, hs in scores.items()} == dict(truth)
        for unit_id, results in scores.items():
            detailed = unit_results(db, bundle.manifest, unit_id)
            assert [(h.condition, h.n_responses, h.accuracy) for h in detailed] == [
                (h.condition, h.n_responses, h.accuracy) for h in results
            ]
            assert all(h.confidence_counts == d.confidence_counts for h, d in zip(results, detailed, strict=True))
            assert all(0 <= h.ci_low <= h.accuracy <= h.ci_high <= 1 for h in detailed)

    # A server whose criteria every completed session fails (50 choices per query position): the live
    # pages leave those sessions out, as the report does; sessions still at work keep counting.
    strict_criteria = {**SCRIPTED_CRITERIA, "min_choices_per_query_row": 50}
    strict = create_app({"bundle_dir": tiny_bundle_dir, "database_url": database_url, "criteria": strict_criteria})
    at_work = _main_responses_by_unit(strict, bundle, statuses=("active",))
    with strict.app_context(), strict.extensions["psychinterp_db"]() as db:
        scores = unit_scores(db, bundle.manifest)
        assert {u: n for u, hs in scores.items() if (n := sum(h.n_responses for h in hs))} == dict(at_work)
        for unit_id in scores:
            assert sum(h.n_responses for h in unit_results(db, bundle.manifest, unit_id)) == at_work[unit_id]


def test_live_unit_pages_and_their_images_need_a_login(tiny_bundle_dir, tmp_path):
    app = _app(tiny_bundle_dir, f"sqlite:///{tmp_path / 'u.db'}")
    bundle = load_bundle(tiny_bundle_dir)
    unit = bundle.manifest.units[0]
    sha = bundle.manifest.reference_images[0].sha256
    client = app.test_client()
    for path in ("/admin/units/", f"/admin/units/{unit.unit_id}", f"/admin/images/{sha}.png"):
        assert client.get(path).status_code == 302  # to the login page
    client.post("/admin/login", data={"username": "ada", "password": PASSWORD, "csrf_token": _csrf(client)})
    page = client.get(f"/admin/units/{unit.unit_id}")
    assert page.status_code == 200 and "No main-trial responses for this unit." in page.get_data(as_text=True)
    assert client.get(f"/admin/images/{sha}.png").headers["Content-Type"] == "image/png"
    assert client.get("/admin/images/" + "0" * 64 + ".png").status_code == 404
    assert client.get("/admin/images/..%2Fmanifest.json.png").status_code == 404
    assert client.get("/admin/units/no_such_unit").status_code == 404
    assert client.get("/admin/units/assets/units_index.js").headers["Content-Type"].startswith("text/javascript")
    assert client.get("/admin/units/assets/app.py").status_code == 404
    assert "units-link" in client.get("/admin/").get_data(as_text=True)


def test_summed_hours_are_kept_and_only_new_responses_are_read(tiny_bundle_dir, tmp_path):
    """With the cache, a refresh an hour later reads only the new hour, and the series equals a full recount."""
    from datetime import timedelta

    from sqlalchemy import update

    from experiment_server.dashboard import over_time

    app = _app(tiny_bundle_dir, f"sqlite:///{tmp_path / 'h.db'}")
    bundle = load_bundle(tiny_bundle_dir)
    _sessions_at_every_stage(app, bundle)
    later = utcnow() + timedelta(hours=3)
    cache: dict = {}
    with app.extensions["psychinterp_db"]() as db:
        first = over_time(db, bundle.manifest, cache, now=later)
        assert cache[bundle.manifest.study_id]["rows"]  # the test's hour is over by then: summed and kept
    # Responses written since then, in a new hour; the hour summed before is not read again.
    client = app.test_client()
    run_session(client, lambda trial: (correct_choice(bundle, trial, client), 1))
    with app.extensions["psychinterp_db"]() as db, db.begin():
        newest = db.scalar(select(ParticipantSession.id).order_by(ParticipantSession.id.desc()))
        db.execute(update(Response).where(Response.session_id == newest).values(created_at=later))
        db.execute(update(ParticipantSession).where(ParticipantSession.id == newest).values(completed_at=later))
    with app.extensions["psychinterp_db"]() as db:
        cached = over_time(db, bundle.manifest, cache, now=later)
        recount = over_time(db, bundle.manifest)
    assert cached == recount and len(cached) == len(first) + 1


def test_one_hour_of_data_is_a_bar_not_a_solid_block():
    from experiment_server.dashboard import MIN_SLOTS, chart_points

    (bar,) = chart_points([12.0])
    assert bar["w"] <= 600 / MIN_SLOTS and bar["h"] == 60.0
    assert [b["x"] for b in chart_points([1.0, None, 3.0])] == [0.0, 25.0, 50.0]
