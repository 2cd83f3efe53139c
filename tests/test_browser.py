"""A whole participant session in headless Debian chromium against the real server."""

from __future__ import annotations

import csv
import os
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from experiment_server import create_app
from experiment_server.export import export_csv

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (.ci/run installs it)"),
]


@pytest.fixture
def live_server(tiny_bundle_dir, tmp_path):
    app = create_app({"bundle_dir": tiny_bundle_dir, "database_url": f"sqlite:///{tmp_path / 'live.db'}"})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        yield context.new_page()
        browser.close()


def test_participant_completes_a_session_and_the_export_holds_exactly_those_answers(live_server, page, tmp_path):
    app, url = live_server
    page.goto(url + "/")
    page.click("#start")
    planned = []
    n_trials = None
    index = 0
    while True:
        page.wait_for_selector("#trial:not([hidden]) .answers button:enabled, #done:not([hidden])")
        if page.is_visible("#done"):
            break
        # every image of the trial is decoded before the buttons unlock
        assert page.evaluate("[...document.querySelectorAll('#trial img')].every(i => i.complete && i.naturalWidth)")
        assert page.locator(".refs .grid img").count() == 18
        chosen, confidence = index % 2, 3 - index % 3
        page.click(f".answers button[data-query='{chosen}'][data-confidence='{confidence}']")
        planned.append((index, chosen, confidence))
        index += 1
        if n_trials is None:
            n_trials = len(app.extensions["psychinterp_bundle"].manifest.tasks[0].trials)
    code = page.text_content("#completion-code")
    assert code and len(code) == 8
    if os.environ.get("PSYCHINTERP_SCREENSHOTS"):
        page.screenshot(path=os.path.join(os.environ["PSYCHINTERP_SCREENSHOTS"], "done.png"))
    assert len(planned) == n_trials

    out = tmp_path / "responses.csv"
    export_csv(app.extensions["psychinterp_bundle"], app.extensions["psychinterp_db"], out)
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["trial_index"]), int(r["chosen_query"]), int(r["confidence"])) for r in rows] == planned
    assert all(float(r["rt_ms"]) > 0 for r in rows)
    assert {r["session_completed"] for r in rows} == {"1"}


def test_reload_resumes_at_the_first_unanswered_trial(live_server, page):
    app, url = live_server
    n_trials = len(app.extensions["psychinterp_bundle"].manifest.tasks[0].trials)
    page.goto(url + "/")
    page.click("#start")
    page.wait_for_selector(".answers button:enabled")
    page.click(".answers button[data-query='1'][data-confidence='2']")
    page.wait_for_function("document.getElementById('progress-bar').style.width !== '0%'")
    page.reload()
    page.click("#start")
    page.wait_for_selector(".answers button:enabled")
    width = page.evaluate("document.getElementById('progress-bar').style.width")
    assert float(width.rstrip("%")) == pytest.approx(100 / n_trials, abs=0.01)  # trial 2 of n
