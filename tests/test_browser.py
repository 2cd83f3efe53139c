"""Whole participant sessions in headless Debian chromium against the real server."""

from __future__ import annotations

import contextlib
import csv
import threading
from pathlib import Path
from urllib.parse import urljoin

import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from contracts.bundle import load_bundle
from experiment_server import create_app
from experiment_server.db import ParticipantSession
from experiment_server.export import export_csv
from tests.server_helpers import SCRIPTED_CRITERIA, correct_choice
from tests.test_imi_import import REFERENCE, RELEASED, needs_reference

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
PROLIFIC = "?PROLIFIC_PID=" + "a1" * 12 + "&STUDY_ID=" + "5" * 24 + "&SESSION_ID=" + "e" * 24

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian chromium is not installed (make test installs it when it can)"
    ),
]


@contextlib.contextmanager
def serving(bundle_dir: Path, database: Path, **settings):
    app = create_app(
        {
            "bundle_dir": bundle_dir,
            "database_url": f"sqlite:///{database}",
            "prolific": {"completion_code": "GOOD123", "failed_code": "BAD456"},
            "criteria": SCRIPTED_CRITERIA,  # the browser is driven faster than the minimum times allow
            **settings,
        }
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture
def live_server(tiny_bundle_dir, tmp_path):
    with serving(tiny_bundle_dir, tmp_path / "live.db") as served:
        yield served


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    # Prolific is not reachable from the tests: answer its completion URL locally.
    page.route("https://app.prolific.com/**", lambda route: route.fulfill(body="prolific", content_type="text/plain"))
    return page


def _wait_until(page, expression: str, seconds: float = 30.0) -> None:
    """Poll an expression from here: Playwright's wait_for_function evaluates strings with eval, which the
    page's Content-Security-Policy (rightly) forbids."""
    import time

    deadline = time.monotonic() + seconds
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.05)


def _shown_trial(page) -> dict:
    queries = [page.get_attribute(f"#query-{i}", "src") for i in (0, 1)]
    return {"queries": queries}


def _answer(page, bundle, correct: bool = True, key: bool = False) -> tuple[int, int]:
    page.wait_for_selector("#trial:not([hidden])")
    # Every image is decoded before the trial shows, and the buttons start locked.
    assert page.evaluate("[...document.querySelectorAll('#trial img')].every(i => i.complete && i.naturalWidth)")
    assert page.locator(".answers button:disabled").count() == 6
    page.wait_for_selector(".answers button:enabled")
    right = correct_choice(bundle, _shown_trial(page), lambda url: page.request.get(urljoin(page.url, url)).body())
    chosen = right if correct else 1 - right
    button = page.locator(f".answers button[data-query='{chosen}'][data-confidence='3']")
    if key:
        page.keyboard.press(button.get_attribute("data-key"))
    else:
        button.click()
    return chosen, 3


def _through_practice(page, bundle):
    page.click("#consent-yes")
    page.wait_for_selector("#instructions:not([hidden])")
    assert page.locator("#example .grid img").count() > 0  # an example trial from the bundle
    page.click("#instructions-done")
    page.click("#setup-go")
    page.click("#practice-go")
    _answer(page, bundle)
    page.wait_for_selector("#trial-feedback.right")
    page.click("#main-go")


def test_a_full_session_in_the_browser(live_server, page, tmp_path, artifacts):
    app, url = live_server
    bundle = load_bundle(app.config["PSYCHINTERP"].bundle_dir)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    page.goto(url + "/" + PROLIFIC)
    _through_practice(page, bundle)
    n_trials = int(page.text_content("#trial-label").split(" of ")[-1]) if page.is_visible("#trial") else None
    planned = []
    while True:
        page.wait_for_selector("#trial:not([hidden]), #feedback:not([hidden])")
        if page.is_visible("#feedback"):
            break
        label = page.text_content("#trial-label")
        index = int(label.split()[1]) - 1
        n_trials = int(label.split(" of ")[-1])
        assert "GOOD123" not in page.content()
        chosen, confidence = _answer(page, bundle, key=index % 2 == 0)
        planned.append((index, chosen, confidence))
        _wait_until(
            page,
            f"!document.getElementById('trial-label').textContent.startsWith('{label}')"
            " || !document.getElementById('feedback').hidden",
        )
    page.fill("#feedback-text", "clear instructions")
    page.click("#feedback-send")
    page.wait_for_selector("#done:not([hidden])")
    assert page.text_content("#completion-code") == "GOOD123"
    assert not [m for m in console if "Content Security Policy" in m]  # the page runs under its own CSP
    page.wait_for_url("https://app.prolific.com/submissions/complete?cc=GOOD123", timeout=10_000)
    page.screenshot(path=artifacts / "session-done.png", full_page=True)
    assert len(planned) == n_trials

    out = tmp_path / "responses.csv"
    export_csv(bundle, app.extensions["psychinterp_db"], out)
    with out.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["trial_kind"] != "practice"]
    assert [(int(r["trial_index"]), int(r["chosen_query"]), int(r["confidence"])) for r in rows] == planned
    assert all(float(r["rt_ms"]) >= 1500 for r in rows)  # buttons stay locked for 1.5 s
    assert {r["session_status"] for r in rows} == {"completed"}
    assert {r["window_width"] for r in rows} == {"1280"}


def test_reload_mid_session_resumes_at_the_right_trial(live_server, page):
    app, url = live_server
    bundle = load_bundle(app.config["PSYCHINTERP"].bundle_dir)
    page.goto(url + "/" + PROLIFIC)
    _through_practice(page, bundle)
    _answer(page, bundle)
    _wait_until(page, "document.getElementById('trial-label').textContent.startsWith('Trial 2')")
    page.reload()
    page.wait_for_selector("#trial:not([hidden])")
    assert page.text_content("#trial-label").startswith("Trial 2 of")


def test_preview_writes_nothing_and_phones_are_turned_away(live_server, browser, page):
    app, url = live_server
    page.goto(url + "/?assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE&hitId=H&turkSubmitTo=https%3A%2F%2Fwww.mturk.com")
    page.wait_for_selector("#preview:not([hidden])")
    phone = browser.new_context(
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
        user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    ).new_page()
    phone.goto(url + "/")
    phone.wait_for_selector("#blocked:not([hidden])")
    with app.extensions["psychinterp_db"]() as db:
        assert db.scalar(select(func.count()).select_from(ParticipantSession)) == 0


def _main_trials(page, bundle, answer=None) -> list[tuple[int, int, int]]:
    """Answer every main trial as it comes (alternately by key and by click) until the feedback form shows;
    ``answer(page, bundle, by_key)`` answers one (default: the 2AFC buttons)."""
    answer = answer or (lambda page, bundle, by_key: _answer(page, bundle, key=by_key))
    answered = []
    while True:
        page.wait_for_selector("#trial:not([hidden]), #feedback:not([hidden])")
        if page.is_visible("#feedback"):
            return answered
        label = page.text_content("#trial-label")
        index = int(label.split()[1]) - 1
        chosen, confidence = answer(page, bundle, index % 2 == 0)
        answered.append((index, chosen, confidence))
        _wait_until(
            page,
            f"!document.getElementById('trial-label').textContent.startsWith('{label}')"
            " || !document.getElementById('feedback').hidden",
        )


@needs_reference
@pytest.mark.parametrize("name", RELEASED)
def test_a_whole_session_on_each_released_task_folder(page, tmp_path, name):
    from stimuli.imi_import import import_imi_tasks

    bundle = import_imi_tasks(REFERENCE / name, tmp_path / "bundle", study_id="imi", condition="natural").bundle
    with serving(tmp_path / "bundle", tmp_path / "live.db") as (app, url):
        page.goto(url + "/")
        page.click("#consent-yes")
        page.wait_for_selector("#instructions:not([hidden])")
        assert page.locator("#example .grid img").count() == 18  # 9 + 9 references of the first trial
        page.click("#instructions-done")
        page.click("#setup-go")
        page.click("#main-go")  # these folders have no practice trials
        answered = _main_trials(page, bundle)
        page.click("#feedback-send")
        page.wait_for_selector("#done:not([hidden])")
        assert page.text_content("#completion-code").strip()
        out = tmp_path / "responses.csv"
        export_csv(bundle, app.extensions["psychinterp_db"], out)
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["trial_index"]), int(r["chosen_query"]), int(r["confidence"])) for r in rows] == answered
    assert (
        len(rows) == 2
        and {r["correct"] for r in rows} == {"1"}
        and {r["session_status"] for r in rows} == {"completed"}
    )


def _answer_odd_one_out(page, bundle, by_key: bool, n: int = 4) -> tuple[int, int]:
    page.wait_for_selector("#trial:not([hidden])")
    assert page.locator("#refs-left").is_hidden() and page.locator("#trial .choice").count() == n
    assert page.locator("#trial .choice:disabled").count() == n  # locked at first, like the buttons
    page.wait_for_selector("#trial .choice:enabled")
    # Nothing is answered until a confidence follows the choice.
    assert page.locator(".answers button:disabled").count() == 3
    shown = {"queries": [page.get_attribute(f"#query-{i}", "src") for i in range(n)]}
    right = correct_choice(bundle, shown, lambda url: page.request.get(urljoin(page.url, url)).body())
    if by_key:
        page.keyboard.press(str(right + 1))
        assert page.get_attribute(f"#trial .choice[data-query='{right}']", "aria-pressed") == "true"
        page.keyboard.press("d")
    else:
        page.click(f"#trial .choice[data-query='{(right + 1) % n}']")  # a change of mind ...
        page.click(f"#trial .choice[data-query='{right}']")  # ... before the confidence
        page.click(".answers button[data-confidence='2']")
    return right, 3 if by_key else 2


def test_an_odd_one_out_session_in_the_browser(tiny_odd_bundle_dir, page, tmp_path, artifacts):
    with serving(tiny_odd_bundle_dir, tmp_path / "odd.db") as (app, url):
        bundle = load_bundle(tiny_odd_bundle_dir)
        console: list[str] = []
        page.on("console", lambda message: console.append(message.text))
        page.goto(url + "/" + PROLIFIC)
        page.click("#consent-yes")
        page.wait_for_selector("#instructions:not([hidden])")
        assert "odd one out" in page.text_content("#instructions-text")
        assert page.locator("#example .choice img").count() == 4 and page.locator("#example-left").is_hidden()
        page.click("#instructions-done")
        page.click("#setup-go")
        page.click("#practice-go")
        _answer_odd_one_out(page, bundle, by_key=True)
        page.wait_for_selector("#trial-feedback.right")
        page.screenshot(path=artifacts / "odd-one-out-practice.png", full_page=True)
        page.click("#main-go")
        planned = _main_trials(page, bundle, _answer_odd_one_out)
        page.click("#feedback-send")
        page.wait_for_selector("#done:not([hidden])")
        assert page.text_content("#completion-code") == "GOOD123"
        assert not [m for m in console if "Content Security Policy" in m]
        out = tmp_path / "responses.csv"
        export_csv(bundle, app.extensions["psychinterp_db"], out)
    with out.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["trial_kind"] != "practice"]
    assert [(int(r["trial_index"]), int(r["chosen_query"]), int(r["confidence"])) for r in rows] == planned
    assert {r["paradigm"] for r in rows} == {"odd_one_out_4"} and {r["correct"] for r in rows} == {"1"}
    assert {r["max_side"] for r in rows} == {""}


@pytest.mark.parametrize("width, height", [(1440, 900), (1024, 640)])
@pytest.mark.parametrize("paradigm", ["2afc", "odd_one_out"])
def test_the_trial_uses_the_window(
    browser, tiny_bundle_dir, tiny_odd_bundle_dir, tmp_path, artifacts, paradigm, width, height
):
    """References at least 150 px and queries at least 200 px wide where the window has the room (the page
    showed them at 100 and 150 px, half the screen empty), nothing beyond the window, and never beyond
    max_image_px; the worked example shows its answer."""
    bundle_dir = tiny_bundle_dir if paradigm == "2afc" else tiny_odd_bundle_dir
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    with serving(bundle_dir, tmp_path / "sizes.db") as (app, url):
        page.goto(url + "/")
        page.click("#consent-yes")
        page.wait_for_selector("#instructions:not([hidden])")
        assert "solved" in page.text_content("#example-caption")
        assert page.locator("#example .correct").count() == 1  # the right query, marked
        page.click("#instructions-done")
        page.click("#setup-go")
        page.click("#practice-go")
        page.wait_for_selector("#trial:not([hidden])")
        page.screenshot(path=artifacts / f"trial-{paradigm}-{width}x{height}.png")
        box = page.evaluate(
            """() => {
              const size = (sel) => [...document.querySelectorAll(sel)].filter((e) => e.offsetParent)
                .map((e) => e.getBoundingClientRect().width);
              const root = document.documentElement;
              return { refs: size("#trial .grid img"), queries: size("#trial-queries img"),
                       overflow: [root.scrollWidth - root.clientWidth, root.scrollHeight - root.clientHeight] };
            }"""
        )
    cap = app.config["PSYCHINTERP"].max_image_px
    assert box["overflow"] == [0, 0], box
    assert box["queries"] and 200 <= min(box["queries"]) and max(box["queries"]) <= cap, box
    if paradigm == "2afc":
        assert len(box["refs"]) == 18 and 150 <= min(box["refs"]) and max(box["refs"]) <= cap, box


def test_a_careful_person_in_a_17_trial_study_is_paid_with_the_default_criteria(browser, tmp_path, monkeypatch):
    """A careful person took the 17-trial odd-one-out study in 131 s and was failed for timing (a fixed
    135 s minimum). Here the server's clock moves as such a person's would (40 s on the instructions,
    about 5 s a trial: 131 s in all) and the default criteria apply: paid, and no rule excludes them."""
    from datetime import timedelta

    from analysis.exclusions import exclusion_table
    from analysis.load import load_responses
    from experiment_server import participant
    from experiment_server.db import utcnow
    from stimuli.build import build_study
    from stimuli.study import load_study_config
    from tests.conftest import write_tiny_study

    study = write_tiny_study(
        tmp_path / "study",
        conditions=("natural",),
        units=16,
        paradigm="odd_one_out",
        odd_one_out={"images": 5},
        tasks={"trials_per_task": 16, "catch_trials_per_task": 1, "practice_trials": 1},
    )
    build_study(load_study_config(study), tmp_path / "bundle")
    bundle = load_bundle(tmp_path / "bundle")
    clock = {"now": utcnow()}
    monkeypatch.setattr(participant, "utcnow", lambda: clock["now"])

    def spend(seconds: float) -> None:
        clock["now"] += timedelta(seconds=seconds)

    app = create_app(
        {
            "bundle_dir": tmp_path / "bundle",
            "database_url": f"sqlite:///{tmp_path / 'careful.db'}",
            "prolific": {"completion_code": "GOOD123", "failed_code": "BAD456"},
        }
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.route("https://app.prolific.com/**", lambda route: route.fulfill(body="prolific", content_type="text/plain"))
    try:
        page.goto(f"http://127.0.0.1:{server.server_port}/" + PROLIFIC)
        page.click("#consent-yes")
        page.wait_for_selector("#instructions:not([hidden])")
        spend(40)  # reading the instructions and the worked example
        page.click("#instructions-done")
        page.click("#setup-go")
        page.click("#practice-go")
        spend(5)
        _answer_odd_one_out(page, bundle, by_key=True, n=5)
        page.wait_for_selector("#trial-feedback.right")
        page.click("#main-go")

        def careful(page, bundle, by_key):
            spend(5)
            return _answer_odd_one_out(page, bundle, by_key, n=5)

        answered = _main_trials(page, bundle, careful)
        page.click("#feedback-send")
        page.wait_for_selector("#done:not([hidden])")
        assert page.text_content("#completion-code") == "GOOD123"
        assert page.text_content("#done-text") == "You have completed the study."
    finally:
        server.shutdown()
        thread.join()
    assert len(answered) == 17
    out = tmp_path / "responses.csv"
    export_csv(bundle, app.extensions["psychinterp_db"], out)
    (row,) = exclusion_table(load_responses(out)).to_dict("records")
    assert 120 <= row["session_s"] <= 140 and row["failed_rules"] == "", row


def test_an_answer_sooner_than_the_per_trial_minimum_is_explained_kept_and_sent_again(
    tiny_bundle_dir, tmp_path, page, artifacts
):
    """The server refuses an answer sooner than min_single_trial_s after its trial was served (425). The page's
    1.5 s button lock keeps people above the default 1 s; with an 8 s minimum a quick click meets it: the page
    says what to do, keeps the answer and sends it again once the wait is over."""
    from sqlalchemy import func, select

    from experiment_server.db import Response

    criteria = {**SCRIPTED_CRITERIA, "min_single_trial_s": 8.0, "max_fast_trial_share": 1.0}
    with serving(tiny_bundle_dir, tmp_path / "quick.db", criteria=criteria) as (app, url):
        bundle = load_bundle(tiny_bundle_dir)
        page.goto(url + "/")
        _through_practice(page, bundle)
        _answer(page, bundle)  # as soon as the buttons unlock (and the test has found the answer): a few seconds
        page.wait_for_selector("#status:has-text('Please take a little more time to look at each trial')")
        page.wait_for_selector("#trial:not([hidden])")  # the next trial shows; the line stays until it is sent
        assert "a little more time" in page.text_content("#status")
        page.screenshot(path=artifacts / "too-early.png", full_page=True)

        def stored() -> int:
            with app.extensions["psychinterp_db"]() as db:
                return db.scalar(select(func.count()).select_from(Response).where(Response.phase == "main"))

        assert stored() == 0
        _wait_until(page, "document.getElementById('status').textContent === ''", 15)
        assert stored() == 1
