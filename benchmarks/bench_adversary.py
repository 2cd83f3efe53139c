"""A script participant that uses every signal but the pixels: is it ever above chance, or paid?

The bundle is built so that the signals would tell: every max-activating image is a noisy texture and
every min-activating one nearly flat, so their PNG files differ several-fold in size, and the builder
writes each trial's max query just before its min query. Catch queries copy references.

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

It waits out the server's per-trial minimum (all sessions at once, so waiting costs it nothing), then
completes its sessions and checks whether it got the pass code, or a place on a payment list, and tries
PID variants for a second session. Target: accuracy on main and catch trials within chance +- 2 SE over
at least 200 trials each; no pass code, no payment-list entry, no second session (RESULT
bot_accuracy_above_chance).

Then the scripts that were paid before per-trial timing and transformed catch copies, 48 sessions each,
all at once, on tasks of 10 main and 40 catch trials (a guesser passes 80 % of 40 with p = 9e-5):

(a) waits out every minimum, answers at random, never reports its phases;
(b) reports its phases and waits out the instruction minimum, answers catch trials by compressed size
    (the query whose IDAT length is nearest a max reference's), main trials at random;
(c) the same, answering catch trials by exact pixel equality with a reference.

Target: none paid (no pass code, no approve-list line), main and catch accuracy within 2 SE of chance.
Last line: RESULT scripts_paid. A person in chromium is still paid: tests/test_browser.py.

Run: .venv/bin/python benchmarks/bench_adversary.py
"""

from __future__ import annotations

import hashlib
import re
import struct
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
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


WAITING_SESSIONS = 48
WAITING_MAIN, WAITING_CATCH = 10, 40  # 40 catch trials: a guesser passes 80 % of them with p = 9e-5
PAUSE_S = 1.05  # the scripts wait out the server's per-trial minimum (1 s), as long as they must


def build_waiting_bundle(out: Path) -> Path:
    """56 tasks of 10 main and 40 catch trials: 48 sessions of one script run at once, each on its own task."""
    return common.synthetic_bundle(
        out,
        n_units=56,
        trials_per_task=WAITING_MAIN,
        repetitions=WAITING_MAIN,
        catch_trials_per_task=WAITING_CATCH,
        pixels=texture_or_flat,
    )


def by_compressed_size(references: dict[str, list[Fetched]], queries: list[Fetched], rng) -> int:
    """Script (b): the query whose compressed image data (IDAT length) is nearest a max reference's and
    furthest from every min reference's; a tie (equal lengths tell nothing) is a coin flip."""
    lengths = {side: [len(image_data(r.data)) for r in refs] for side, refs in references.items()}
    scores = []
    for q in queries:
        n = len(image_data(q.data))
        scores.append(min(abs(n - m) for m in lengths["max"]) - min(abs(n - m) for m in lengths["min"]))
    best = [i for i, v in enumerate(scores) if v == min(scores)]
    return int(rng.choice(best))


def by_exact_pixels(references: dict[str, list[Fetched]], queries: list[Fetched], rng) -> int:
    """Script (c): a query whose decoded pixels equal a max reference's is chosen, one equal to a min
    reference's is not; otherwise a coin flip."""
    from experiment_server.images import decode

    sides = {side: {decode(r.data).tobytes() for r in refs} for side, refs in references.items()}
    for i, q in enumerate(queries):
        pixels = decode(q.data).tobytes()
        if pixels in sides["max"]:
            return i
        if pixels in sides["min"]:
            return 1 - i
    return int(rng.integers(len(queries)))


def at_random(references, queries, rng) -> int:
    """Script (a): never looks at an image."""
    return int(rng.integers(len(queries)))


WAITING_SCRIPTS = {
    "(a) waits, random answers, never reports its phases": (at_random, False, False),
    "(b) waits, catch trials by compressed size": (by_compressed_size, True, True),
    "(c) waits, catch trials by exact pixels": (by_exact_pixels, True, True),
}


def play_waiting(base_url: str, consent: str, pid: str, rule, report_phases: bool, fetch_images: bool, seed: int):
    """One session of a script that waits out every minimum: (answers as (trial_index, chosen), completion)."""
    import httpx

    rng = np.random.default_rng(seed)
    with httpx.Client(base_url=base_url, timeout=60) as http:
        body = {"platform": "prolific", "participant_id": pid, "consent_version": consent}
        session = http.post("/api/sessions", json=body).json()
        token = session["token"]
        if report_phases:
            http.post(f"/api/sessions/{token}/phase", json={"phase": "instructions"})
            time.sleep(16)  # the instruction minimum, waited out (in parallel, waiting is free)
            http.post(f"/api/sessions/{token}/phase", json={"phase": "main"})
        chosen = []
        for i in range(session["n_trials"]):
            shown_at = time.monotonic()
            shown = http.get(f"/api/sessions/{token}/trials/{i}").json()
            references: dict[str, list[Fetched]] = {"max": [], "min": []}
            queries: list[Fetched] = []
            if fetch_images:
                get = lambda u: Fetched(u, http.get(u).content, {}, 0.0)  # noqa: E731
                references = {side: [get(u) for u in shown["references"][side]] for side in ("max", "min")}
                queries = [get(u) for u in shown["queries"]]
            answer = rule(references, queries or shown["queries"], rng)
            time.sleep(max(0.0, shown_at + PAUSE_S - time.monotonic()))
            body = {"trial_index": i, "chosen_query": answer, "confidence": 3, "rt_ms": 2000.0, "shown": shown["shown"]}
            posted = http.post(f"/api/sessions/{token}/responses", json=body)
            if posted.status_code == 425:  # the server's clock ran behind ours: wait as it says, once more
                time.sleep(posted.json()["retry_after_s"] + 0.05)
                posted = http.post(f"/api/sessions/{token}/responses", json=body)
            assert posted.status_code == 201, posted.text
            chosen.append((i, answer))
        time.sleep(2)
        return token, chosen, http.post(f"/api/sessions/{token}/complete").json()


def admin_lists(base_url: str) -> tuple[str, str]:
    import httpx

    with httpx.Client(base_url=base_url, timeout=30) as admin:
        token = CSRF.search(admin.get("/admin/login").text).group(1)
        admin.post("/admin/login", data={"username": "ada", "password": PASSWORD, "csrf_token": token})
        return admin.get("/admin/export/prolific-approve.txt").text, admin.get("/admin/export/prolific-bonus.csv").text


def serve(bundle_dir: Path, work: Path, name: str):
    from experiment_server import create_app
    from experiment_server.admin import set_admin_password
    from psychinterp.serving import create_server, start_in_thread

    app = create_app(
        {
            "bundle_dir": bundle_dir,
            "database_url": f"sqlite:///{work / f'{name}.db'}",
            "secret_key": "fixed key so that the benchmark is repeatable",
            "image_cache_dir": work / f"served-{name}",
            "prolific": {"completion_code": "PASS0001", "failed_code": "FAIL0001"},
            # A script may come from as many addresses as it likes: the start limit is not what is measured.
            "rate_limits": {"session_start": "10000 per minute"},
        }
    )
    set_admin_password(app.extensions["psychinterp_db"], "ada", PASSWORD)
    server = create_server(app, "127.0.0.1", 0, threads=24)
    return app, server, start_in_thread(server), f"http://127.0.0.1:{server.effective_port}"


def consent_of(base_url: str) -> str:
    import httpx

    return re.search(r'"consentVersion": ?"([0-9a-f]+)"', httpx.get(base_url + "/").text).group(1)


def main() -> int:
    import logging

    import httpx

    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # 48 sessions at once queue on purpose

    from contracts.bundle import load_bundle
    from psychinterp.serving import stop

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

    app, server, thread, base_url = serve(bundle_dir, work, "signals")
    consent = consent_of(base_url)

    # All sessions start first, so each reserves its own task (a failed session frees its task again).
    started = time.perf_counter()
    sessions = []
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for s in range(SESSIONS):
            pid = hashlib.sha256(f"bot{s}".encode()).hexdigest()[:24]
            body = {"platform": "prolific", "participant_id": pid, "consent_version": consent}
            sessions.append(http.post("/api/sessions", json=body).json())
    assert len({_task_of(app, s["token"]) for s in sessions}) == SESSIONS

    def play_signals(session) -> tuple[list, str]:
        """The signals script on one session: it waits out the per-trial minimum, and never reports phases."""
        token, records = session["token"], []
        task = next(t for t in bundle.manifest.tasks if t.task_id == _task_of(app, token))
        with httpx.Client(base_url=base_url, timeout=60) as http:

            def fetch(url: str) -> Fetched:
                began = time.perf_counter()
                response = http.get(url)
                headers = {k.lower(): v for k, v in response.headers.items()}
                return Fetched(url, response.content, headers, time.perf_counter() - began)

            for i in range(session["n_trials"]):
                shown_at = time.monotonic()
                shown = http.get(f"/api/sessions/{token}/trials/{i}").json()
                refs = {side: [fetch(u) for u in shown["references"][side]] for side in ("max", "min")}
                chosen, votes = decide(refs, [fetch(u) for u in shown["queries"]])
                time.sleep(max(0.0, shown_at + PAUSE_S - time.monotonic()))
                body = {"trial_index": i, "chosen_query": chosen, "confidence": 3, "rt_ms": 2000.0}
                body["shown"] = shown["shown"]  # the server's signed record of when it served the trial
                assert http.post(f"/api/sessions/{token}/responses", json=body).status_code == 201
                trial = task.trials[i]
                records.append((trial.kind, chosen, answers[trial.trial_id].max_query, votes))
            return records, http.post(f"/api/sessions/{token}/complete").json()["completion_code"]

    with ThreadPoolExecutor(SESSIONS) as pool:
        played = list(pool.map(play_signals, sessions))
    measured = [record for records, _ in played for record in records]
    codes = [code for _, code in played]
    seconds_per_session = (time.perf_counter() - started) / SESSIONS

    # A second session under variants of a PID that already took part.
    variants = [pid.upper(), pid + ".", pid + "_2", pid[:-1]]
    with httpx.Client(base_url=base_url, timeout=30) as http:
        second = [
            http.post(
                "/api/sessions", json={"platform": "prolific", "participant_id": v, "consent_version": consent}
            ).status_code
            for v in variants
        ]
    approve, bonus = admin_lists(base_url)
    stop(server, thread)

    print(
        f"{SESSIONS} sessions at once, {seconds_per_session:.1f} s of wall time each; the script answers with the "
        "first signal that decides"
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

    # The scripts that won against the server before per-trial timing and transformed catch copies.
    waiting_dir = build_waiting_bundle(work / "waiting-bundle")
    waiting = load_bundle(waiting_dir)
    keys = waiting.answer_key.answers
    # Baseline, in the same run: the image-reading scripts on the stored files of the same catch trials.
    catch_trials = [t for task in waiting.manifest.tasks for t in task.trials if t.kind == "catch"]
    for name, (rule, _, fetch_images) in WAITING_SCRIPTS.items():
        if fetch_images:
            rng = np.random.default_rng(0)
            hits = [rule(*naive_fetcher(waiting_dir, t), rng) == keys[t.trial_id].max_query for t in catch_trials]
            print(f"{name}, on the stored files (baseline): catch accuracy {np.mean(hits):.3f} over {len(hits)}")
    total_paid, within = 0, True
    for number, (name, (rule, report_phases, fetch_images)) in enumerate(WAITING_SCRIPTS.items()):
        app, server, thread, base_url = serve(waiting_dir, work, f"waiting{number}")
        consent = consent_of(base_url)
        began = time.perf_counter()
        with ThreadPoolExecutor(WAITING_SESSIONS) as pool:
            futures = [
                pool.submit(
                    play_waiting,
                    base_url,
                    consent,
                    hashlib.sha256(f"{name}{s}".encode()).hexdigest()[:24],
                    rule,
                    report_phases,
                    fetch_images,
                    s,
                )
                for s in range(WAITING_SESSIONS)
            ]
            runs = [future.result() for future in futures]
        approve, _ = admin_lists(base_url)
        tasks = {t.task_id: t for t in waiting.manifest.tasks}
        right = {"main": [], "catch": []}
        for token, chosen, _ in runs:
            task = tasks[_task_of(app, token)]
            for i, answer in chosen:
                trial = task.trials[i]
                right[trial.kind].append(answer == keys[trial.trial_id].max_query)
        stop(server, thread)
        paid = sum(done["completion_code"] == "PASS0001" for _, _, done in runs) + len(approve.split())
        total_paid += paid
        reasons = sorted({str(done["failure_reason"]) for _, _, done in runs})
        print(f"{name}: {WAITING_SESSIONS} sessions at once in {time.perf_counter() - began:.0f} s")
        for kind in ("main", "catch"):
            accuracy, n = float(np.mean(right[kind])), len(right[kind])
            se = np.sqrt(0.25 / n)
            within &= abs(accuracy - 0.5) <= 2 * se
            print(f"  {kind}: accuracy {accuracy:.3f} over {n} trials (chance 0.5 +- 2 SE: +- {2 * se:.3f})")
        print(f"  paid: {paid} (pass codes plus approve-list lines); failure reasons: {reasons}")
    print(f"main and catch accuracy of every waiting script within 2 SE of chance: {within}")
    print(
        f"RESULT scripts_paid {total_paid} sessions target ==0 "
        f"{'PASS' if total_paid == 0 and within and ok else 'FAIL'}"
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
