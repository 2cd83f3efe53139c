"""What the commands that span packages do, as functions: the command line only parses and prints.

``analyze_study`` joins a server database (experiment_server), model facts (the bundle, or the
registry for a models file) and the report (analysis); ``simulate_study`` lets machine observers
take a study through the participant API.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from contracts.criteria import ExclusionCriteria


def model_facts(bundle: Path | None = None, models: Path | None = None) -> dict[str, dict] | None:
    """Per model id: parameter count, training images, top-1, from a bundle's manifest or a models file."""
    if bundle is not None:
        from contracts.bundle import load_bundle

        return {m.id: m.model_dump() for m in load_bundle(bundle).manifest.models}
    if models is not None:
        from stimuli.registry import parameter_count
        from stimuli.specs import load_model_specs

        return {
            spec.id: {**spec.metadata.model_dump(), "parameter_count": parameter_count(spec)}
            for spec in load_model_specs(models).values()
        }
    return None


def export_from_database(db: str, bundle: Path, out: Path) -> tuple[Path, ExclusionCriteria | None]:
    """The response table of a server database (written to ``out``), and the criteria its server ran with."""
    from contracts.bundle import load_bundle
    from experiment_server.db import make_session_factory
    from experiment_server.export import export_csv, study_criteria

    served, session_factory = load_bundle(bundle), make_session_factory(db)
    export_csv(served, session_factory, out)
    return out, study_criteria(session_factory, served.manifest.study_id)


def analyze_study(
    responses: Path | None,
    out: Path,
    *,
    db: str | None = None,
    bundle: Path | None = None,
    models: Path | None = None,
    criteria: Path | None = None,
    **report_options,
) -> Path:
    """The report for a response table, or for a server database (with its bundle); returns the page.

    Criteria: the file given, else (for a database) the server's, else the 2023 study's.
    """
    from analysis.exclusions import load_criteria
    from analysis.report import write_report

    chosen = load_criteria(criteria) if criteria else None
    if db is not None:
        out.mkdir(parents=True, exist_ok=True)
        responses, server_criteria = export_from_database(db, bundle, out / "responses.csv")
        chosen = chosen or server_criteria
    return write_report(responses, out, criteria=chosen, models=model_facts(bundle, models), **report_options)


@dataclass(frozen=True)
class SimulationRun:
    observer: str
    outcomes: Counter  # session status -> how many
    scored_rows: int | None = None  # machine-score rows written
    responses_written: int | None = None


def simulate_study(
    bundle: Path,
    participants: int,
    observer: str,
    *,
    server: str | None = None,
    db: str | None = None,
    out: Path | None = None,
    scores: Path | None = None,
    models: Path | None = None,
    temperature: float = 10.0,
    lapse: float = 0.05,
    seed: int = 0,
) -> SimulationRun:
    """Observers take the study (a running server, or the bundle in-process) and/or score each unit offline.

    ``out`` (the response table) needs the in-process server; check that before calling.
    """
    import numpy as np

    from contracts.bundle import load_bundle
    from psychinterp.observers import http_images, machine_scores, make_observer
    from psychinterp.scripted import run_session

    model = make_observer(observer, seed=seed, temperature=temperature, lapse=lapse, models_file=models)
    loaded = load_bundle(bundle)
    scored = None
    if scores is not None:
        table = machine_scores(loaded, bundle, model)
        scores.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(scores, index=False)
        scored = len(table)
    if participants == 0:
        return SimulationRun(model.features.name, Counter(), scored)
    if server is not None:
        import httpx

        client = httpx.Client(base_url=server, timeout=30)
    else:
        from experiment_server import create_app

        app = create_app({"bundle_dir": bundle, **({"database_url": db} if db else {})})
        client = app.test_client()
    images = http_images(client)
    rng = np.random.default_rng(seed)
    outcomes = [run_session(client, lambda trial: model.decide(trial, images), rng) for _ in range(participants)]
    written = None
    if out is not None:
        from experiment_server.export import export_csv

        written = export_csv(loaded, app.extensions["psychinterp_db"], out)
    return SimulationRun(model.features.name, Counter(o["status"] for o in outcomes), scored, written)
