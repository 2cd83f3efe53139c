"""What the commands that span packages do, as functions: the command line only parses and prints.

``analyze_study`` joins a server database (experiment_server), model facts (the bundle, or the
registry for a models file) and the report (analysis); ``simulate_study`` lets machine observers
take a study through the participant API; ``plan_power`` simulates whole studies of a bundle's
models (or stated sizes) in its paradigm; ``build_bundle`` runs a build here, one shard of it, or
all of it as submitted jobs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from contracts.criteria import ExclusionCriteria
from contracts.errors import ConfigError


@dataclass(frozen=True)
class JobsPlan:
    """Split a build into ``count`` jobs submitted through submitit (stimuli.cluster)."""

    count: int
    executor: str  # local or slurm
    resources: object  # stimuli.cluster.JobResources


def build_bundle(
    study: Path,
    out: Path,
    *,
    device: str = "cpu",
    weights: dict[str, Path] | None = None,
    precision: str = "auto",
    shard: str | None = None,
    jobs: JobsPlan | None = None,
):
    """Build the bundle of a study config; returns it, or None when only one shard (``i/n``) was built."""
    from stimuli.build import Shard, build_study
    from stimuli.study import load_study_config

    if shard and jobs:
        raise ConfigError("build: use a shard (one share, by hand) or jobs (all shares, submitted), not both")
    config = load_study_config(study)
    if jobs is not None:
        from stimuli.cluster import build_with_jobs

        built = build_with_jobs(
            config, out, jobs.count, jobs.executor, jobs.resources, device, weights or {}, precision
        )
    else:
        parsed = Shard.parse(shard) if shard else None
        built = build_study(config, out, device=device, weights=weights or {}, shard=parsed, precision=precision)
    if built is not None and config.machine_scoring is not None:
        score_bundle(built, config.machine_scoring, config.models_file)
    return built


MACHINE_SCORES_FILE = "machine_scores.csv"


def score_bundle(bundle, scoring, models_file: Path | None = None) -> Path:
    """Score every unit of a built bundle (the machine-only ones too) with the study's observer, into
    ``machine_scores.csv`` beside the manifest; a rerun with the same bundle and settings keeps the file."""
    import pandas as pd

    from contracts.files import atomic_text_file
    from psychinterp.observers import Calibration, machine_scores, make_observer

    path = bundle.root / MACHINE_SCORES_FILE
    observer = make_observer(
        scoring.observer,
        temperature=scoring.temperature,
        lapse=scoring.lapse,
        models_file=models_file,
        layer_weights=scoring.layer_weights,
        calibration=Calibration.load(scoring.calibration) if scoring.calibration else None,
    )
    wanted = {
        "bundle_fingerprint": bundle.fingerprint,
        "observer": observer.features.name,
        "temperature": observer.temperature,
        "lapse": observer.lapse,
    }
    if path.is_file():
        kept = pd.read_csv(path, nrows=1, dtype={"bundle_fingerprint": str, "observer": str}).to_dict("records")
        if kept and all(kept[0].get(k) == v for k, v in wanted.items()):
            return path
    table = machine_scores(bundle, bundle.root, observer).assign(bundle_fingerprint=bundle.fingerprint)
    with atomic_text_file(path) as handle:
        table.to_csv(handle, index=False)
    return path


def model_facts(bundle: Path | None = None, models: Path | None = None) -> dict[str, dict] | None:
    """Per model id: parameter count, training images, top-1, from a bundle's manifest or a models file."""
    if bundle is not None:
        from contracts.bundle import load_bundle

        return {m.id: m.model_dump() for m in load_bundle(bundle).manifest.models}
    if models is not None:
        from stimuli.registry import parameter_count
        from stimuli.specs import load_model_specs

        return {
            spec.id: {
                **spec.metadata.model_dump(),
                "display_name": spec.display_name,
                "parameter_count": parameter_count(spec),
            }
            for spec in load_model_specs(models).values()
        }
    return None


def export_from_database(
    db: str, bundle: Path, out: Path, allow_rebuilt_bundle: bool = False
) -> tuple[Path, ExclusionCriteria | None]:
    """The response table of a server database (written to ``out``), and the criteria its server ran with."""
    from contracts.bundle import load_bundle
    from experiment_server.db import make_session_factory
    from experiment_server.export import export_csv, study_criteria

    served, session_factory = load_bundle(bundle), make_session_factory(db)
    export_csv(served, session_factory, out, allow_rebuilt_bundle)
    return out, study_criteria(session_factory, served.manifest.study_id)


def analyze_study(
    responses: Path | None,
    out: Path,
    *,
    db: str | None = None,
    bundle: Path | None = None,
    models: Path | None = None,
    criteria: Path | None = None,
    analysis_config: Path | None = None,
    allow_rebuilt_bundle: bool = False,
    **report_options,
) -> Path:
    """The report for a response table, or for a server database (with its bundle); returns the page.

    Criteria: the file given, else (for a database) the server's, else the 2023 study's.
    """
    from analysis.config import DEFAULT_ANALYSIS, load_analysis_config
    from analysis.exclusions import load_criteria
    from analysis.report import write_report

    chosen = load_criteria(criteria) if criteria else None
    if db is not None:
        out.mkdir(parents=True, exist_ok=True)
        responses, server_criteria = export_from_database(db, bundle, out / "responses.csv", allow_rebuilt_bundle)
        chosen = chosen or server_criteria
    elif bundle is not None:
        from analysis.load import check_responses_study
        from contracts.bundle import load_bundle

        check_responses_study(responses, load_bundle(bundle), allow_rebuilt_bundle)
    config = load_analysis_config(analysis_config) if analysis_config else DEFAULT_ANALYSIS
    return write_report(
        responses,
        out,
        bundle=bundle,  # with the bundle, the report has the unit microscope too
        criteria=chosen,
        models=model_facts(bundle, models),
        config=config,
        **report_options,
    )


@dataclass(frozen=True)
class SimulationRun:
    observer: str
    outcomes: Counter  # how each session ended ("completed", "failed: timing", ...) -> how many
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
    calibration: Path | None = None,
    layer_weights: Path | None = None,
    seed: int = 0,
) -> SimulationRun:
    """Observers take the study (a running server, or the bundle in-process) and/or score each unit offline.

    ``out`` (the response table) needs the in-process server; check that before calling.
    """
    import numpy as np

    from contracts.bundle import load_bundle
    from psychinterp.observers import Calibration, http_images, machine_scores, make_observer
    from psychinterp.scripted import run_session

    model = make_observer(
        observer,
        seed=seed,
        temperature=temperature,
        lapse=lapse,
        models_file=models,
        layer_weights=layer_weights,
        calibration=Calibration.load(calibration) if calibration is not None else None,
    )
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

        from contracts.bundle import check_same_study
        from psychinterp.scripted import page_settings

        client = httpx.Client(base_url=server, timeout=30)
        fix = "give the bundle of the study that server serves, or the URL of the server of this one"
        check_same_study(loaded, page_settings(client)["studyId"], None, f"the server at {server}", fix)
    else:
        from experiment_server import create_app
        from psychinterp.scripted import SCRIPTED_SERVER

        # An in-process server for these machine participants only: no minimum times, no start limit.
        app = create_app({"bundle_dir": bundle, **({"database_url": db} if db else {}), **SCRIPTED_SERVER})
        client = app.test_client()
    images = http_images(client)
    rng = np.random.default_rng(seed)
    outcomes = [run_session(client, lambda trial: model.decide(trial, images), rng) for _ in range(participants)]
    written = None
    if out is not None:
        from experiment_server.export import export_csv

        written = export_csv(loaded, app.extensions["psychinterp_db"], out)
    return SimulationRun(model.features.name, Counter(map(ending, outcomes)), scored, written)


def calibrate_observer(
    responses: Path,
    bundle: Path,
    observer: str,
    out: Path,
    *,
    models: Path | None = None,
    layer_weights: Path | None = None,
):
    """Fit ``observer``'s temperature and lapse to the study's responses (this bundle's); write and return it."""
    from analysis.load import check_responses_study, load_responses
    from contracts.bundle import load_bundle
    from psychinterp.observers import calibrate, make_observer

    loaded = load_bundle(bundle)
    check_responses_study(responses, loaded)
    fitted = calibrate(
        loaded,
        bundle,
        load_responses(responses),
        make_observer(observer, models_file=models, layer_weights=layer_weights),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fitted.save(out)
    return fitted


def ending(completion: dict) -> str:
    """How a session ended, from the server's completion reply: its status and, if it failed, why."""
    reason = completion.get("failure_reason")
    return f"{completion['status']}: {reason}" if reason else completion["status"]


@dataclass(frozen=True)
class PowerRun:
    components: object  # analysis.power.VarianceComponents
    paradigm: str
    table: object  # pandas.DataFrame: power per grid point (expected_power, cautious_power with a pilot)
    files: tuple[Path, ...]
    family_size: int = 1  # the Holm family the verdict's test is corrected over
    level: float | None = None  # with a pilot: the confidence of cautious_power


def plan_power(
    slope: float,
    out: Path,
    *,
    participants: list[int],
    units: list[int],
    bundle: Path | None = None,
    log10_params: list[float] | None = None,
    pilot: Path | None = None,
    components: dict | None = None,
    paradigm: str = "2afc",
    trials: int = 40,
    studies: int = 500,
    alpha: float = 0.05,
    seed: int = 0,
    family_size: int | None = None,
    level: float = 0.9,
) -> PowerRun:
    """Power to detect ``slope`` (proportion per decade of parameters) over a grid; writes power.csv and the curve.

    The models come from a bundle (its parameter counts and paradigm) or from ``log10_params``;
    the variance components from pilot responses or from ``components`` (VarianceComponents fields).
    Power is for the verdict the report prints: the test Holm-corrected over ``family_size`` slopes
    (default: the bundle's conditions, else 1). With a pilot, each grid point also gets the
    expected power over the model SD's uncertainty and the power reached with confidence ``level``
    (:func:`analysis.power.pilot_power`).
    """
    import numpy as np

    from analysis.estimate import responses_paradigm
    from analysis.power import VarianceComponents, pilot_power, power_figure, power_grid, variance_components
    from contracts.paradigms import PARADIGMS, paradigm_named

    if (bundle is None) == (log10_params is None):
        raise ConfigError("power: give the models as a bundle or as log10 parameter counts, not both")
    if paradigm not in PARADIGMS:
        raise ConfigError(f"power: unknown paradigm {paradigm!r}; known: {sorted(PARADIGMS)}")
    if bundle is not None:
        from contracts.bundle import load_bundle

        manifest = load_bundle(bundle).manifest
        x = np.log10(np.asarray([m.parameter_count for m in manifest.models if m.parameter_count], float))
        paradigm = manifest.paradigm
        family_size = family_size or len(manifest.conditions)
    else:
        x = np.asarray(log10_params, float)
    if len(x) < 3 or np.ptp(x) == 0:
        raise ConfigError("power: a slope needs at least three models with different sizes")
    if pilot is not None:
        from analysis.load import load_responses

        responses = load_responses(pilot)
        chosen = variance_components(responses)
        paradigm = responses_paradigm(responses).name if bundle is None else paradigm
    else:
        responses, chosen = None, VarianceComponents(**(components or {}))
    family_size = family_size or 1
    if family_size < 1:
        raise ConfigError(f"power: the Holm family holds at least one slope, not {family_size}")
    chance = paradigm_named(paradigm).chance
    grid = {"trials": trials, "n_studies": studies, "alpha": alpha, "seed": seed, "chance": chance}
    try:
        table = power_grid(x, slope, chosen, participants, units, **grid, family_size=family_size)
        if responses is not None:  # the pilot's model SD is uncertain: power as a distribution over it
            pilots = [
                pilot_power(responses, x, slope, int(r.units_per_model), int(r.participants_per_model), trials, alpha,
                            family_size, level, chance, seed=seed)
                for r in table.itertuples()
            ]  # fmt: skip
            table["expected_power"] = [p.expected for p in pilots]
            table["cautious_power"] = [p.cautious for p in pilots]
    except ValueError as exc:
        raise ConfigError(f"power ({paradigm}): {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "power.csv"]
    table.to_csv(files[0], index=False)
    figure = power_figure(table, slope)
    for suffix in ("png", "pdf"):
        files.append(out / f"power.{suffix}")
        figure.savefig(files[-1], dpi=150)
    return PowerRun(chosen, paradigm, table, tuple(files), family_size, level if responses is not None else None)


@dataclass(frozen=True)
class DesignRun:
    components: object  # analysis.power.VarianceComponents
    costs: object  # analysis.design.Costs
    table: object  # pandas.DataFrame: the planner's allocation beside the 2023 one
    files: tuple[Path, ...]


def plan_design(
    budget: float,
    out: Path,
    *,
    price_per_trial: float,
    unit_cost: float,
    bundle: Path | None = None,
    log10_params: list[float] | None = None,
    pilot: Path | None = None,
    components: dict | None = None,
    trials: int = 40,
    conditions: int | None = None,
    half_width: float | None = None,
    slope_se: float | None = None,
    max_units_per_model: int | None = None,
    machine_r: float | None = None,
    scored_units: int | None = None,
    min_ratings_per_unit: int = 1,
) -> DesignRun:
    """How to spend ``budget`` (analysis.design): the planner's allocation beside the 2023 one; writes
    design.csv, the precision-against-budget curve (design_curve.csv) and its figure."""
    import numpy as np

    from analysis.design import Costs, MachineAssist, Problem, compare, design_figure, precision_curve
    from analysis.power import VarianceComponents, variance_components

    if (bundle is None) == (log10_params is None):
        raise ConfigError("design: give the models as a bundle or as log10 parameter counts, not both")
    if not price_per_trial > 0:
        raise ConfigError(
            f"design: the price of a main trial must be positive, not {price_per_trial:g} (--price-per-trial)"
        )
    if unit_cost < 0:
        raise ConfigError(f"design: a unit's cost cannot be negative ({unit_cost:g}; --unit-cost or --gpu-*)")
    if not budget > 0:
        raise ConfigError(f"design: the budget must be positive, not {budget:g} (--budget)")
    if bundle is not None:
        from contracts.bundle import load_bundle

        manifest = load_bundle(bundle).manifest
        x = np.log10(np.asarray([m.parameter_count for m in manifest.models if m.parameter_count], float))
        conditions = conditions or len(manifest.conditions)
    else:
        x = np.asarray(log10_params, float)
    if pilot is not None:
        from analysis.estimate import main_trials
        from analysis.load import load_responses

        responses = main_trials(load_responses(pilot))
        for column, what in (("model_id", "models"), ("unit_id", "units")):
            if responses[column].nunique() < 2:
                raise ConfigError(
                    f"design: the pilot {pilot} has {responses[column].nunique()} {what[:-1]} in its main trials; "
                    f"its {what}' spread needs at least two (or state the components: --unit-sd, ...)"
                )
        chosen = variance_components(responses)
    else:
        chosen = VarianceComponents(**(components or {}))
    if (machine_r is None) != (scored_units is None):
        raise ConfigError("design: a machine needs both --machine-r and --scored-units (units it scores per model)")
    try:
        machine = MachineAssist(machine_r, scored_units) if machine_r is not None else None
        costs = Costs(price_per_trial, unit_cost)
        problem = Problem(x, chosen, costs, trials, conditions or 1, max_units_per_model, machine, min_ratings_per_unit)
        table = compare(problem, budget, half_width, slope_se)
        budgets = np.geomspace(budget / 20, budget * 5, 25)
        curve = precision_curve(problem, budgets[budgets >= problem.allocation("minimum", trials, 1).cost])
    except ValueError as exc:
        raise ConfigError(f"design: {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "design.csv", out / "design_curve.csv"]
    table.to_csv(files[0], index=False)
    curve.to_csv(files[1], index=False)
    figure = design_figure(curve, budget)
    for suffix in ("png", "pdf"):
        files.append(out / f"design.{suffix}")
        figure.savefig(files[-1], dpi=150)
    return DesignRun(chosen, problem.costs, table, tuple(files))
