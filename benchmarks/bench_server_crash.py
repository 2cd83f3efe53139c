"""Crash: kill -9 `psychinterp serve` (SQLite) in the middle of the load, restart it, check nothing was lost.

300 simulated participants answer a trial every 2 s. Half-way through, the server process gets
SIGKILL; it is restarted on the same database and port 2 s later. Participants retry with backoff
and then ask the server where to resume, as the page does. Afterwards every response the server
acknowledged (a 2xx reply) must be in the database with the values sent, and every session must
have resumed. Target: 0 acknowledged responses lost, 0 sessions that could not resume.

Run: .venv/bin/python benchmarks/bench_server_crash.py
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import server_common as common  # noqa: E402

PARTICIPANTS = 300
INTERVAL_S = 2.0
RAMP_S = 10.0
RUN_S = 50.0
KILL_AT_S = 30.0
DOWN_S = 2.0


async def run(bundle: Path, db: Path, port: int) -> tuple[common.Stats, list[dict], dict]:
    import aiohttp
    import httpx

    from psychinterp.scripted import consent_version

    base_url = f"http://127.0.0.1:{port}"
    server = common.start_sqlite_server(bundle, db, port)
    consent = consent_version(httpx.Client(base_url=base_url))
    stats = common.Stats()
    until = time.monotonic() + RAMP_S + RUN_S
    crash: dict = {}

    async def killer() -> None:
        nonlocal server
        await asyncio.sleep(KILL_AT_S)
        crash["acknowledged_before"] = len(stats.acknowledged)
        server.send_signal(signal.SIGKILL)
        server.wait()
        await asyncio.sleep(DOWN_S)
        started = time.monotonic()
        server = await asyncio.to_thread(common.start_sqlite_server, bundle, db, port)
        crash["restart_s"] = time.monotonic() - started

    rngs = [np.random.default_rng(i) for i in range(PARTICIPANTS)]
    connector = aiohttp.TCPConnector(limit=PARTICIPANTS + 10)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        kill = asyncio.create_task(killer())
        outcomes = await asyncio.gather(
            *(
                common.participant(
                    http, base_url, stats, consent, RAMP_S * i / PARTICIPANTS, INTERVAL_S, until, rngs[i], retry=True
                )
                for i in range(PARTICIPANTS)
            )
        )
        await kill
    common.stop(server)
    return stats, list(outcomes), crash


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        bundle = common.synthetic_bundle(Path(tmp) / "bundle")
        db = Path(tmp) / "crash.db"
        stats, outcomes, crash = asyncio.run(run(bundle, db, common.free_port()))
        with sqlite3.connect(db) as conn:
            stored = {
                (token, index): (chosen, confidence)
                for token, index, chosen, confidence in conn.execute(
                    "SELECT s.token, r.trial_index, r.chosen_query, r.confidence "
                    "FROM responses r JOIN participant_sessions s ON s.id = r.session_id WHERE r.phase = 'main'"
                )
            }
    lost = [a for a in stats.acknowledged if stored.get((a[0], a[1])) != (a[2], a[3])]
    started = [o for o in outcomes if o.get("token")]
    interrupted = [o for o in started if o.get("resumed", 0) > 0 or "answered" not in o]
    not_resumed = [o for o in started if "answered" not in o]
    print(
        f"server crash: {PARTICIPANTS} participants, one trial each {INTERVAL_S:.0f} s; SIGKILL at {KILL_AT_S:.0f} s,"
    )
    print(f"restart after {DOWN_S:.0f} s (up again {crash.get('restart_s', float('nan')):.1f} s later); SQLite, WAL")
    print(f"{'measurement':<52}{'count':>8}")
    for label, value in (
        ("sessions started", len(started)),
        ("responses acknowledged before the kill", crash.get("acknowledged_before", 0)),
        ("responses acknowledged in all", len(stats.acknowledged)),
        ("main-trial responses in the database", len(stored)),
        ("acknowledged responses missing or different", len(lost)),
        ("sessions that hit the outage", len(interrupted)),
        ("sessions that could not resume", len(not_resumed)),
        ("connection errors seen by participants (retried)", stats.errors.get("connection", 0)),
        ("other errors", sum(v for k, v in stats.errors.items() if k != "connection")),
    ):
        print(f"{label:<52}{value:>8}")
    if len(stats.errors) > 1:
        print(f"errors: {stats.errors}")
    verdict = "PASS" if not lost and not not_resumed and crash else "FAIL"
    print(
        f"RESULT lost_acknowledged_responses {len(lost)} count target ==0 (and {len(not_resumed)} sessions "
        f"not resumed) {verdict}"
    )
    return 0 if crash else 1


if __name__ == "__main__":
    sys.exit(main())
