"""Shared by the server benchmarks: a synthetic bundle, server processes, simulated participants."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get("PSYCHINTERP_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
PG_BENCH_DB = "psychinterp_bench"


def solid_colour(rng: np.random.Generator, strong: bool) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.new("RGB", (224, 224), tuple(int(v) for v in rng.integers(0, 256, 3))))


def synthetic_bundle(
    out: Path,
    n_units: int = 40,
    trials_per_task: int = 40,
    repetitions: int = 10,
    catch_trials_per_task: int = 5,
    pixels: Callable[[np.random.Generator, bool], np.ndarray] = solid_colour,
) -> Path:
    """A bundle made by the real task builder (no torch, no model). ``pixels(rng, strong)`` draws each
    image: ``strong`` for the max side's references and query. Default: solid colours."""
    from contracts.bundle import SCHEMA_VERSION, AnswerKey, BundleModel, Manifest, Unit, write_bundle, write_image_bytes
    from contracts.units import ChannelSelector
    from stimuli.images import png_bytes
    from stimuli.tasks import BatchImages, QueryImage, UnitStimuli, assemble_tasks, plan_study

    rng = np.random.default_rng(0)

    def image(strong: bool = False) -> str:
        return write_image_bytes(out, png_bytes(pixels(rng, strong)))

    unit_ids = [f"bench__layer{u % 4}__{u}" for u in range(n_units)]
    stimuli = {}
    for unit in unit_ids:
        batches = {}
        for b in range(2):
            batches[b] = BatchImages(
                natural_min=tuple(image() for _ in range(9)),
                natural_max=tuple(image(True) for _ in range(9)),
                natural_min_activations=tuple(range(9)),
                natural_max_activations=tuple(range(10, 19)),
                queries={
                    "max": QueryImage(image(True), 20.0, 1, "max.png"),
                    "min": QueryImage(image(), -1.0, 1, "min.png"),
                },
            )
        stimuli[unit] = UnitStimuli(unit, batches)
    plan = plan_study(
        {"bench": unit_ids},
        ["natural"],
        repetitions=repetitions,
        trials_per_task=trials_per_task,
        catch_trials_per_task=catch_trials_per_task,
        batches=2,
        seed=0,
    )
    tasks, practice, answers = assemble_tasks(plan, stimuli)
    manifest = Manifest(
        schema_version=SCHEMA_VERSION,
        study_id="bench",
        title="Server benchmark",
        models=[BundleModel(id="bench", display_name="bench", source="torchvision")],
        units=[
            Unit(unit_id=u, model_id="bench", layer=u.split("__")[1], selector=ChannelSelector(channel=i))
            for i, u in enumerate(unit_ids)
        ],
        conditions=["natural"],
        reference_images=[],
        tasks=tasks,
        practice_trials=practice,
    )
    write_bundle(out, manifest, AnswerKey(schema_version=SCHEMA_VERSION, study_id="bench", answers=answers))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} did not come up within {timeout} s")


def _log(path: Path):
    # A file, not a pipe: a pipe nobody reads fills up and blocks the server.
    return path.open("ab")


BENCH_REDIS = os.environ.get("PSYCHINTERP_BENCH_REDIS", "redis://127.0.0.1:6379/9")


def server_config(folder: Path, bundle: Path, shared_limits: bool = False) -> Path:
    """The documented deploy's settings: behind one proxy, whose X-Forwarded-For names each participant
    (the benchmark's clients send one each), with every rate limit at its default; with ``shared_limits``
    (several workers) counted in an emptied Redis database, as docs/deploy.md says."""
    import yaml

    settings = {"bundle_dir": str(bundle), "trusted_proxies": 1}
    if shared_limits:
        import redis

        redis.Redis.from_url(BENCH_REDIS).flushdb()
        settings["rate_limit_storage_uri"] = BENCH_REDIS
    path = folder / "server.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def start_sqlite_server(bundle: Path, db: Path, port: int) -> subprocess.Popen:
    config = server_config(db.parent, bundle)
    command = [str(VENV_BIN / "psychinterp"), "serve", str(bundle), "--db", f"sqlite:///{db}", "--port", str(port)]
    command += ["--config", str(config)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=_log(db.with_suffix(".log")))
    wait_for(f"http://127.0.0.1:{port}/")
    return process


def reset_postgres() -> str:
    """A fresh benchmark database beside the admin one; returns its SQLAlchemy URL."""
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {PG_BENCH_DB}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    return f"{base}/{PG_BENCH_DB}"


def start_gunicorn(bundle: Path, database_url: str, port: int, workers: int = 3, threads: int = 8) -> subprocess.Popen:
    subprocess.run([str(VENV_BIN / "psychinterp"), "db", "upgrade", "--db", database_url], check=True, cwd=ROOT)
    config = server_config(bundle.parent, bundle, shared_limits=workers > 1)
    env = {**os.environ, "PSYCHINTERP_SERVER_CONFIG": str(config), "PSYCHINTERP_DATABASE_URL": database_url}
    command = [
        str(VENV_BIN / "gunicorn"),
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--bind",
        f"127.0.0.1:{port}",
        "experiment_server.wsgi:app_from_env()",
    ]
    log = _log(bundle.parent / "gunicorn.log")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    wait_for(f"http://127.0.0.1:{port}/")
    return process


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        process.wait(timeout=30)


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"trial": [], "response": [], "start": []})
    errors: dict[str, int] = field(default_factory=dict)
    acknowledged: list[tuple[str, int, int, int]] = field(default_factory=list)  # token, trial, chosen, confidence

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def participant(
    http,
    base_url: str,
    stats: Stats,
    consent: str,
    start_delay: float,
    interval: float,
    until: float,
    rng: np.random.Generator,
    retry: bool = False,
) -> dict:
    """One simulated participant: start, then fetch a trial and answer it ``interval`` seconds later, again and
    again (``interval`` at least the server's per-trial minimum, 1 s by default).

    ``http`` is an ``aiohttp.ClientSession`` (a light client, so that the load generator leaves the
    2 cores to the server). With ``retry``, connection failures are retried with backoff, as the
    page does, and after a failure the participant asks the server where to resume.
    """
    import aiohttp

    # Each participant is its own client behind the proxy (the server trusts one X-Forwarded-For hop).
    address = {"X-Forwarded-For": f"10.{rng.integers(256)}.{rng.integers(256)}.{rng.integers(1, 255)}"}

    async def call(method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        async with http.request(method, base_url + path, json=body, headers=address) as response:
            return response.status, await response.json(content_type=None)

    await asyncio.sleep(start_delay)
    t0 = time.perf_counter()
    try:
        status, session = await call("POST", "/api/sessions", {"platform": "direct", "consent_version": consent})
    except aiohttp.ClientError:
        stats.error("start connection")
        return {}
    stats.latencies["start"].append(time.perf_counter() - t0)
    if status != 201:
        stats.error(f"start {status}")
        return {}
    token, index, n = session["token"], 0, session["n_trials"]
    resumed = 0
    while index < n and time.monotonic() < until:
        tick = time.monotonic()
        answer = {
            "trial_index": index,
            "chosen_query": int(rng.integers(2)),
            "confidence": int(rng.integers(1, 4)),
            "rt_ms": float(rng.uniform(800, 1900)),
        }
        try:
            t0 = time.perf_counter()
            status, shown = await call("GET", f"/api/sessions/{token}/trials/{index}")
            stats.latencies["trial"].append(time.perf_counter() - t0)
            if status != 200:
                stats.error(f"trial {status}")
                return {"token": token}
            answer["shown"] = shown["shown"]  # the server's signed record of when it served the trial
            # Looking at the trial: the server takes an answer only after its per-trial minimum.
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - tick)))
            t0 = time.perf_counter()
            status, _ = await call("POST", f"/api/sessions/{token}/responses", answer)
            stats.latencies["response"].append(time.perf_counter() - t0)
            if status not in (200, 201):
                stats.error(f"response {status}")
                return {"token": token}
            stats.acknowledged.append((token, index, answer["chosen_query"], answer["confidence"]))
            index += 1
        except (TimeoutError, aiohttp.ClientError):
            stats.error("connection")
            if not retry:
                return {"token": token}
            await asyncio.sleep(0.5 + rng.uniform(0, 0.5))
            try:
                status, state = await call("GET", f"/api/sessions/{token}")
                if status == 200:
                    index = state["next_trial"] if state["next_trial"] is not None else n
                    resumed += 1
            except (TimeoutError, aiohttp.ClientError):
                pass
            continue
    return {"token": token, "resumed": resumed, "answered": index}
