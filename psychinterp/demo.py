"""``make demo``: a whole study, offline, on a small model and procedural images."""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import numpy as np
import typer
import yaml

DEMO_MODEL_ID = "resnet18_demo"
OBSERVERS = 6


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def prepare_demo_inputs(workdir: Path) -> Path:
    """Dataset, weights, models file and study config; returns the study config path."""
    from stimuli.demo_data import write_demo_dataset

    workdir.mkdir(parents=True, exist_ok=True)
    write_demo_dataset(workdir / "images", images_per_class=80)
    weights = workdir / "weights" / f"{DEMO_MODEL_ID}.pt"
    if not weights.exists():
        import torch

        from stimuli.registry import build_architecture
        from stimuli.specs import ModelSpec

        torch.manual_seed(0)
        spec = ModelSpec.model_validate(_model_entry(weights_file=None))
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(build_architecture(spec).state_dict(), weights)
    _write_if_changed(
        workdir / "models.yaml", yaml.safe_dump({"models": [_model_entry(Path("weights") / weights.name)]})
    )
    study = {
        "study_id": "demo",
        "title": "psychinterp demo study",
        "models_file": "models.yaml",
        "models": [DEMO_MODEL_ID],
        "units_per_model": 4,
        "dataset": {"path": "images", "batch_size": 32},
        "exemplars": {"batches": 4, "references": 9},
        "feature_visualization": {
            "image_size": 48,
            "padding": 8,
            "max_steps": 96,
            "relative_alphas": [0.1, 1.0],
            "refine_candidates": 1,
            "units_per_batch": 2,
        },
        "conditions": ["natural", "synthetic"],
        "tasks": {"trials_per_task": 4, "catch_trials_per_task": 1, "repetitions": 2, "practice_trials": 2},
        "seed": 0,
    }
    path = workdir / "study.yaml"
    _write_if_changed(path, yaml.safe_dump(study, sort_keys=False))
    return path


def _model_entry(weights_file: Path | None) -> dict:
    entry = {
        "id": DEMO_MODEL_ID,
        "display_name": "ResNet-18 (random init, demo)",
        "source": "torchvision",
        "constructor": "resnet18",
        "layers": {"include": ["layer1.*", "layer2.*"]},
        "metadata": {"train_images": 1},
    }
    if weights_file is not None:
        entry["weights_file"] = weights_file.as_posix()
    return entry


def run_observers(app, n_participants: int, seed: int = 0) -> None:
    """Machine observers (pixel-statistics similarity) taking the study through the real HTTP API."""
    from psychinterp.observers import http_images, make_observer
    from psychinterp.scripted import run_session

    rng = np.random.default_rng(seed)
    client = app.test_client()
    observer = make_observer("pixel", seed=seed + 1)  # its own stream, apart from the response times
    images = http_images(client)
    for _ in range(n_participants):
        run_session(client, lambda trial: observer.decide(trial, images), rng)


def _fingerprint(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run_demo(workdir: Path, host: str = "127.0.0.1", port: int = 5000, serve: bool = True) -> None:
    from analysis.exclusions import ExclusionCriteria
    from analysis.report import write_report
    from experiment_server import create_app
    from experiment_server.admin import set_admin_password
    from experiment_server.export import export_csv
    from stimuli.build import build_study
    from stimuli.errors import PsychinterpError
    from stimuli.study import load_study_config

    workdir = workdir.resolve()
    study_path = prepare_demo_inputs(workdir)
    bundle_dir = workdir / "bundle"
    stamp = bundle_dir / ".built-from"
    fingerprint = _fingerprint(study_path, workdir / "models.yaml")
    if not stamp.exists() or stamp.read_text() != fingerprint:
        typer.echo("building the demo bundle (first run only)")
        build_study(load_study_config(study_path), bundle_dir)
        stamp.write_text(fingerprint)
        # Responses to an older bundle would not match its trials.
        (workdir / "demo.db").unlink(missing_ok=True)
        (workdir / ".observers-done").unlink(missing_ok=True)
    database_url = f"sqlite:///{workdir / 'demo.db'}"
    try:
        app = create_app({"bundle_dir": bundle_dir, "database_url": database_url})
    except PsychinterpError:
        # A demo database from before migrations existed: its sample responses are made again.
        (workdir / "demo.db").unlink(missing_ok=True)
        (workdir / ".observers-done").unlink(missing_ok=True)
        app = create_app({"bundle_dir": bundle_dir, "database_url": database_url})
    password_file = workdir / "admin-password.txt"
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(12) + "\n")
    set_admin_password(app.extensions["psychinterp_db"], "admin", password_file.read_text().strip())
    marker = workdir / ".observers-done"
    if not marker.exists():
        run_observers(app, OBSERVERS)
        marker.write_text(fingerprint)
    responses = workdir / "responses.csv"
    n = export_csv(app.extensions["psychinterp_bundle"], app.extensions["psychinterp_db"], responses)
    # Scripted participants answer in milliseconds and see only a few trials: the time and
    # query-row rules are off for them; the catch-trial and practice rules stay.
    scripted = ExclusionCriteria(min_instruction_s=0, min_session_s=0, min_choices_per_query_row=0)
    page = write_report(responses, workdir / "report", criteria=scripted)
    typer.echo(f"exported {n} responses to {responses}")
    typer.echo(f"report: {page}")
    typer.echo(f"admin URL: http://{host}:{port}/admin/  login: admin / {password_file.read_text().strip()}")
    if serve:
        import waitress

        typer.echo(f"serving the demo study: participant URL http://{host}:{port}/  (Ctrl-C to stop)")
        waitress.serve(app, host=host, port=port, threads=16, connection_limit=1000, ident="psychinterp")
