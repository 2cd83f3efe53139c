"""Helpers that drive the participant API as the page does (tests and the demo's scripted participants)."""

from __future__ import annotations

import socket
import time
from typing import Any

from contracts.bundle import Bundle
from psychinterp.scripted import page_settings

__all__ = ["page_settings"]  # re-exported for the tests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(client, seconds: float = 30.0) -> None:
    """Poll a freshly started server (an httpx client) until it answers."""
    import httpx

    deadline = time.monotonic() + seconds
    while True:
        try:
            client.get("/")
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def start(client, expect: int = 201, **params) -> dict[str, Any]:
    body = {"platform": "direct", "consent_version": page_settings(client)["consentVersion"], **params}
    response = client.post("/api/sessions", json=body)
    assert response.status_code == expect, response.get_json()
    return response.get_json()


def answer_body(index: int, chosen: int = 0, confidence: int = 2, rt: float = 1234.5) -> dict[str, Any]:
    return {"trial_index": index, "chosen_query": chosen, "confidence": confidence, "rt_ms": rt}


def correct_choice(bundle: Bundle, trial_json: dict[str, Any]) -> int:
    """The right answer for a served trial, found by its query images (the test knows the answer key)."""
    shas = [q.removeprefix("/images/").removesuffix(".png") for q in trial_json["queries"]]
    candidates = [*bundle.manifest.practice_trials, *bundle.manifest.all_trials()]
    condition = trial_json.get("condition")
    trial = next(t for t in candidates if list(t.queries) == shas and condition in (None, t.condition))
    return bundle.answer_key.answers[trial.trial_id].max_query


def pass_practice(client, bundle: Bundle, token: str, wrong_first_blocks: int = 0) -> dict[str, Any]:
    state = client.get(f"/api/sessions/{token}").get_json()
    while state["practice_block"] is not None and state["status"] == "active":
        block = state["practice_block"]
        for i in range(state["practice_trials"]):
            trial = client.get(f"/api/sessions/{token}/practice/{block}/{i}").get_json()
            right = correct_choice(bundle, trial)
            chosen = 1 - right if block <= wrong_first_blocks else right
            stored = client.post(f"/api/sessions/{token}/practice/{block}/responses", json=answer_body(i, chosen))
            assert stored.status_code == 201, stored.get_json()
        state = client.get(f"/api/sessions/{token}").get_json()
    return state


def answer_all(client, bundle: Bundle, token: str, n_trials: int, correct: bool = True, skip_catch: bool = False):
    for i in range(n_trials):
        trial = client.get(f"/api/sessions/{token}/trials/{i}").get_json()
        right = correct_choice(bundle, trial)
        response = client.post(f"/api/sessions/{token}/responses", json=answer_body(i, right if correct else 1 - right))
        assert response.status_code == 201, response.get_json()
