"""The experimenter dashboard with 10,000 sessions and 450,000 responses, on SQLite and PostgreSQL.

Each database gets the same synthetic study: 10,000 sessions over three days (completed, failed,
abandoned at each stage, reserved), 48 main responses for each session that reached the main
trials and completed. The dashboard page and its JSON (`/api/admin/dashboard`) are fetched 20
times each through Flask's test client after two warm-ups (the first sums the hours that are over,
which later refreshes keep); p95, the first fetch and the page's size are reported.
Baseline, in the same run: what the dashboard did before, rebuilding its tables in Python from
every session and all its responses.

Targets: page and JSON p95 under 300 ms, page under 200 KB.

Run: .venv/bin/python benchmarks/bench_dashboard.py
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server_common import percentile, reset_postgres, synthetic_bundle  # noqa: E402

N_SESSIONS = 10_000
RESPONSES_PER_SESSION = 48
REPEATS = 20
TARGET_MS = 300.0
TARGET_KB = 200.0
PASSWORD = "correct horse battery staple"


def populate(app, bundle) -> int:
    """Sessions and responses written in bulk; returns the number of responses."""
    from sqlalchemy import insert, text

    from experiment_server.db import ParticipantSession, Response, Study

    rng = np.random.default_rng(0)
    start = datetime(2026, 11, 28, 8, tzinfo=UTC)
    tasks = bundle.manifest.tasks
    sessions, responses = [], []
    for i in range(N_SESSIONS):
        created = start + timedelta(seconds=float(rng.uniform(0, 3 * 24 * 3600)))
        stage = rng.choice(
            ["completed", "failed", "main", "practice", "instructions", "consent"],
            p=[0.9, 0.03, 0.02, 0.02, 0.02, 0.01],
        )
        reached = ["consent", "instructions", "practice", "main", "completed"]
        depth = 4 if stage in ("completed", "failed") else reached.index(stage)
        times = [created + timedelta(seconds=30 * k + float(rng.uniform(0, 20))) for k in range(5)]
        task = tasks[i % len(tasks)]
        sessions.append(
            {
                "id": i + 1,
                "token": f"t{i:08d}",
                "study_id": bundle.manifest.study_id,
                "task_id": task.task_id,
                "participant_id": f"{i:024x}",
                "platform": "prolific",
                "status": {"completed": "completed", "failed": "failed"}.get(stage, "active"),
                "failure_reason": "attention" if stage == "failed" else None,
                "created_at": created,
                "reserved_until": created + timedelta(hours=1),
                "consented_at": times[0],
                "instructions_at": times[1] if depth >= 1 else None,
                "practice_at": times[2] if depth >= 2 else None,
                "main_at": times[3] if depth >= 3 else None,
                "completed_at": created + timedelta(minutes=float(rng.uniform(6, 20))) if depth == 4 else None,
                "practice_blocks": 1,
                "feedback": "fine" if i % 50 == 0 else None,
            }
        )
        if depth == 4:
            for k, trial in enumerate(task.trials[:RESPONSES_PER_SESSION]):
                responses.append(
                    {
                        "session_id": i + 1,
                        "phase": "main",
                        "block": 0,
                        "trial_index": k,
                        "trial_id": trial.trial_id,
                        "chosen_query": int(rng.integers(2)),
                        "confidence": 2,
                        "rt_ms": 2500.0,
                        "correct": bool(rng.random() < 0.8),
                        "focus_lost": 0,
                        "created_at": times[3] + timedelta(seconds=10 * k),
                    }
                )
    session_factory = app.extensions["psychinterp_db"]
    with session_factory() as db, db.begin():
        if db.get(Study, bundle.manifest.study_id) is None:
            db.add(Study(study_id=bundle.manifest.study_id))
            db.flush()
        db.execute(insert(ParticipantSession), sessions)
        for k in range(0, len(responses), 50_000):
            db.execute(insert(Response), responses[k : k + 50_000])
    if db.get_bind().dialect.name == "postgresql":
        # A database that has run for days has its statistics (autovacuum); one loaded a moment ago
        # would not, and its planner would guess a table of a few rows.
        with session_factory() as db:
            db.execute(text("ANALYZE"))
            db.commit()
    return len(responses)


def timed(client, path: str) -> tuple[list[float], int, float]:
    started = time.perf_counter()
    assert client.get(path).status_code == 200
    first = (time.perf_counter() - started) * 1000
    assert client.get(path).status_code == 200
    times, size = [], 0
    for _ in range(REPEATS):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
        size = len(response.data)
    return times, size, first


def baseline_ms(app) -> float:
    """The dashboard before: every session with all its responses, its tables built in Python."""
    from experiment_server import admin
    from experiment_server.checks import session_summary
    from experiment_server.context import paradigm

    with app.test_request_context(), app.extensions["psychinterp_db"]() as db:
        started = time.perf_counter()
        for session in admin._sessions(db):
            session_summary(session, admin._trials_of(session), paradigm())
        return (time.perf_counter() - started) * 1000


def measure(name: str, database_url: str, bundle_dir: Path) -> dict:
    from contracts.bundle import load_bundle
    from experiment_server import create_app
    from experiment_server.admin import set_admin_password

    app = create_app({"bundle_dir": bundle_dir, "database_url": database_url, "rate_limits": {"login": "1000/minute"}})
    set_admin_password(app.extensions["psychinterp_db"], "ada", PASSWORD)
    started = time.perf_counter()
    n_responses = populate(app, load_bundle(bundle_dir))
    filled = time.perf_counter() - started
    client = app.test_client()
    page = client.get("/admin/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert (
        client.post("/admin/login", data={"username": "ada", "password": PASSWORD, "csrf_token": token}).status_code
        == 302
    )
    page_times, page_bytes, first = timed(client, "/admin/")
    json_times, _, _ = timed(client, "/api/admin/dashboard")
    return {
        "name": name,
        "responses": n_responses,
        "fill_s": filled,
        "page_p95": percentile(page_times, 95),
        "json_p95": percentile(json_times, 95),
        "page_kb": page_bytes / 1024,
        "first_ms": first,
        "baseline_ms": baseline_ms(app),
    }


def main() -> None:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = synthetic_bundle(Path(tmp) / "bundle", n_units=45, trials_per_task=45, repetitions=10)
        results.append(measure("SQLite", f"sqlite:///{Path(tmp) / 'dash.db'}", bundle_dir))
        results.append(measure("PostgreSQL", reset_postgres(), bundle_dir))
    print(f"dashboard: {N_SESSIONS:,} sessions, {results[0]['responses']:,} responses; {REPEATS} fetches each")
    header = f"{'database':<12}{'page p95 ms':>13}{'JSON p95 ms':>13}{'first page ms':>15}{'page KB':>10}"
    print(header + f"{'before: all rows in Python ms':>32}")
    for r in results:
        row = f"{r['name']:<12}{r['page_p95']:>13.1f}{r['json_p95']:>13.1f}{r['first_ms']:>15.0f}{r['page_kb']:>10.1f}"
        print(row + f"{r['baseline_ms']:>32.0f}")
    worst = max(max(r["page_p95"], r["json_p95"]) for r in results)
    heaviest = max(r["page_kb"] for r in results)
    ratio = worst / min(r["baseline_ms"] for r in results)
    ok = worst < TARGET_MS and heaviest < TARGET_KB
    print(f"slowest p95 / the old full rebuild: {ratio:.3f}")
    verdict = "PASS" if ok else "FAIL"
    size = f"page {heaviest:.0f} KB <{TARGET_KB:.0f}"
    print(f"RESULT dashboard_p95 {worst:.1f} ms target <{TARGET_MS:.0f} ({size}) {verdict}")


if __name__ == "__main__":
    main()
