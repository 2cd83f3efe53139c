"""Allocation strategies and precision-based stopping: the cell math, the server's choices, atomicity."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sqlalchemy import select

from contracts.bundle import load_bundle
from experiment_server.allocation import Z95, cell_precision
from experiment_server.db import ParticipantSession, Study
from tests.server_helpers import (
    POSTGRES_URL,
    SCRIPTED_CRITERIA,
    answer_all,
    fresh_postgres,
    pass_practice,
    start,
    wipe_postgres,
)
from tests.test_server import make_app


def _cell(rng, units=40, participants=30, trials=20, unit_sd=0.12, participant_sd=0.06, base=0.75):
    """One balanced cell's per-unit and per-participant counts, and its accuracy (mean of unit accuracies)."""
    easiness = base + rng.normal(0, unit_sd, units)
    ability = rng.normal(0, participant_sd, participants)
    deck = np.concatenate([rng.permutation(units) for _ in range(-(-participants * trials // units))])
    shown = deck[: participants * trials].reshape(participants, trials)
    correct = rng.random(shown.shape) < np.clip(easiness[shown] + ability[:, None], 0, 1)
    n_u = np.bincount(shown.ravel(), minlength=units)
    k_u = np.bincount(shown.ravel(), weights=correct.ravel(), minlength=units)
    unit_counts = list(zip(n_u.tolist(), k_u.astype(int).tolist(), strict=True))
    participant_counts = [(trials, int(row.sum())) for row in correct]
    return unit_counts, participant_counts, float(np.mean(k_u[n_u > 0] / n_u[n_u > 0]))


def test_the_cell_half_width_matches_the_spread_of_replicate_cells():
    rng = np.random.default_rng(0)
    cells = [_cell(rng) for _ in range(400)]
    empirical = np.std([c[2] for c in cells], ddof=1)
    estimated = np.sqrt(np.mean([(cell_precision(u, p).half_width / Z95) ** 2 for u, p, _ in cells]))
    assert estimated == pytest.approx(empirical, rel=0.12)
    precision = cell_precision(*cells[0][:2])
    assert 0 < precision.floor < precision.half_width
    assert precision.responses_needed(precision.half_width) == precision.responses
    assert precision.responses_needed(precision.floor * 0.9) == float("inf")
    assert precision.responses_needed((precision.half_width + precision.floor) / 2) > precision.responses
    assert cell_precision([(3, 2)], [(3, 2)]) is None  # one unit, one participant: no spread yet


def test_a_full_study_tells_new_participants_and_keeps_running_ones(tmp_path, tiny_bundle_dir):
    bundle = load_bundle(tiny_bundle_dir)
    app = make_app(
        tiny_bundle_dir, tmp_path / "s.db", stopping={"max_participants_per_cell": 1, "min_participants_per_cell": 2}
    )
    client = app.test_client()
    sessions = [start(client, participant_id=f"w{i}") for i in range(2)]  # one per cell
    assert {s["condition"] for s in sessions} == {t.condition for t in bundle.manifest.tasks}
    refused = client.post("/api/sessions", json={**_start_body(client), "participant_id": "late"})
    assert refused.status_code == 409 and "This study is full" in refused.get_json()["detail"]
    with app.extensions["psychinterp_db"]() as db:
        study = db.scalars(select(Study)).one()
        assert study.stopped_at is not None and "reached 1 participants" in study.stop_reason
    assert "This study is full" in client.get("/").get_data(as_text=True)  # the landing page says it first
    # The running sessions go on to the end.
    token = sessions[0]["token"]
    pass_practice(client, bundle, token)
    answer_all(client, bundle, token, sessions[0]["n_trials"])
    assert client.post(f"/api/sessions/{token}/complete").get_json()["status"] == "completed"
    # The export records why the study stopped.
    import pandas as pd

    from experiment_server.export import export_csv

    export_csv(bundle, app.extensions["psychinterp_db"], tmp_path / "out.csv")
    stopped = pd.read_csv(tmp_path / "out.csv")["study_stopped"]
    assert stopped.notna().all() and stopped.str.contains("every cell met the stopping rule").all()


def _start_body(client) -> dict:
    """A start request like the page's (helpers.start adds the same fields)."""
    import re

    version = re.search(r'"consentVersion": "([^"]+)"', client.get("/").get_data(as_text=True)).group(1)
    return {"consent_version": version, "participant_id": "x"}


def test_precision_allocation_serves_the_widest_cell_and_closes_precise_ones(tmp_path, tiny_bundle_dir):
    bundle = load_bundle(tiny_bundle_dir)
    stopping = {"half_width_pp": 5, "min_participants_per_cell": 2}
    criteria = {"min_catch_accuracy": 0}  # the all-wrong participants complete (only completed answers count)
    app = make_app(tiny_bundle_dir, tmp_path / "p.db", allocation="precision", stopping=stopping, criteria=criteria)
    client = app.test_client()
    by_condition = {}
    # Two participants per cell: cell A gets one right and one wrong throughout, cell B all right.
    for i in range(4):
        session = start(client, participant_id=f"w{i}")
        by_condition.setdefault(session["condition"], []).append(session)
        first = list(by_condition)[0]
        pass_practice(client, bundle, session["token"])
        wrong = session["condition"] == first and len(by_condition[first]) == 2
        answer_all(client, bundle, session["token"], session["n_trials"], correct=not wrong)
        assert client.post(f"/api/sessions/{session['token']}/complete").get_json()["status"] == "completed"
    assert sorted(len(v) for v in by_condition.values()) == [2, 2]  # unestimated cells first, by fill
    wide = list(by_condition)[0]
    assert start(client, participant_id="next")["condition"] == wide  # the precise cell is closed
    assert start(client, participant_id="next2")["condition"] == wide
    # The dashboard shows each cell against its target.
    from experiment_server.admin import set_admin_password
    from tests.test_admin import PASSWORD, login

    set_admin_password(app.extensions["psychinterp_db"], "ada", PASSWORD)
    page = login(app.test_client()).get("/admin/").get_data(as_text=True)
    assert "Cells: allocation precision" in page and "closed: half-width 0.00 pp &lt;= 5.00 pp" in page
    import re

    wide_row = re.search(r'<tr data-cell="[^"]+ / ' + wide + r'">(.*?)</tr>', page, re.S).group(1)
    assert "open" in wide_row


@pytest.mark.parametrize("engine", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_fifty_concurrent_starts_never_exceed_a_cells_quota(tmp_path, tiny_bundle_dir, engine):
    from experiment_server import create_app

    stopping = {"max_participants_per_cell": 7, "min_participants_per_cell": 2}
    if engine == "postgres":
        pg = fresh_postgres(POSTGRES_URL)
        url = POSTGRES_URL
    else:
        url = f"sqlite:///{tmp_path / 'c.db'}"
    try:
        app = create_app(
            {
                "bundle_dir": tiny_bundle_dir,
                "database_url": url,
                "criteria": SCRIPTED_CRITERIA,
                "stopping": stopping,
                "rate_limits": {"session_start": "1000 per minute"},  # fifty arrivals from one test address
            }
        )
        barrier = threading.Barrier(50)

        def arrive(i):
            client = app.test_client()
            barrier.wait()
            return client.post("/api/sessions", json={**_start_body(client), "participant_id": f"c{i}"}).status_code

        with ThreadPoolExecutor(50) as pool:
            codes = list(pool.map(arrive, range(50)))
        assert codes.count(201) == 14 and codes.count(409) == 36, sorted(set(codes))
        with app.extensions["psychinterp_db"]() as db:
            tasks = db.scalars(select(ParticipantSession.task_id)).all()
        assert sorted(tasks.count(t) for t in set(tasks)) == [7, 7]
    finally:
        if engine == "postgres":
            wipe_postgres(pg)
            pg.dispose()


def test_a_running_script_cannot_stop_the_study_or_move_participants(tmp_path, tiny_bundle_dir):
    """Only completed, valid sessions' answers count toward a cell's precision (running ones count toward fill)."""
    bundle = load_bundle(tiny_bundle_dir)
    stopping = {"half_width_pp": 40, "min_participants_per_cell": 2, "max_participants_per_cell": 50}
    app = make_app(tiny_bundle_dir, tmp_path / "r.db", allocation="precision", stopping=stopping)
    client = app.test_client()
    scripts = [start(client, participant_id=f"s{i}") for i in range(4)]
    for session in scripts:  # all answered, never completed: a script waiting to see what its answers do
        pass_practice(client, bundle, session["token"])
        answer_all(client, bundle, session["token"], session["n_trials"])
    with app.extensions["psychinterp_db"]() as db:
        from experiment_server.assignment import cell_states, task_fill

        cells = cell_states(db, bundle.manifest.study_id, app.extensions["psychinterp_allocation"], task_fill(db, "x"))
    assert all(c.precision is None for c in cells)  # nothing counted yet
    assert start(client, participant_id="next")["token"]  # the study is still open
