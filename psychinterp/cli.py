"""``psychinterp``: one entry point for building, serving, exporting and analysing studies.

Subcommands that need torch import it lazily, so the server and the analysis
run in an environment without it.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from contracts.errors import PsychinterpError

app = typer.Typer(help="Measure how interpretable the units of vision models are to people.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry (models.yaml).", no_args_is_help=True)
app.add_typer(models_app, name="models")
admin_app = typer.Typer(help="Experimenter logins for the dashboard.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
db_app = typer.Typer(help="The response database.", no_args_is_help=True)
app.add_typer(db_app, name="db")
observers_app = typer.Typer(help="Machine observers: calibrating them against people.", no_args_is_help=True)
app.add_typer(observers_app, name="observers")

DbOption = Annotated[
    str | None, typer.Option("--db", help="SQLAlchemy database URL (default: psychinterp.db in this folder)")
]
AllowRebuiltOption = Annotated[
    bool,
    typer.Option(
        help="accept responses or a database of another build of the bundle's study (the same study id, other "
        "trials: the answers may differ); another study is always refused"
    ),
]


@models_app.command("list")
def models_list(
    models_file: Annotated[
        Path | None, typer.Option("--models", help="models file (default: models.yaml)", resolve_path=True)
    ] = None,
) -> None:
    """List the registered models with their parameter counts."""
    from stimuli.registry import parameter_count
    from stimuli.specs import load_model_specs

    specs = load_model_specs(models_file)
    typer.echo(f"{'id':<20} {'model':<32} {'source':<11} {'parameters':>13} {'train images':>14} {'top-1':>6}")
    for spec in specs.values():
        top1 = f"{spec.metadata.imagenet_top1:.1f}" if spec.metadata.imagenet_top1 is not None else "-"
        typer.echo(
            f"{spec.id:<20} {spec.display_name:<32} {spec.source:<11} {parameter_count(spec):>13,} "
            f"{spec.metadata.train_images:>14,} {top1:>6}"
        )


ObserverOption = Annotated[
    str,
    typer.Option(
        help="pixel, model:ID[:LAYER] (a registry model's embedding), lpips:ID[:LAYER,...] (a perceptual distance "
        "on a registry backbone) or python:MODULE:FUNCTION"
    ),
]
ObserverModelsOption = Annotated[
    Path | None,
    typer.Option(
        "--models", help="models file for model:ID and lpips:ID observers (default: models.yaml)", resolve_path=True
    ),
]
LayerWeightsOption = Annotated[
    Path | None,
    typer.Option(
        help="lpips observers: per-channel layer weights (JSON/YAML {layer: [...]}, or an lpips package .pth); "
        "default uniform",
        resolve_path=True,
    ),
]


def _parse_weights(values: list[str]) -> dict[str, Path]:
    weights = {}
    for value in values:
        model_id, sep, path = value.partition("=")
        if not sep or not model_id or not path:
            raise typer.BadParameter(f"{value!r}: expected MODEL_ID=PATH", param_hint="--weights")
        weights[model_id] = Path(path)
    return weights


def _bundle_summary(out: Path, bundle) -> str:
    n_trials = sum(len(t.trials) for t in bundle.manifest.tasks)
    return f"wrote {out}: {len(bundle.manifest.units)} units, {len(bundle.manifest.tasks)} tasks, {n_trials} trials"


@app.command()
def build(
    study: Annotated[Path, typer.Argument(help="study config (YAML)", resolve_path=True)],
    out: Annotated[Path, typer.Option("--out", help="bundle directory to write", resolve_path=True)],
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    weights: Annotated[list[str], typer.Option("--weights", help="MODEL_ID=PATH, overrides models.yaml")] = [],  # noqa: B006
    precision: Annotated[
        str, typer.Option(help="auto (fp16 on GPU, exemplars verified in fp32), fp32, fp16 or bf16")
    ] = "auto",
    shard: Annotated[
        str | None, typer.Option(help="i/n: do only share i of n of the work; then run `psychinterp merge`")
    ] = None,
    jobs: Annotated[int, typer.Option(help="split the work into this many jobs submitted through submitit")] = 0,
    executor: Annotated[str, typer.Option(help="where --jobs run: local (processes) or slurm")] = "local",
    slurm_partition: Annotated[str | None, typer.Option(help="SLURM partition for --jobs")] = None,
    job_gpus: Annotated[int, typer.Option(help="GPUs per job")] = 0,
    job_cpus: Annotated[int, typer.Option(help="CPU cores per job")] = 8,
    job_mem_gb: Annotated[int, typer.Option(help="memory per job, GiB")] = 32,
    job_timeout_min: Annotated[int, typer.Option(help="time limit per job, minutes")] = 24 * 60,
) -> None:
    """Build a study bundle: units, natural exemplars, feature visualisations, tasks.

    Interrupted builds resume: rerun the same command.
    """
    from psychinterp.workflows import JobsPlan, build_bundle

    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise typer.BadParameter(f"{precision!r}: choose auto, fp32, fp16 or bf16", param_hint="--precision")
    if executor not in ("local", "slurm"):
        raise typer.BadParameter(f"{executor!r}: choose local or slurm", param_hint="--executor")
    plan = None
    if jobs:
        from stimuli.cluster import JobResources

        resources = JobResources(job_timeout_min, job_cpus, job_gpus, job_mem_gb, slurm_partition)
        plan = JobsPlan(jobs, executor, resources)
    weight_files = _parse_weights(weights)
    bundle = build_bundle(study, out, device=device, weights=weight_files, precision=precision, shard=shard, jobs=plan)
    if bundle is None:
        typer.echo(f"shard {shard} done in {out}; run `psychinterp merge` once every shard has finished")
    else:
        typer.echo(_bundle_summary(out, bundle))


@app.command()
def merge(
    study: Annotated[Path, typer.Argument(help="study config (YAML)", resolve_path=True)],
    out: Annotated[
        Path, typer.Option("--out", help="bundle directory (where the shards wrote, or a new one)", resolve_path=True)
    ],
    shard_dirs: Annotated[
        list[Path] | None,
        typer.Argument(help="output folders of shards that wrote elsewhere than --out", resolve_path=True),
    ] = None,
) -> None:
    """Join the shards of a `build --shard i/n` run into one bundle."""
    from stimuli.build import merge_shards
    from stimuli.study import load_study_config

    bundle = merge_shards(load_study_config(study), out, shard_dirs or [])
    typer.echo(_bundle_summary(out, bundle))


@app.command("import-imi")
def import_imi(
    source: Annotated[
        Path, typer.Argument(help="a task folder of the 2023 study, or a folder of them", resolve_path=True)
    ],
    out: Annotated[Path, typer.Option("--out", help="bundle directory to write", resolve_path=True)],
    study_id: Annotated[str, typer.Option(help="study id of the new bundle")] = "imported",
    model: Annotated[str, typer.Option(help="model id to file the units under")] = "imported",
    condition: Annotated[
        str | None, typer.Option(help="natural or synthetic, for folders whose names say neither")
    ] = None,
) -> None:
    """Import task folders in the 2023 study's on-disk format (brendel-group/imi) into a bundle.

    References are the ones the study's page shows (mturk/2afc/task.js); what was missing or
    ignored is listed.
    """
    from stimuli.imi_import import import_imi_tasks

    imported = import_imi_tasks(source, out, study_id=study_id, model_id=model, condition=condition)
    for note in imported.notes:
        typer.echo(f"note: {note}", err=True)
    manifest = imported.bundle.manifest
    n_trials, n_practice = sum(len(t.trials) for t in manifest.tasks), len(manifest.practice_trials)
    typer.echo(f"wrote {out}: {len(manifest.tasks)} task(s), {n_trials} trials, {n_practice} practice trials")


ServerConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="server config (YAML): consent, platforms, practice, payments", resolve_path=True),
]


@app.command()
def serve(
    bundle: Annotated[Path, typer.Argument(help="study bundle directory", resolve_path=True)],
    db: DbOption = None,
    config: ServerConfigOption = None,
    host: str = "127.0.0.1",
    port: int = 5000,
    threads: Annotated[int, typer.Option(help="request threads of the single server process")] = 16,
    connection_limit: Annotated[
        int | None,
        typer.Option(
            help="open connections served at once (browsers keep them); default and most: half the descriptors "
            "the process may open"
        ),
    ] = None,
    allow_rebuilt_bundle: AllowRebuiltOption = False,
) -> None:
    """Serve a bundle to participants: one process (waitress), SQLite by default.

    For several worker processes with PostgreSQL, see docs/deploy.md (gunicorn).
    """
    from experiment_server import create_app
    from experiment_server.config import load_server_config
    from psychinterp.serving import PUBLIC_WARNING, create_server, is_loopback, start_up_line

    overrides = {"allow_rebuilt_bundle": allow_rebuilt_bundle or None}
    application = create_app(load_server_config(config, bundle_dir=bundle, database_url=db, **overrides))
    server = create_server(application, host, port, threads=threads, connection_limit=connection_limit)
    if not is_loopback(host):
        typer.echo(PUBLIC_WARNING.format(host=host), err=True)
    typer.echo(start_up_line(server, connection_limit))
    typer.echo(f"participant URL: http://{host}:{port}/")
    typer.echo(f"admin URL: http://{host}:{port}/admin/ (add a login with `psychinterp admin set-password`)")
    server.run()


@admin_app.command("set-password")
def admin_set_password(
    username: Annotated[str, typer.Argument(help="admin login name")],
    db: DbOption = None,
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="at least 12 characters")
    ] = "",
) -> None:
    """Create an experimenter login, or change its password (stored hashed)."""
    from experiment_server.admin import set_admin_password
    from experiment_server.db import make_session_factory
    from experiment_server.migrate import upgrade

    factory = make_session_factory(db)
    upgrade(factory.kw["bind"])
    created = set_admin_password(factory, username, password)
    typer.echo(f"{'created' if created else 'updated'} admin {username!r}")


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None) -> None:
    """Bring the database schema up to date (Alembic migrations). Run before starting several workers."""
    from experiment_server.db import make_engine
    from experiment_server.migrate import current_revision, head_revision, upgrade

    engine = make_engine(db)
    before = current_revision(engine)
    upgrade(engine)
    typer.echo(f"database at revision {head_revision()} (was {before or 'empty'})")


@app.command()
def export(
    bundle: Annotated[Path, typer.Argument(help="study bundle directory", resolve_path=True)],
    out: Annotated[Path, typer.Option("--out", help="CSV file to write", resolve_path=True)],
    db: DbOption = None,
    allow_rebuilt_bundle: AllowRebuiltOption = False,
) -> None:
    """Export every stored response as one CSV row (docs/responses.md)."""
    from contracts.bundle import load_bundle
    from experiment_server.db import make_session_factory
    from experiment_server.export import export_csv

    n = export_csv(load_bundle(bundle), make_session_factory(db), out, allow_rebuilt_bundle)
    typer.echo(f"wrote {n} responses to {out}")


@app.command()
def analyze(
    responses: Annotated[
        Path | None,
        typer.Argument(
            help="response CSV (ours, IMI 2023, Borowski et al. 2021 trials or intuitiveness ratings)",
            resolve_path=True,
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="report directory", resolve_path=True)] = Path("report"),
    resamples: Annotated[int, typer.Option(help="bootstrap resamples")] = 10_000,
    format: Annotated[
        str | None, typer.Option(help="psychinterp, imi, borowski or borowski-intuitiveness (default: detected)")
    ] = None,
    model_id: Annotated[str, typer.Option(help="model id for Borowski et al. files, which name none")] = "googlenet",
    db: Annotated[str | None, typer.Option("--db", help="read a server database directly (with --bundle)")] = None,
    bundle: Annotated[
        Path | None, typer.Option(help="the study bundle: model facts, and the study for --db", resolve_path=True)
    ] = None,
    criteria: Annotated[
        Path | None,
        typer.Option(
            help="exclusion criteria (YAML); default: with --db, the server's; otherwise the 2023 study's",
            resolve_path=True,
        ),
    ] = None,
    models: Annotated[
        Path | None,
        typer.Option(
            "--models", help="models file for model facts (needs torch to count parameters)", resolve_path=True
        ),
    ] = None,
    exclusions: Annotated[
        str,
        typer.Option(
            help="ours (recompute our criteria where the table allows), published (the source's own flags, "
            "e.g. the 2023 release's passed_checks and multi_participation) or none"
        ),
    ] = "ours",
    machine_scores: Annotated[
        Path | None,
        typer.Option(help="per-unit machine scores (psychinterp simulate --scores) to set beside", resolve_path=True),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="analysis config (YAML): alpha, equivalence margins, power; see docs/statistics.md",
            resolve_path=True,
        ),
    ] = None,
    other_paradigm: Annotated[
        Path | None,
        typer.Option(
            help="responses to the same units in another paradigm (e.g. odd-one-out beside 2AFC): "
            "the report adds their per-unit agreement",
            resolve_path=True,
        ),
    ] = None,
    allow_rebuilt_bundle: AllowRebuiltOption = False,
) -> None:
    """Accuracy per model and condition after exclusions, with bootstrap CIs, figures and report/index.html."""
    from analysis.pipeline import EXCLUSION_MODES
    from psychinterp.workflows import analyze_study

    if exclusions not in EXCLUSION_MODES:
        raise typer.BadParameter(f"{exclusions!r}: choose from {', '.join(EXCLUSION_MODES)}", param_hint="--exclusions")
    if (responses is None) == (db is None):
        raise typer.BadParameter("give a response CSV, or --db with --bundle")
    if db is not None and bundle is None:
        raise typer.BadParameter("--db needs --bundle", param_hint="--bundle")
    page = analyze_study(
        responses,
        out,
        db=db,
        bundle=bundle,
        models=models,
        criteria=criteria,
        n_resamples=resamples,
        format=format,
        model_id=model_id,
        exclusions=exclusions,
        machine_scores=machine_scores,
        analysis_config=config,
        other_paradigm=other_paradigm,
        allow_rebuilt_bundle=allow_rebuilt_bundle,
    )
    typer.echo(f"report: {page}")


def _int_list(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: expected comma-separated integers, e.g. 10,20,40", param_hint=name
        ) from None
    if not values or min(values) < 1:
        raise typer.BadParameter(f"{text!r}: expected positive integers", param_hint=name)
    return values


def _float_list(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected comma-separated numbers", param_hint=name) from None


# Options that `power` and `design` share: the models and the variance components, stated or from a pilot.
Log10Params = Annotated[str | None, typer.Option(help="or give log10 parameter counts, e.g. 6.8,7.4,8.0,8.3")]
PilotFile = Annotated[
    Path | None, typer.Option(help="pilot responses (CSV) for the variance components", resolve_path=True)
]
BaseAccuracy = Annotated[float, typer.Option(help="mean accuracy, without --pilot")]
ModelSd = Annotated[float, typer.Option(help="between-model sd (proportion), without --pilot")]
UnitSd = Annotated[float, typer.Option(help="between-unit sd (proportion), without --pilot")]
ParticipantSd = Annotated[float, typer.Option(help="between-participant sd, without --pilot")]


@app.command()
def power(
    slope: Annotated[float, typer.Option(help="the slope to detect, percentage points per decade of parameters")],
    out: Annotated[
        Path, typer.Option("--out", help="folder for power.csv and the power curve", resolve_path=True)
    ] = Path("power"),
    bundle: Annotated[
        Path | None, typer.Option(help="take the models (parameter counts) from a bundle", resolve_path=True)
    ] = None,
    log10_params: Log10Params = None,
    pilot: PilotFile = None,
    base: BaseAccuracy = 0.8,
    model_sd: ModelSd = 0.02,
    unit_sd: UnitSd = 0.08,
    participant_sd: ParticipantSd = 0.05,
    paradigm: Annotated[
        str, typer.Option(help="the paradigm, for its chance level, without --bundle or --pilot")
    ] = "2afc",
    participants: Annotated[str, typer.Option(help="participants per model to try")] = "10,20,40,80",
    units: Annotated[str, typer.Option(help="units per model to try")] = "20,40,80",
    trials: Annotated[int, typer.Option(help="main trials per participant")] = 40,
    studies: Annotated[int, typer.Option(help="simulated studies per grid point")] = 500,
    alpha: float = 0.05,
    seed: int = 0,
    holm_family: Annotated[
        int | None,
        typer.Option(
            help="slopes in the verdict's Holm family (conditions x unit kinds); default: the bundle's conditions"
        ),
    ] = None,
    confidence: Annotated[
        float, typer.Option(min=0.5, max=0.99, help="with --pilot: confidence of the cautious_power column")
    ] = 0.9,
) -> None:
    """Power to detect a scaling slope, for a grid of participant and unit counts (simulated whole studies)."""
    from psychinterp.workflows import plan_power

    if (bundle is None) == (log10_params is None):
        raise typer.BadParameter("give the models with --bundle or --log10-params")
    run = plan_power(
        slope / 100,
        out,
        participants=_int_list(participants, "--participants"),
        units=_int_list(units, "--units"),
        bundle=bundle,
        log10_params=_float_list(log10_params, "--log10-params") if log10_params is not None else None,
        pilot=pilot,
        components={"base": base, "model_sd": model_sd, "unit_sd": unit_sd, "participant_sd": participant_sd},
        paradigm=paradigm,
        trials=trials,
        studies=studies,
        alpha=alpha,
        seed=seed,
        family_size=holm_family,
        level=confidence,
    )
    typer.echo(f"variance components: {run.components} ({run.paradigm})")
    typer.echo(f"power of the verdict's test: alpha {alpha:g}, Holm over {run.family_size} slope(s)")
    if run.level is not None:
        typer.echo(
            "the pilot's model SD rests on its models' means alone, so power is uncertain: expected_power "
            f"averages over that uncertainty; cautious_power is reached with {run.level:.0%} confidence"
        )
    typer.echo(run.table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    typer.echo(f"wrote {run.files[0]} and {run.files[1]}")


@app.command()
def design(
    budget: Annotated[float, typer.Option(help="what the whole study may cost (trials and new units' stimuli)")],
    out: Annotated[
        Path, typer.Option("--out", help="folder for design.csv and the precision curve", resolve_path=True)
    ] = Path("design"),
    bundle: Annotated[
        Path | None, typer.Option(help="take the models and conditions from a bundle", resolve_path=True)
    ] = None,
    log10_params: Log10Params = None,
    pilot: PilotFile = None,
    base: BaseAccuracy = 0.8,
    model_sd: ModelSd = 0.02,
    unit_sd: UnitSd = 0.08,
    participant_sd: ParticipantSd = 0.05,
    price_per_trial: Annotated[float | None, typer.Option(help="what one main trial costs")] = None,
    price_per_minute: Annotated[float | None, typer.Option(help="or a participant's minute ...")] = None,
    seconds_per_trial: Annotated[float | None, typer.Option(help="... and the seconds one trial takes")] = None,
    unit_cost: Annotated[float | None, typer.Option(help="what one more unit's stimuli cost")] = None,
    gpu_minutes_per_unit: Annotated[
        float, typer.Option(help="without --unit-cost: GPU minutes to build one unit")
    ] = 2.5,
    gpu_price_per_hour: Annotated[float, typer.Option(help="without --unit-cost: price of a GPU hour")] = 2.5,
    trials: Annotated[int, typer.Option(help="main trials per participant")] = 40,
    conditions: Annotated[int | None, typer.Option(help="conditions per model (default: the bundle's, else 1)")] = None,
    half_width_pp: Annotated[
        float | None, typer.Option(help="target: 95% half-width of each model x condition accuracy, in pp")
    ] = None,
    slope_se_pp: Annotated[float | None, typer.Option(help="or target: the scaling slope's SE, pp per decade")] = None,
    max_units_per_model: Annotated[int | None, typer.Option(help="units a model can offer at most")] = None,
    machine_r: Annotated[
        float | None,
        typer.Option(
            help="a machine observer's correlation with the units' true accuracy (a report's machine-human r over "
            "its noise ceiling): plan a prediction-powered study"
        ),
    ] = None,
    scored_units: Annotated[
        int | None, typer.Option(help="with --machine-r: units the machine scores per model (people rate some)")
    ] = None,
    min_ratings_per_unit: Annotated[
        int, typer.Option(help="ratings each rated unit needs at least (per-unit accuracies, the noise ceiling)")
    ] = 1,
) -> None:
    """How to spend a budget: units per model, ratings per unit and participants, against the 2023 allocation."""
    from psychinterp.workflows import plan_design

    if (bundle is None) == (log10_params is None):
        raise typer.BadParameter("give the models with --bundle or --log10-params")
    if price_per_trial is None:
        if price_per_minute is None or seconds_per_trial is None:
            raise typer.BadParameter(
                "give --price-per-trial, or --price-per-minute with --seconds-per-trial", param_hint="--price-per-trial"
            )
        price_per_trial = price_per_minute * seconds_per_trial / 60
    run = plan_design(
        budget,
        out,
        price_per_trial=price_per_trial,
        unit_cost=unit_cost if unit_cost is not None else gpu_minutes_per_unit * gpu_price_per_hour / 60,
        bundle=bundle,
        log10_params=_float_list(log10_params, "--log10-params") if log10_params is not None else None,
        pilot=pilot,
        components={"base": base, "model_sd": model_sd, "unit_sd": unit_sd, "participant_sd": participant_sd},
        trials=trials,
        conditions=conditions,
        half_width=half_width_pp / 100 if half_width_pp is not None else None,
        slope_se=slope_se_pp / 100 if slope_se_pp is not None else None,
        max_units_per_model=max_units_per_model,
        machine_r=machine_r,
        scored_units=scored_units,
        min_ratings_per_unit=min_ratings_per_unit,
    )
    typer.echo(
        f"variance components: {run.components}; "
        f"a trial costs {run.costs.per_trial:.4g}, a unit {run.costs.per_unit:.4g}"
    )
    typer.echo(run.table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    plan, rows = run.table.iloc[0], run.table.set_index("allocation")
    typer.echo(
        f"planner: {plan.units_per_model} units per model rated {plan.ratings_per_unit:.3g} times each, "
        f"{plan.participants_per_cell} participants per cell: ±{plan.half_width_pp:.2f} pp per cell for {plan.cost:.4g}"
    )
    if "planner, people only" in rows.index:
        alone = rows.loc["planner, people only"]
        typer.echo(
            f"with the machine scoring {scored_units} units per model (prediction-powered); people alone, at the "
            f"same budget: {int(alone.units_per_model)} units, ±{alone.half_width_pp:.2f} pp"
        )
    if "2023, same precision" in rows.index:
        same = rows.loc["2023, same precision"]
        typer.echo(
            f"the 2023 allocation ({int(same.units_per_model)} units per model) needs {same.cost:.4g} "
            f"for the same precision ({same.cost / plan.cost:.2g}x)"
        )
    else:
        typer.echo("the 2023 allocation cannot reach this precision: its units' spread alone is wider")
    typer.echo(f"wrote {', '.join(str(f) for f in run.files)}")


@app.command()
def simulate(
    bundle: Annotated[Path, typer.Argument(help="study bundle directory", resolve_path=True)],
    participants: Annotated[int, typer.Option(help="simulated participants")] = 10,
    observer: ObserverOption = "pixel",
    server: Annotated[str | None, typer.Option(help="a running server's URL; default: the bundle in-process")] = None,
    db: Annotated[str | None, typer.Option("--db", help="database for the in-process server")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="write the response table (CSV) here", resolve_path=True)
    ] = None,
    scores: Annotated[
        Path | None, typer.Option(help="write per-unit machine scores (CSV) here, offline", resolve_path=True)
    ] = None,
    models: ObserverModelsOption = None,
    temperature: float = 10.0,
    lapse: float = 0.05,
    calibration: Annotated[
        Path | None,
        typer.Option(
            help="temperature and lapse fitted to people (psychinterp observers calibrate): replaces the two above",
            resolve_path=True,
        ),
    ] = None,
    lpips_weights: LayerWeightsOption = None,
    seed: int = 0,
) -> None:
    """Machine observers take the study as participants (through the HTTP API), and/or score each unit offline."""
    from psychinterp.workflows import simulate_study

    if out is not None and server is not None:
        raise typer.BadParameter(
            "--out needs the in-process server; export from the running one instead", param_hint="--out"
        )
    if db is not None and server is not None:
        raise typer.BadParameter("--db is for the in-process server; the running one has its own", param_hint="--db")
    run = simulate_study(
        bundle,
        participants,
        observer,
        server=server,
        db=db,
        out=out,
        scores=scores,
        models=models,
        temperature=temperature,
        lapse=lapse,
        calibration=calibration,
        layer_weights=lpips_weights,
        seed=seed,
    )
    if run.scored_rows is not None:
        typer.echo(f"wrote machine scores of {run.scored_rows} unit x condition rows to {scores}")
    if participants:
        ended = ", ".join(f"{n} {status}" for status, n in sorted(run.outcomes.items()))
        typer.echo(f"{participants} {run.observer} observer(s): {ended}")
        if any(status.startswith("failed") for status in run.outcomes):
            typer.echo(
                "failed: practice = the practice trials were not passed; attention = catch trials answered wrongly; "
                "timing = faster than the server's minimum times (the export's failure_reason column, per session)"
            )
    if run.responses_written is not None:
        typer.echo(f"wrote {run.responses_written} responses to {out}")


@observers_app.command("calibrate")
def observers_calibrate(
    responses: Annotated[Path, typer.Argument(help="the study's response table (our export)", resolve_path=True)],
    bundle: Annotated[Path, typer.Option(help="the study's bundle", resolve_path=True)],
    out: Annotated[Path, typer.Option("--out", help="write the calibration (JSON) here", resolve_path=True)],
    observer: ObserverOption = "pixel",
    models: ObserverModelsOption = None,
    lpips_weights: LayerWeightsOption = None,
) -> None:
    """Fit an observer's temperature and lapse to people's answers in one study; apply it to another with
    ``psychinterp simulate --calibration``."""
    from psychinterp.workflows import calibrate_observer

    fitted = calibrate_observer(responses, bundle, observer, out, models=models, layer_weights=lpips_weights)
    typer.echo(
        f"{fitted.observer}: temperature {fitted.temperature:.4g}, lapse {fitted.lapse:.3f} "
        f"(fitted to {fitted.responses} responses of study {fitted.study_id}); wrote {out}"
    )


@app.command("train-family")
def train_family(
    out: Annotated[
        Path, typer.Option("--out", help="folder for the images, the weights and models.yaml", resolve_path=True)
    ] = Path("family"),
    train_per_class: Annotated[int, typer.Option(min=1, help="training images per class")] = 300,
    pool_per_class: Annotated[int, typer.Option(min=1, help="exemplar-pool images per class")] = 100,
    epochs: Annotated[int, typer.Option(min=1)] = 6,
    seed: int = 0,
    retrain: Annotated[
        bool, typer.Option(help="train even where the weights shipped with the package match this data and recipe")
    ] = False,
) -> None:
    """Train the project's own model family (ShapesNet XS-L) on generated shapes-world images; cached."""
    from stimuli.demo.family import FamilyData, TrainingRecipe, prepare_family

    models_file = prepare_family(
        out,
        FamilyData(train=train_per_class, pool=pool_per_class),
        TrainingRecipe(epochs=epochs, seed=seed),
        progress=True,
        log=typer.echo,
        retrain=retrain,
    )
    typer.echo(f"registered in {models_file}; exemplar pool: {out / 'shapes' / 'pool'}")


@app.command()
def demo(
    workdir: Annotated[
        Path, typer.Option(help="where the demo's data, bundle and database go", resolve_path=True)
    ] = Path(".demo"),
    host: str = "127.0.0.1",
    port: int = 5000,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="serve the study at the end")] = True,
    retrain: Annotated[bool, typer.Option(help="train the model family instead of using the shipped weights")] = False,
) -> None:
    """Build a small study offline, store sample responses, analyse them, then serve it."""
    from psychinterp.demo import run_demo

    run_demo(workdir, host=host, port=port, serve=serve_after, retrain=retrain)


def main() -> None:
    if not sys.stderr.isatty():
        # In a log file or CI, a progress bar is a line every few seconds rather than one per update.
        os.environ.setdefault("TQDM_MININTERVAL", "5")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for package in ("contracts", "stimuli", "experiment_server", "analysis", "psychinterp"):
        logging.getLogger(package).setLevel(logging.INFO)
    try:
        app()
    except PsychinterpError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
