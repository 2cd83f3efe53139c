"""``make demo``: a whole study, offline, on the project's own model family.

1. generate shapes-world images and train ShapesNet XS-L on them (cached);
2. build a bundle with natural and synthetic conditions from the exemplar pool;
3. start the real server (waitress), and let machine observers take the study through its HTTP API;
4. score each unit offline with a second observer (the machine score), and 12 natural-only units per model
   that no participant sees, and write the report (noise ceiling, prediction-powered intervals);
5. the unit-kind study: channels against k-means directions of the same layers of two family
   members, in 2AFC and in odd-one-out, taken by observers in-process, with its own report
   (the unit-kind comparison, and the two paradigms' per-unit agreement);
6. serve the three studies, each on a port of its own (5000, 5001, 5002 by default), with one
   experimenter login for their dashboards.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import typer
import yaml

from psychinterp.scripted import SCRIPTED_CRITERIA, SCRIPTED_SERVER
from stimuli.demo.family import DEFAULT_DATA, DEFAULT_RECIPE, FAMILY, FamilyData, TrainingRecipe, write_if_changed

OBSERVERS = 72  # three per task
SIMULATED_NOTE = (
    "The participants of this demo are simulated: machine observers (pixel statistics) took the study "
    "through its HTTP API. No person answered; the numbers show what the analysis does, not how people see "
    "these units."
)
PARTICIPANT_OBSERVER = "pixel"
# The machine score's feature space: a stand-in for a perceptual model such as DreamSim,
# which a user plugs in with --observer python:MODULE:FUNCTION (docs/demo.md).
MACHINE_OBSERVER = f"model:{FAMILY[-1].id}"


def prepare_demo_inputs(
    workdir: Path,
    data: FamilyData = DEFAULT_DATA,
    recipe: TrainingRecipe = DEFAULT_RECIPE,
    retrain: bool = False,
    log: Callable[[str], None] = typer.echo,
    feature_visualization: Mapping[str, Any] | None = None,
) -> Path:
    """Images, trained family (the shipped weights where they match, unless ``retrain``), models file
    and study config (``feature_visualization`` overrides its settings of that name); returns the
    study config path."""
    from stimuli.demo.family import prepare_family

    workdir.mkdir(parents=True, exist_ok=True)
    prepare_family(workdir, data, recipe, progress=True, log=log, retrain=retrain)
    study = {
        "study_id": "demo",
        "title": "psychinterp demo study: which shape activates the unit more?",
        "models_file": "models.yaml",
        "models": [member.id for member in FAMILY],
        # One more unit than a task's trials: a place the acceptance rules leave empty (no reserve of its
        # layer passed) still leaves each task its units.
        "units_per_model": 7,
        "dataset": {"path": "shapes/pool", "batch_size": 64, "described_as": "pictures of rendered shapes"},
        "exemplars": {"batches": 4, "references": 9},
        # Small and short, to fit the demo's time budget; a real study uses the defaults.
        "feature_visualization": {
            "image_size": 48,
            "padding": 4,
            "lr": 0.2,
            "max_steps": 128,
            "units_per_batch": 3,
            **(feature_visualization or {}),
        },
        "conditions": ["natural", "synthetic"],
        "tasks": {"trials_per_task": 6, "catch_trials_per_task": 1, "repetitions": 3, "practice_trials": 2},
        # Natural-only channels that only the machine scores (a scan, no visualisations): the report's
        # prediction-powered natural intervals average over them. No lapses: the score describes the
        # feature space, not a person's attention.
        "machine_scoring": {
            "observer": MACHINE_OBSERVER,
            "machine_only_units_per_model": 12,
            "conditions": ["natural"],
            "lapse": 0.0,
        },
        "seed": 0,
    }
    path = workdir / "study.yaml"
    write_if_changed(path, yaml.safe_dump(study, sort_keys=False))
    return path


# The unit-kind study: two family members, channels against k-means directions of the same layers.
UNIT_KIND_MODELS = (FAMILY[1].id, FAMILY[-1].id)
UNIT_KIND_OBSERVERS_PER_TASK = 3


def prepare_unit_kind_inputs(workdir: Path) -> dict[str, Path]:
    """Study configs of the unit-kind study, one per paradigm (the same units in each)."""
    study = {
        "title": "psychinterp demo: channels and k-means directions",
        "models_file": "models.yaml",
        "models": list(UNIT_KIND_MODELS),
        "units_per_model": 8,
        "dictionaries": [{"name": "kmeans", "method": "kmeans", "size": 12, "units_per_model": 8}],
        "dictionary_sample": {"images": 300, "positions_per_image": 8},
        "dataset": {"path": "shapes/pool", "batch_size": 64, "described_as": "pictures of rendered shapes"},
        "exemplars": {"batches": 3, "references": 9},
        "conditions": ["natural"],
        "tasks": {"trials_per_task": 16, "catch_trials_per_task": 1, "repetitions": 2, "practice_trials": 2},
        # Channels that only the machine scores: the report's prediction-powered intervals average over them.
        "machine_scoring": {"observer": MACHINE_OBSERVER, "machine_only_units_per_model": 24, "lapse": 0.0},
        "seed": 0,
    }
    paths = {}
    for name, paradigm in (("2afc", {}), ("odd", {"paradigm": "odd_one_out", "odd_one_out": {"images": 5}})):
        paths[name] = workdir / f"units-{name}.yaml"
        write_if_changed(paths[name], yaml.safe_dump({"study_id": f"demo-units-{name}", **study, **paradigm}))
    return paths


def _observe_in_process(app, n_participants: int, seed: int, label: str) -> None:
    """Pixel-statistics observers through the server's API, in this process (Flask's test client)."""
    from tqdm import tqdm

    from psychinterp.observers import http_images, make_observer
    from psychinterp.scripted import run_session

    rng = np.random.default_rng(seed)
    observer = make_observer(PARTICIPANT_OBSERVER, seed=seed + 1)
    client = app.test_client()
    images = http_images(client)
    for _ in tqdm(range(n_participants), desc=label, unit="participant", leave=False):
        run_session(client, lambda trial: observer.decide(trial, images), rng)


def run_unit_kind_study(workdir: Path, weights_fingerprint: str, log: Callable[[str], None] = typer.echo) -> Path:
    """Build both bundles (cached), let observers take each, and write the unit-kind report."""
    from contracts.bundle import load_bundle
    from experiment_server import create_app
    from experiment_server.export import export_csv
    from psychinterp.workflows import score_bundle
    from stimuli.build import build_study
    from stimuli.study import load_study_config
    from stimuli.workdir import WorkDir

    paths = prepare_unit_kind_inputs(workdir)
    responses = {}
    for name, path in paths.items():
        fingerprint = _fingerprint(path) + weights_fingerprint
        bundle_dir = workdir / f"units-{name}-bundle"
        database = workdir / f"units-{name}.db"
        if _stale(bundle_dir / ".built-from", fingerprint):
            log(f"building the unit-kind study's {name} bundle (first run only)")
            shutil.rmtree(bundle_dir, ignore_errors=True)
            database.unlink(missing_ok=True)
            if name != "2afc":  # the same units: the first bundle's plan, exemplars and images serve
                WorkDir(bundle_dir).adopt_plan(WorkDir(workdir / "units-2afc-bundle"))
                WorkDir(bundle_dir).absorb(WorkDir(workdir / "units-2afc-bundle"))
            config = load_study_config(path)
            built = build_study(config, bundle_dir)
            if name == "2afc":
                log("machine score of every unit, the machine-only ones too (unit-kind study)")
                score_bundle(built, config.machine_scoring, config.models_file)
            (bundle_dir / ".built-from").write_text(fingerprint)
        app = create_app({"bundle_dir": bundle_dir, "database_url": f"sqlite:///{database}", **SCRIPTED_SERVER})
        bundle = load_bundle(bundle_dir)
        marker = bundle_dir / ".observers-done"
        if not marker.exists():
            n = UNIT_KIND_OBSERVERS_PER_TASK * len(bundle.manifest.tasks)
            log(f"{n} simulated participants take the unit-kind study ({bundle.manifest.paradigm})")
            _observe_in_process(app, n, seed=7, label=bundle.manifest.paradigm)
            marker.write_text(fingerprint)
        responses[name] = workdir / f"units-{name}-responses.csv"
        export_csv(bundle, app.extensions["psychinterp_db"], responses[name])
    return _unit_kind_report(workdir, responses, load_bundle(workdir / "units-2afc-bundle"), log)


def _unit_kind_report(workdir: Path, responses: dict[str, Path], bundle, log: Callable[[str], None]) -> Path:
    from analysis.exclusions import ExclusionCriteria
    from analysis.report import write_report
    from psychinterp.workflows import MACHINE_SCORES_FILE

    scripted = ExclusionCriteria(**SCRIPTED_CRITERIA, min_choices_per_query_row=0)
    facts = {m.id: m.model_dump() for m in bundle.manifest.models}
    page = write_report(
        responses["2afc"],
        workdir / "units-report",
        bundle=bundle.root,
        criteria=scripted,
        models=facts,
        other_paradigm=responses["odd"],
        machine_scores=bundle.root / MACHINE_SCORES_FILE,
        n_resamples=2_000,
        notes=(SIMULATED_NOTE,),
    )
    log(f"unit-kind report: {page}")
    return page


def run_observers(base_url: str, n_participants: int, seed: int = 0) -> None:
    """Machine observers (pixel-statistics similarity) taking the study over HTTP, as browsers would."""
    import httpx
    from tqdm import tqdm

    from psychinterp.observers import http_images, make_observer
    from psychinterp.scripted import run_session

    rng = np.random.default_rng(seed)
    observer = make_observer(PARTICIPANT_OBSERVER, seed=seed + 1)  # its own stream, apart from the response times
    with httpx.Client(base_url=base_url, timeout=60) as client:
        images = http_images(client)
        for _ in tqdm(range(n_participants), desc="participants", unit="participant", leave=False):
            run_session(client, lambda trial: observer.decide(trial, images), rng)


def _fingerprint(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _stale(stamp: Path, fingerprint: str) -> bool:
    return not stamp.exists() or stamp.read_text() != fingerprint


def _build_bundle(
    workdir: Path, study_path: Path, bundle_dir: Path, fingerprint: str, log: Callable[[str], None]
) -> None:
    from stimuli.build import build_study
    from stimuli.study import load_study_config

    log("building the demo bundle (first run only)")
    # A build killed part-way resumes; one of another config or family starts afresh.
    if _stale(workdir / ".bundle-started", fingerprint):
        shutil.rmtree(bundle_dir, ignore_errors=True)
        (workdir / ".bundle-started").write_text(fingerprint)
    build_study(load_study_config(study_path), bundle_dir)
    (bundle_dir / ".built-from").write_text(fingerprint)
    # Responses of an older bundle would not match its trials.
    for stale in ("demo.db", ".observers-done"):
        (workdir / stale).unlink(missing_ok=True)


def _export_and_report(app, workdir: Path, scores: Path, log: Callable[[str], None]) -> None:
    from analysis.exclusions import ExclusionCriteria
    from analysis.report import write_report
    from experiment_server.export import export_csv

    bundle = app.extensions["psychinterp_bundle"]
    responses = workdir / "responses.csv"
    n = export_csv(bundle, app.extensions["psychinterp_db"], responses)
    # Scripted participants answer in milliseconds and see only a few trials: the time and
    # query-row rules are off for them; the catch-trial and practice rules stay.
    scripted = ExclusionCriteria(**SCRIPTED_CRITERIA, min_choices_per_query_row=0)
    facts = {m.id: m.model_dump() for m in bundle.manifest.models}
    page = write_report(
        responses,
        workdir / "report",
        bundle=bundle.root,
        criteria=scripted,
        models=facts,
        machine_scores=scores,
        n_resamples=2_000,
        notes=(SIMULATED_NOTE,),
    )
    log(f"exported {n} responses to {responses}")
    log(f"report: {page}")


def cell_half_widths(responses: Path) -> dict[str, float]:
    """Each model x condition cell's half-width (the server's estimate) from an exported response table."""
    from analysis.estimate import main_trials
    from analysis.load import load_responses
    from experiment_server.allocation import cell_precision

    frame = main_trials(load_responses(responses))
    widths = {}
    for (model, condition), cell in frame.groupby(["model_id", "condition"]):
        units = cell.groupby("unit_id")["correct"].agg(["count", "sum"]).itertuples(index=False)
        people = cell.groupby("participant_id")["correct"].agg(["count", "sum"]).itertuples(index=False)
        precision = cell_precision([(int(n), int(k)) for n, k in units], [(int(n), int(k)) for n, k in people])
        widths[f"{model} / {condition}"] = precision.half_width if precision is not None else float("inf")
    return widths


def run_precision_study(workdir: Path, bundle_dir: Path, fixed: Path, log: Callable[[str], None]) -> None:
    """The same study again with precision allocation and stopping: observers arrive until the server says it
    is full; the demo prints what that paid against the fixed design, and the planner's advice from the pilot."""
    from analysis.estimate import main_trials
    from analysis.load import load_responses
    from experiment_server import create_app
    from psychinterp.scripted import FlowError
    from psychinterp.workflows import plan_design

    widths = cell_half_widths(fixed)
    fixed_frame = main_trials(load_responses(fixed))
    completed = fixed_frame[fixed_frame["session_completed"] == 1]
    per_cell = int(completed.groupby(["model_id", "condition"])["participant_id"].nunique().max())
    finite = sorted(w for w in widths.values() if w != float("inf"))
    # A target that the fixed design met in three cells of four: cells stop when they meet it, or at the cap.
    target = finite[(3 * len(finite)) // 4] if finite else 0.25
    database = workdir / "demo-precision.db"
    database.unlink(missing_ok=True)
    stopping = {"half_width_pp": round(100 * target, 2), "min_participants_per_cell": 2}
    stopping["max_participants_per_cell"] = per_cell
    config = {"bundle_dir": bundle_dir, "database_url": f"sqlite:///{database}", **SCRIPTED_SERVER}
    app = create_app({**config, "allocation": "precision", "stopping": stopping})
    log(f"precision allocation and stopping at ±{100 * target:.1f} pp per cell (at most {per_cell} participants each)")
    arrivals, full = 0, False
    try:
        # Failed sessions free their places, so a cell may need more arrivals than its cap; bounded all the same.
        for _ in range(3 * per_cell * len(widths)):
            _observe_in_process(app, 1, seed=1000 + arrivals, label="precision")
            arrivals += 1
    except FlowError as exc:
        if "This study is full" not in str(exc):
            raise
        full = True
    adaptive = workdir / "responses-precision.csv"
    from experiment_server.export import export_csv

    export_csv(app.extensions["psychinterp_bundle"], app.extensions["psychinterp_db"], adaptive)
    adaptive_frame = main_trials(load_responses(adaptive))
    paid, fixed_paid = (int(f["session_completed"].sum()) for f in (adaptive_frame, fixed_frame))
    reached = sum(w <= target for w in cell_half_widths(adaptive).values())
    ending = "until the study was full" if full else "before the demo's arrivals ran out (not full)"
    log(
        f"precision stopping: {arrivals} participants, {paid} paid main responses (completed sessions) {ending}; "
        f"{reached} of {len(widths)} cells within ±{100 * target:.1f} pp (cap {per_cell} participants per cell). "
        f"The fixed design: {fixed_paid} paid responses, {sum(w <= target for w in widths.values())} cells within it"
    )
    plan = plan_design(
        1e6,
        workdir / "design",
        price_per_trial=0.02,
        unit_cost=0.1,
        bundle=bundle_dir,
        pilot=fixed,
        trials=int(fixed_frame.groupby("participant_id").size().median()),
        half_width=target,
    ).table.iloc[0]
    log(
        f"planner (psychinterp design, the fixed run as pilot): {plan.units_per_model} units per model rated "
        f"{plan.ratings_per_unit:.3g} times each reach ±{plan.half_width_pp:.1f} pp with {plan.paid_responses} "
        f"responses (design/design.csv)"
    )


@dataclass(frozen=True)
class ServedStudy:
    """One of the demo's studies as it is served: what it is, where, and its login."""

    title: str
    url: str
    username: str
    password: str


def _serve_unit_kind_studies(workdir: Path, host: str, port: int, password: str) -> list[tuple[ServedStudy, Any]]:
    """The unit-kind study's two paradigms, each on a server of its own (the ports after ``port``; any free
    one when ``port`` is 0), with the demo's login; returns them with their (server, thread)."""
    from experiment_server import create_app
    from experiment_server.admin import set_admin_password
    from psychinterp.serving import create_server, start_in_thread

    served = []
    for offset, name in enumerate(("2afc", "odd"), start=1):
        database = f"sqlite:///{workdir / f'units-{name}.db'}"
        app = create_app({"bundle_dir": workdir / f"units-{name}-bundle", "database_url": database, **SCRIPTED_SERVER})
        set_admin_password(app.extensions["psychinterp_db"], "admin", password)
        server = create_server(app, host, port + offset if port else 0)
        title = f"unit-kind study ({app.extensions['psychinterp_bundle'].manifest.paradigm})"
        study = ServedStudy(title, f"http://{host}:{server.effective_port}", "admin", password)
        served.append((study, (server, start_in_thread(server))))
    return served


def run_demo(
    workdir: Path,
    host: str = "127.0.0.1",
    port: int = 5000,
    serve: bool = True,
    data: FamilyData = DEFAULT_DATA,
    recipe: TrainingRecipe = DEFAULT_RECIPE,
    unit_kinds: bool = True,
    retrain: bool = False,
    observers: int = OBSERVERS,
    feature_visualization: Mapping[str, Any] | None = None,
    on_ready: Callable[[Sequence[ServedStudy]], None] | None = None,
) -> None:
    """The demo; ``data`` and ``recipe`` set the family's training (smaller in tests); ``unit_kinds`` adds
    the unit-kind study; ``retrain`` trains the family even where the shipped weights match;
    ``observers`` is how many simulated participants take the main study; ``feature_visualization``
    overrides the study's settings of that name (shorter runs in tests); ``on_ready`` is called with the
    served studies once all of them answer (the tests log in on each)."""
    from contracts.bundle import load_bundle
    from experiment_server import create_app
    from experiment_server.admin import set_admin_password
    from experiment_server.migrate import LegacyDatabaseError
    from psychinterp.serving import create_server, start_in_thread, stop
    from psychinterp.workflows import MACHINE_SCORES_FILE, score_bundle
    from stimuli.study import load_study_config

    started = time.perf_counter()

    def log(message: str) -> None:
        # Each stage's line carries the seconds since the start (benchmarks/bench_demo.py reads them).
        typer.echo(f"[{time.perf_counter() - started:5.0f} s] {message}")

    workdir = workdir.resolve()
    study_path = prepare_demo_inputs(workdir, data, recipe, retrain, log, feature_visualization)
    models_file = workdir / "models.yaml"
    bundle_dir = workdir / "bundle"
    fingerprint = _fingerprint(study_path, models_file, *sorted((workdir / "weights").glob("*.pt")))
    if _stale(bundle_dir / ".built-from", fingerprint):
        _build_bundle(workdir, study_path, bundle_dir, fingerprint, log)
    # The demo's server is for its simulated participants (and a look around): no minimum times, no start limit.
    config = {"bundle_dir": bundle_dir, "database_url": f"sqlite:///{workdir / 'demo.db'}", **SCRIPTED_SERVER}
    try:
        app = create_app(config)
    except LegacyDatabaseError:
        # A demo database from before migrations existed: its sample responses are made again.
        (workdir / "demo.db").unlink(missing_ok=True)
        (workdir / ".observers-done").unlink(missing_ok=True)
        app = create_app(config)
    password_file = workdir / "admin-password.txt"
    if not password_file.exists():
        password_file.write_text(secrets.token_urlsafe(12) + "\n")
    password_file.chmod(0o600)  # the login of three dashboards: the owner's to read
    set_admin_password(app.extensions["psychinterp_db"], "admin", password_file.read_text().strip())
    server = create_server(app, host, port)
    running = [(server, start_in_thread(server))]
    base_url = f"http://{host}:{server.effective_port}"
    password = password_file.read_text().strip()
    studies = [ServedStudy("demo study", base_url, "admin", password)]
    try:
        marker = workdir / ".observers-done"
        if _stale(marker, fingerprint):
            log(f"{observers} simulated participants ({PARTICIPANT_OBSERVER} observers) take the study")
            run_observers(base_url, observers)
            marker.write_text(fingerprint)
        config = load_study_config(study_path)
        scores = bundle_dir / MACHINE_SCORES_FILE
        if not scores.exists():
            log(f"machine score of every unit, the machine-only ones too ({MACHINE_OBSERVER} observer, offline)")
        score_bundle(load_bundle(bundle_dir), config.machine_scoring, config.models_file)  # kept when current
        _export_and_report(app, workdir, scores, log)
        summary = workdir / ".precision-summary"
        if _stale(workdir / ".precision-done", fingerprint) or not summary.exists():
            lines: list[str] = []

            def keep(message: str) -> None:  # logged now, and again on a cached rerun
                lines.append(message)
                log(message)

            run_precision_study(workdir, bundle_dir, workdir / "responses.csv", keep)
            summary.write_text("\n".join(lines))
            (workdir / ".precision-done").write_text(fingerprint)
        else:
            for line in summary.read_text().splitlines():
                log(f"{line} (cached)")
        if unit_kinds:
            run_unit_kind_study(workdir, _fingerprint(models_file, *sorted((workdir / "weights").glob("*.pt"))), log)
            for study, serving in _serve_unit_kind_studies(workdir, host, port, password):
                studies.append(study)
                running.append(serving)
        for study in studies:
            log(f"{study.title}: participant URL {study.url}/  admin URL {study.url}/admin/  login: admin / {password}")
        log(f"ready in {time.perf_counter() - started:.0f} s")
        if on_ready is not None:
            on_ready(studies)
        if serve:
            typer.echo(f"serving {len(studies)} studies (Ctrl-C to stop)")
            while all(thread.is_alive() for _, thread in running):
                running[0][1].join(0.5)
    except KeyboardInterrupt:
        typer.echo("stopping")
    finally:
        for server, thread in running:
            stop(server, thread)
