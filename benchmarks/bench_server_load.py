"""Server load: 300 simulated participants on loopback, each answering a trial every 2 s.

Two set-ups, each given the same load: `psychinterp serve` (one waitress process, SQLite in WAL
mode with synchronous commits), then gunicorn (3 workers x 8 threads) with PostgreSQL. The
participants run in this process on asyncio (httpx), on the same 2 cores as the server. Reported:
p50/p99 latency of trial fetches and response POSTs, and every error. Target: p99 < 100 ms with
0 errors, in both set-ups.

Run: .venv/bin/python benchmarks/bench_server_load.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import server_common as common  # noqa: E402

PARTICIPANTS = 300
INTERVAL_S = 2.0
RAMP_S = 20.0  # arrivals spread over this long
STEADY_S = 60.0
TARGET_MS = 100.0


async def drive(base_url: str) -> common.Stats:
    import aiohttp
    import httpx

    from psychinterp.scripted import consent_version

    stats = common.Stats()
    consent = consent_version(httpx.Client(base_url=base_url))
    until = time.monotonic() + RAMP_S + STEADY_S
    rngs = [np.random.default_rng(i) for i in range(PARTICIPANTS)]
    connector = aiohttp.TCPConnector(limit=PARTICIPANTS + 10)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as http:
        await asyncio.gather(
            *(
                common.participant(
                    http, base_url, stats, consent, RAMP_S * i / PARTICIPANTS, INTERVAL_S, until, rngs[i]
                )
                for i in range(PARTICIPANTS)
            )
        )
    return stats


def row(name: str, stats: common.Stats) -> tuple[str, float, float, float, float, int, int]:
    trial, response = stats.latencies["trial"], stats.latencies["response"]
    return (
        name,
        common.percentile(trial, 50) * 1000,
        common.percentile(trial, 99) * 1000,
        common.percentile(response, 50) * 1000,
        common.percentile(response, 99) * 1000,
        len(response),
        sum(stats.errors.values()),
    )


def main() -> int:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = common.synthetic_bundle(Path(tmp) / "bundle")
        port = common.free_port()
        server = common.start_sqlite_server(bundle, Path(tmp) / "load.db", port)
        try:
            stats = asyncio.run(drive(f"http://127.0.0.1:{port}"))
        finally:
            common.stop(server)
        results.append((row("psychinterp serve + SQLite", stats), stats.errors))

        database_url = common.reset_postgres()
        port = common.free_port()
        server = common.start_gunicorn(bundle, database_url, port)
        try:
            stats = asyncio.run(drive(f"http://127.0.0.1:{port}"))
        finally:
            common.stop(server)
        results.append((row("gunicorn (3x8) + PostgreSQL", stats), stats.errors))

    print(
        f"server load: {PARTICIPANTS} participants, one trial each {INTERVAL_S:.0f} s, "
        f"{RAMP_S:.0f} s ramp + {STEADY_S:.0f} s steady, loopback, 2 cores shared with the clients"
    )
    header = ("set-up", "trial p50", "trial p99", "resp p50", "resp p99", "responses", "errors")
    print(f"{header[0]:<30}" + "".join(f"{h:>10}" for h in header[1:5]) + f"{header[5]:>11}{header[6]:>8}")
    for (name, t50, t99, r50, r99, n, errors), detail in results:
        print(f"{name:<30}{t50:>8.1f}ms{t99:>8.1f}ms{r50:>8.1f}ms{r99:>8.1f}ms{n:>11}{errors:>8}")
        if detail:
            print(f"  errors: {detail}")
    worst = max(max(r[0][2], r[0][4]) for r in results)
    errors = sum(r[0][6] for r in results)
    verdict = "PASS" if worst < TARGET_MS and errors == 0 else "FAIL"
    print(f"RESULT server_p99_latency {worst:.1f} ms target <{TARGET_MS:.0f} with 0 errors ({errors} errors) {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
