"""A script participant that uses every signal but the pixels: is it ever above chance, or paid?

The bundle is built so that the signals would tell: every max-activating image is a noisy texture and
every min-activating one nearly flat, so their PNG files differ several-fold in size, and the builder
writes each trial's max query just before its min query. Catch queries are copies of references.

The script plays each trial with one rule, signals in this order:

1. catch: a query whose bytes, or whose PNG image data (IDAT payload), equal a reference's, is
   taken as a copy of that reference (max side: choose it; min side: choose the other);
2. size: the larger query file (Content-Length) is the max query;
3. ETag and Last-Modified: the query whose validator sorts first;
4. timing: the query that was served faster.

Each signal's accuracy is printed too, on the trials where it decided.

- Baseline, in the same run: the same script against the files as a naive server would serve them
  (the bundle's content-hash names, stored bytes and sizes).
- Measured: the script against `psychinterp serve` (waitress, SQLite, the default criteria) over HTTP.

It then completes its sessions as fast as it can and checks whether it got the pass code, or a
place on a payment list, and tries PID variants for a second session.

Targets: accuracy on main and catch trials within chance +- 2 SE over at least 200 trials each; no
pass code, no payment-list entry, no second session. Last line: RESULT bot_accuracy_above_chance.

Run: .venv/bin/python benchmarks/bench_adversary.py
"""

from __future__ import annotations

import hashlib
import re
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import server_common as common  # noqa: E402

SESSIONS = 10
MAIN_PER_TASK = 20
CATCH_PER_TASK = 20
PASSWORD = "benchmark admin password"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def texture_or_flat(rng: np.random.Generator, strong: bool) -> np.ndarray:
    """Max images: noise textures; min images: nearly flat (so their PNG sizes differ several-fold)."""
    spread = 120 if strong else 4
    return np.clip(rng.integers(0, 256, 3) + rng.normal(0, spread, size=(96, 96, 3)), 0, 255).astype(np.uint8)


def build_bundle(out: Path) -> Path:
    """The real task builder's bundle (catch queries are copies), one task per session, none repeated."""
    return common.synthetic_bundle(
        out,
        n_units=MAIN_PER_TASK * SESSIONS,
        trials_per_task=MAIN_PER_TASK,
        repetitions=1,
        catch_trials_per_task=CATCH_PER_TASK,
        pixels=texture_or_flat,
    )


def image_data(png: bytes) -> bytes:
    """The concatenated IDAT payloads: the compressed image data, whatever the chunking or padding."""
    position, data = 8, b""
    while position + 8 <= len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        if kind == b"IDAT":
            data += png[position + 8 : position + 8 + length]
        position += 12 + length
    return data


class Fetched:
    def __init__(self, url: str, data: bytes, headers: dict[str, str], seconds: float):
        self.url, self.data, self.headers, self.seconds = url, data, headers, seconds


def decide(references: dict[str, list[Fetched]], queries: list[Fetched]) -> tuple[int, dict[str, int | None]]:
    """The script's answer, and what each signal alone would have answered (None: it could not tell)."""
    votes: dict[str, int | None] = {}
    fingerprints = {
        side: {f(r) for r in refs for f in (lambda r: r.data, lambda r: image_data(r.data))}
        for side, refs in references.items()
    }
    matched = None
    for i, q in enumerate(queries):
        prints = {q.data, image_data(q.data)}
        if prints & fingerprints["max"]:
            matched = i
        elif prints & fingerprints["min"]:
            matched = 1 - i
    votes["catch copy"] = matched
    sizes = [int(q.headers.get("content-length", len(q.data))) for q in queries]
    votes["size"] = int(np.argmax(sizes)) if sizes[0] != sizes[1] else None
    validators = [q.headers.get("etag", "") + q.headers.get("last-modified", "") for q in queries]
    votes["etag / last-modified"] = int(np.argmin(validators)) if validators[0] != validators[1] else None
    votes["timing"] = int(np.argmin([q.seconds for q in queries]))
    for signal in ("catch copy", "size", "etag / last-modified", "timing"):
        if votes[signal] is not None:
            return votes[signal], votes
    return 0, votes


def naive_fetcher(bundle: Path, trial) -> tuple[dict[str, list[Fetched]], list[Fetched]]:
    """What a server that served the stored files would show: content-hash URLs, stored bytes, mtimes."""
    from email.utils import formatdate

    def read(sha: str) -> Fetched:
        path = bundle / "images" / f"{sha}.png"
        data = path.read_bytes()
        headers = {
            "content-length": str(len(data)),
            "etag": f'"{path.stat().st_mtime_ns}-{len(data)}"',
            "last-modified": formatdate(path.stat().st_mtime, usegmt=True),
        }
        return Fetched(f"/images/{sha}.png", data, headers, 0.0)

    refs = {"max": [read(s) for s in trial.references.max], "min": [read(s) for s in trial.references.min]}
    return refs, [read(s) for s in trial.queries]


def score(records: list[tuple[str, int, int, dict]]) -> dict:
    """records: (kind, chosen, right, votes) -> accuracy per kind, and per signal where it decided."""
    out = {}
    for kind in ("main", "catch"):
        mine = [r for r in records if r[0] == kind]
        out[kind] = (float(np.mean([c == r for _, c, r, _ in mine])), len(mine))
        for signal in mine[0][3]:
            decided = [(v[signal], r) for _, _, r, v in mine if v[signal] is not None]
            out[f"{kind}: {signal}"] = (
                float(np.mean([c == r for c, r in decided])) if decided else float("nan"),
                len(decided),
            )
    return out


def main() -> int:
    import httpx

    from contracts.bundle import load_bundle
    from experiment_server import create_app
    from experiment_server.admin import set_admin_password
    from psychinterp.serving import create_server, start_in_thread, stop

    work = Path(tempfile.mkdtemp(prefix="adversary-"))
    bundle_dir = build_bundle(work / "bundle")
    bundle = load_bundle(bundle_dir)
    answers = bundle.answer_key.answers

    # Baseline: every task's trials, read as a naive server would serve them.
    baseline = []
    for task in bundle.manifest.tasks:
        for trial in task.trials:
            chosen, votes = decide(*naive_fetcher(bundle_dir, trial))
            baseline.append((trial.kind, chosen, answers[trial.trial_id].max_query, votes))

    app = create_app(
        {
            "bundle_dir": bundle_dir,
            "database_url": f"sqlite:///{work / 'adversary.db'}",
            "secret_key": "fixed key so that the benchmark is repeatable",
            "image_cache_dir": work / "served",
            "prolific": {"completion_code": "PASS0001", "failed_code": "FAIL0001"},
        }
    )
    set_admin_password(app.extensions["psychinterp_db"], "ada", PASSWORD)
    server = create_server(app, "127.0.0.1", 0)
    thread = start_in_thread(server)
    base_url = f"http://127.0.0.1:{server.effective_port}"
    http = httpx.Client(base_url=base_url, timeout=30)
    consent = re.search(r'"consentVersion": ?"([0-9a-f]+)"', http.get("/").text).group(1)

    def fetch(url: str) -> Fetched:
        began = time.perf_counter()
        response = http.get(url)
        return Fetched(
            url, response.content, {k.lower(): v for k, v in response.headers.items()}, time.perf_counter() - began
        )

    # All sessions start first, so each reserves its own task (a failed session frees its task again).
    measured, codes, started = [], [], time.perf_counter()
    sessions = []
    for s in range(SESSIONS):
        pid = hashlib.sha256(f"bot{s}".encode()).hexdigest()[:24]
        body = {"platform": "prolific", "participant_id": pid, "consent_version": consent}
        sessions.append(http.post("/api/sessions", json=body).json())
    assert len({_task_of(app, s["token"]) for s in sessions}) == SESSIONS
    for session in sessions:
        token = session["token"]
        task = next(t for t in bundle.manifest.tasks if t.task_id == _task_of(app, token))
        for i in range(session["n_trials"]):
            shown = http.get(f"/api/sessions/{token}/trials/{i}").json()
            refs = {side: [fetch(u) for u in shown["references"][side]] for side in ("max", "min")}
            chosen, votes = decide(refs, [fetch(u) for u in shown["queries"]])
            body = {"trial_index": i, "chosen_query": chosen, "confidence": 3, "rt_ms": 2000.0}
            assert http.post(f"/api/sessions/{token}/responses", json=body).status_code == 201
            trial = task.trials[i]
            measured.append((trial.kind, chosen, answers[trial.trial_id].max_query, votes))
        codes.append(http.post(f"/api/sessions/{token}/complete").json()["completion_code"])
    seconds_per_session = (time.perf_counter() - started) / SESSIONS

    # A second session under variants of a PID that already took part.
    variants = [pid.upper(), pid + ".", pid + "_2", pid[:-1]]
    second = [
        http.post(
            "/api/sessions", json={"platform": "prolific", "participant_id": v, "consent_version": consent}
        ).status_code
        for v in variants
    ]

    admin = httpx.Client(base_url=base_url, timeout=30)
    token = CSRF.search(admin.get("/admin/login").text).group(1)
    admin.post("/admin/login", data={"username": "ada", "password": PASSWORD, "csrf_token": token})
    approve = admin.get("/admin/export/prolific-approve.txt").text
    bonus = admin.get("/admin/export/prolific-bonus.csv").text
    http.close()
    admin.close()
    stop(server, thread)

    print(
        f"{SESSIONS} sessions, {seconds_per_session:.1f} s each; the script answers with the first signal that decides"
    )
    print(f"{'':34s} {'naive server (baseline)':>26s} {'psychinterp serve':>22s}")
    before, after = score(baseline), score(measured)
    for key in after:
        b, a = before[key], after[key]
        print(f"{key:34s} {b[0]:>18.3f} (n={b[1]:4d}) {a[0]:>14.3f} (n={a[1]:4d})")
    worst = 0.0
    for kind in ("main", "catch"):
        accuracy, n = after[kind]
        se = np.sqrt(0.25 / n)
        worst = max(worst, abs(accuracy - 0.5) / se)
        print(
            f"{kind}: accuracy {accuracy:.3f} over {n} trials; "
            f"chance 0.5 +- 2 SE = [{0.5 - 2 * se:.3f}, {0.5 + 2 * se:.3f}]"
        )
    paid = set(codes) & {"PASS0001"}
    print(f"completion codes: {sorted(set(codes))}; pass code given: {bool(paid)}")
    print(f"approve list entries: {len(approve.split())}; bonus list entries: {len(bonus.split())}")
    print(f"second sessions under PID variants: {second}")
    ok = (
        worst <= 2
        and all(after[k][1] >= 200 for k in ("main", "catch"))
        and not paid
        and not approve.strip()
        and not bonus.strip()
        and all(code != 201 for code in second)
    )
    ratio = before["main"][0] / max(after["main"][0], 1e-9)
    print(f"baseline main accuracy / measured: {ratio:.2f}")
    print(
        f"RESULT bot_accuracy_above_chance {worst:.2f} SE target <= 2 (no code, no payment, no second session) "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return 0


def _task_of(app, token: str) -> str:
    """The benchmark's own lookup of the session's task, to score answers (the script never sees it)."""
    from sqlalchemy import select

    from experiment_server.db import ParticipantSession

    with app.extensions["psychinterp_db"]() as db:
        return db.scalar(select(ParticipantSession.task_id).where(ParticipantSession.token == token))


if __name__ == "__main__":
    sys.exit(main())
