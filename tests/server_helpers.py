"""Helpers that drive the participant API as the page does (tests and the demo's scripted participants)."""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contracts.bundle import Bundle
from psychinterp.scripted import SCRIPTED_CRITERIA, page_settings

__all__ = ["SCRIPTED_CRITERIA", "page_settings"]  # re-exported for the tests


POSTGRES_SERVER_URL = os.environ.get("PSYCHINTERP_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# Each pytest-xdist worker wipes a database of its own (test_gw0, ...), so that workers run side by side.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
POSTGRES_URL = f"{POSTGRES_SERVER_URL}_{_WORKER}" if _WORKER else POSTGRES_SERVER_URL


def wipe_postgres(engine) -> None:
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))


@functools.cache  # once per worker, not once per test
def _create_database(url: str) -> None:
    """Create ``url``'s database on the server if it is missing (a worker's own test database)."""
    from sqlalchemy import create_engine, make_url, text

    name = make_url(url).database
    server = create_engine(POSTGRES_SERVER_URL, isolation_level="AUTOCOMMIT")
    try:
        with server.connect() as conn:
            if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        server.dispose()


def fresh_postgres(url: str = POSTGRES_URL):
    """An engine on an emptied test database; skips where PostgreSQL cannot be reached, except in CI."""
    import pytest
    from sqlalchemy import create_engine
    from sqlalchemy.exc import OperationalError

    engine = create_engine(url)
    try:
        if url != POSTGRES_SERVER_URL:
            _create_database(url)
        wipe_postgres(engine)
    except OperationalError as exc:
        if os.environ.get("CI"):
            raise  # CI has PostgreSQL; failing to reach it is a failure, not a skip
        pytest.skip(f"PostgreSQL is not reachable at {url}: {exc.orig}")
    return engine


REDIS_SERVER = os.environ.get("PSYCHINTERP_TEST_REDIS", "redis://127.0.0.1:6379")


def fresh_redis() -> str:
    """The URL of an emptied Redis database for shared rate limits (one per pytest-xdist worker); skips where
    Redis cannot be reached, except in CI."""
    import pytest
    import redis

    url = f"{REDIS_SERVER}/{10 + int((_WORKER or 'gw0').removeprefix('gw')) % 6}"
    try:
        client = redis.Redis.from_url(url, socket_timeout=5)
        client.flushdb()
        client.close()
    except redis.exceptions.ConnectionError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Redis is not reachable at {url}: {exc}")
    return url


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


def answer_body(
    index: int, chosen: int = 0, confidence: int = 2, rt: float = 1234.5, shown: str | None = None
) -> dict[str, Any]:
    body = {"trial_index": index, "chosen_query": chosen, "confidence": confidence, "rt_ms": rt}
    return body | ({"shown": shown} if shown is not None else {})


def show(client, token: str, *indices: int) -> dict[int, str]:
    """Fetch main trials as the page does before answering them: each one's signed ``shown``, by index (the
    server times the trial from its fetch, and takes an answer only with it)."""
    shown = {}
    for i in indices:
        response = client.get(f"/api/sessions/{token}/trials/{i}")
        assert response.status_code == 200
        shown[i] = (response.get_json() if hasattr(response, "get_json") else response.json())["shown"]
    return shown


def image_fetcher(client) -> Callable[[str], bytes]:
    """GET an image URL's bytes with a Flask test client or an httpx client."""

    def fetch(url: str) -> bytes:
        response = client.get(url)
        assert response.status_code == 200, url
        return response.data if hasattr(response, "data") else response.content

    return fetch


def _pixels_key(data: bytes) -> str:
    from experiment_server.images import decode

    return hashlib.sha256(decode(data).tobytes()).hexdigest()


@functools.cache
def _stored_pixels(image_dir: Path) -> dict[str, str]:
    """Content hash -> hash of the decoded pixels, for every image of a bundle."""
    return {path.stem: _pixels_key(path.read_bytes()) for path in image_dir.glob("*.png")}


@functools.cache
def _stored_thumbnails(image_dir: Path) -> dict[str, Any]:
    """Content hash -> a 16 x 16 thumbnail, to recognise a catch trial's transformed copies."""
    return {path.stem: _thumbnail(path.read_bytes()) for path in image_dir.glob("*.png")}


def _thumbnail(data: bytes):
    import io

    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR), dtype=np.float32)


def correct_choice(bundle: Bundle, trial_json: dict[str, Any], client) -> int:
    """The right answer for a served trial. Its URLs and bytes name no image, so the test finds the trial
    as a person would, by the queries' pixels (and then, unlike a person, reads the answer key). A catch
    trial's queries are transformed copies: that trial is the catch trial whose queries look most alike."""
    fetch = client if callable(client) and not hasattr(client, "get") else image_fetcher(client)
    served = [fetch(q) for q in trial_json["queries"]]
    shown = [_pixels_key(data) for data in served]
    stored = _stored_pixels(bundle.root / "images")
    candidates = [*bundle.manifest.practice_trials, *bundle.manifest.all_trials()]
    condition = trial_json.get("condition")
    candidates = [t for t in candidates if condition in (None, t.condition)]
    trial = next((t for t in candidates if [stored[q] for q in t.queries] == shown), None)
    if trial is None:
        thumbnails = _stored_thumbnails(bundle.root / "images")
        looks = [_thumbnail(data) for data in served]

        def distance(t) -> float:
            return sum(
                min(abs(look - thumbnails[q]).mean(), abs(look[:, ::-1] - thumbnails[q]).mean())
                for look, q in zip(looks, t.queries, strict=True)
            )

        trial = min((t for t in candidates if t.kind == "catch"), key=distance)
    return bundle.answer_key.answers[trial.trial_id].max_query


def pass_practice(client, bundle: Bundle, token: str, wrong_first_blocks: int = 0) -> dict[str, Any]:
    state = client.get(f"/api/sessions/{token}").get_json()
    while state["practice_block"] is not None and state["status"] == "active":
        block = state["practice_block"]
        for i in range(state["practice_trials"]):
            trial = client.get(f"/api/sessions/{token}/practice/{block}/{i}").get_json()
            right = correct_choice(bundle, trial, client)
            chosen = (right + 1) % len(trial["queries"]) if block <= wrong_first_blocks else right
            stored = client.post(f"/api/sessions/{token}/practice/{block}/responses", json=answer_body(i, chosen))
            assert stored.status_code == 201, stored.get_json()
        state = client.get(f"/api/sessions/{token}").get_json()
    return state


def answer_all(client, bundle: Bundle, token: str, n_trials: int, correct: bool = True, skip_catch: bool = False):
    for i in range(n_trials):
        trial = client.get(f"/api/sessions/{token}/trials/{i}").get_json()
        right = correct_choice(bundle, trial, client)
        response = client.post(
            f"/api/sessions/{token}/responses",
            json=answer_body(i, right if correct else (right + 1) % len(trial["queries"]), shown=trial["shown"]),
        )
        assert response.status_code == 201, response.get_json()
