"""Scripted participants: the whole participant flow through the server's HTTP API, as the page runs it.

``client`` is a Flask test client or an ``httpx.Client`` with a ``base_url``;
``decide(trial) -> (chosen_query, confidence)`` answers one trial from its
JSON (image URLs only, as a browser sees it).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from contracts.errors import PsychinterpError

Decide = Callable[[dict[str, Any]], tuple[int, int]]

# Scripted participants answer in milliseconds, all from one address: a server that they (and only they)
# take part in drops the minimum times and the per-address start limit. A study's real server keeps both.
SCRIPTED_CRITERIA = {"min_instruction_s": 0, "min_session_s": 0, "min_trial_s": 0, "min_single_trial_s": 0}
SCRIPTED_SERVER = {"criteria": SCRIPTED_CRITERIA, "rate_limits": {"session_start": "100000 per minute"}}
_SETTINGS = re.compile(r'<script id="settings" type="application/json">(.*?)</script>', re.S)


class FlowError(PsychinterpError):
    """The server answered a scripted participant unexpectedly (the command line prints it, no traceback)."""


def _payload(response) -> Any:
    return response.get_json() if hasattr(response, "get_json") else response.json()


def _call(client, method: str, path: str, body: dict | None = None, ok=(200, 201)) -> Any:
    response = client.get(path) if method == "GET" else client.post(path, json=body)
    for _ in range(3):  # answered sooner than the server's per-trial minimum: wait as it says, as the page does
        if response.status_code != 425:
            break
        time.sleep(_payload(response)["retry_after_s"] + 0.05)
        response = client.post(path, json=body)
    if response.status_code not in ok:
        raise FlowError(f"{method} {path}: {response.status_code} {_payload(response)}")
    return _payload(response)


def _pixels_digest(client, url: str) -> str:
    import hashlib
    import io

    from PIL import Image

    response = client.get(url)
    if response.status_code != 200:
        raise FlowError(f"GET {url}: {response.status_code}")
    data = response.data if hasattr(response, "data") else response.content
    with Image.open(io.BytesIO(data)) as image:
        return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


def page_settings(client) -> dict[str, Any]:
    """The settings the participant page hands its script (never an answer or a code)."""
    response = client.get("/")
    page = response.get_data(as_text=True) if hasattr(response, "get_data") else response.text
    return json.loads(_SETTINGS.search(page).group(1))


def consent_version(client) -> str:
    return page_settings(client)["consentVersion"]


def run_session(
    client,
    decide: Decide,
    rng: np.random.Generator | None = None,
    platform: dict[str, str] | None = None,
    feedback: str | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Consent, instructions, practice (until passed or failed), main trials, completion.

    Returns the completion reply, or the session state when ``stop_after``
    main trials were answered (a participant who leaves mid-way).
    """
    rng = rng or np.random.default_rng()
    body = {"platform": "direct", **(platform or {}), "consent_version": consent_version(client)}
    body["window"] = {"width": 1280, "height": 800, "device_pixel_ratio": 1.0}
    session = _call(client, "POST", "/api/sessions", body)
    token = session["token"]
    base = f"/api/sessions/{token}"

    # Like a person, remember the practice feedback: a trial seen again (under new URLs: they name the
    # slot, never the image) is recognised by its queries' pixels and answered as the feedback said.
    # A wrong answer rules that query out: with two queries the other is right, with more the next try differs.
    learned: dict[tuple[str, ...], int] = {}
    ruled_out: dict[tuple[str, ...], set[int]] = {}

    def respond(path: str, index: int, trial: dict[str, Any]) -> dict[str, Any]:
        key = tuple(_pixels_digest(client, url) for url in trial["queries"])
        chosen, confidence = decide(trial)
        wrong = ruled_out.get(key, set())
        if key in learned:
            chosen = learned[key]
        elif chosen in wrong:
            chosen = next(q for q in range(len(trial["queries"])) if q not in wrong)
        answer = {"trial_index": index, "chosen_query": int(chosen), "confidence": int(confidence)}
        if trial.get("shown"):  # a main trial's signed record of when the server served it, sent back
            answer["shown"] = trial["shown"]
        answer["rt_ms"] = float(rng.uniform(1500, 6000))
        stored = _call(client, "POST", path, answer)
        if stored.get("correct") is True:
            learned[key] = int(chosen)
        elif stored.get("correct") is False:
            ruled_out.setdefault(key, set()).add(int(chosen))
            if len(trial["queries"]) - len(ruled_out[key]) == 1:
                learned[key] = next(q for q in range(len(trial["queries"])) if q not in ruled_out[key])
        return stored

    _call(client, "POST", f"{base}/phase", {"phase": "instructions"})
    state = _call(client, "GET", base)
    if state["practice_block"] is not None:
        _call(client, "POST", f"{base}/phase", {"phase": "practice"})
    while state["status"] == "active" and state["practice_block"] is not None:
        block = state["practice_block"]
        for i in range(state["practice_next_trial"] or 0, state["practice_trials"]):
            trial = _call(client, "GET", f"{base}/practice/{block}/{i}")
            respond(f"{base}/practice/{block}/responses", i, trial)
        state = _call(client, "GET", base)
    if state["status"] == "active":
        _call(client, "POST", f"{base}/phase", {"phase": "main"})
        for i in range(state["next_trial"] or 0, state["n_trials"]):
            if stop_after is not None and i >= stop_after:
                return _call(client, "GET", base)
            respond(f"{base}/responses", i, _call(client, "GET", f"{base}/trials/{i}"))
        if feedback:
            _call(client, "POST", f"{base}/feedback", {"text": feedback})
    return _call(client, "POST", f"{base}/complete") | {"token": token}


_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def admin_login(client, username: str, password: str) -> str:
    """Log in on the experimenter's pages as a browser does (the login form, its CSRF token, the cookie)
    and return the dashboard's HTML; a login that bounces is an error naming where it went."""

    def text(response) -> str:
        return response.get_data(as_text=True) if hasattr(response, "get_data") else response.text

    token = _CSRF.search(text(client.get("/admin/login"))).group(1)
    posted = client.post("/admin/login", data={"username": username, "password": password, "csrf_token": token})
    if posted.status_code != 302 or not posted.headers["Location"].rstrip("/").endswith("/admin"):
        raise PsychinterpError(f"admin login as {username!r}: {posted.status_code} to {posted.headers.get('Location')}")
    dashboard = client.get("/admin/")
    if dashboard.status_code != 200:
        raise PsychinterpError(
            f"admin login as {username!r} did not hold: /admin/ answered {dashboard.status_code} "
            f"(to {dashboard.headers.get('Location')})"
        )
    return text(dashboard)
