"""``psychinterp``: one entry point for building, serving, exporting and analysing studies.

Subcommands that need torch import it lazily, so the server and the analysis
run in an environment without it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from stimuli.errors import PsychinterpError

app = typer.Typer(help="Measure how interpretable the units of vision models are to people.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry (models.yaml).", no_args_is_help=True)
app.add_typer(models_app, name="models")

DbOption = Annotated[str, typer.Option("--db", help="SQLAlchemy database URL.")]
DEFAULT_DB = "sqlite:///psychinterp.db"


@models_app.command("list")
def models_list(
    models_file: Annotated[Path | None, typer.Option("--models", help="models file (default: models.yaml)")] = None,
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


def _parse_weights(values: list[str]) -> dict[str, Path]:
    weights = {}
    for value in values:
        model_id, sep, path = value.partition("=")
        if not sep or not model_id or not path:
            raise typer.BadParameter(f"{value!r}: expected MODEL_ID=PATH", param_hint="--weights")
        weights[model_id] = Path(path)
    return weights


@app.command()
def build(
    study: Annotated[Path, typer.Argument(help="study config (YAML)")],
    out: Annotated[Path, typer.Option("--out", help="bundle directory to write")],
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    weights: Annotated[list[str], typer.Option("--weights", help="MODEL_ID=PATH, overrides models.yaml")] = [],  # noqa: B006
) -> None:
    """Build a study bundle: units, natural exemplars, feature visualisations, tasks."""
    from stimuli.build import build_study
    from stimuli.study import load_study_config

    weight_files = _parse_weights(weights)
    bundle = build_study(load_study_config(study), out, device=device, weights=weight_files)
    n_trials = sum(len(t.trials) for t in bundle.manifest.tasks)
    typer.echo(
        f"wrote {out}: {len(bundle.manifest.units)} units, {len(bundle.manifest.tasks)} tasks, {n_trials} trials"
    )


@app.command("import-imi")
def import_imi(
    source: Annotated[Path, typer.Argument(help="a task folder of the 2023 study, or a folder of them")],
    out: Annotated[Path, typer.Option("--out", help="bundle directory to write")],
    study_id: Annotated[str, typer.Option(help="study id of the new bundle")] = "imported",
    model: Annotated[str, typer.Option(help="model id to file the units under")] = "imported",
    condition: Annotated[str | None, typer.Option(help="natural or synthetic (default: from the task name)")] = None,
) -> None:
    """Import task folders in the 2023 study's on-disk format (brendel-group/imi) into a bundle."""
    from stimuli.imi_import import import_imi_tasks

    bundle = import_imi_tasks(source, out, study_id=study_id, model_id=model, condition=condition)
    n_trials = sum(len(t.trials) for t in bundle.manifest.tasks)
    typer.echo(f"wrote {out}: {len(bundle.manifest.tasks)} task(s), {n_trials} trials")


@app.command()
def serve(
    bundle: Annotated[Path, typer.Argument(help="study bundle directory")],
    db: DbOption = DEFAULT_DB,
    host: str = "127.0.0.1",
    port: int = 5000,
) -> None:
    """Serve a bundle to participants (single process)."""
    from experiment_server import create_app

    application = create_app({"bundle_dir": bundle, "database_url": db})
    typer.echo(f"participant URL: http://{host}:{port}/")
    application.run(host=host, port=port, threaded=True)


@app.command()
def export(
    bundle: Annotated[Path, typer.Argument(help="study bundle directory")],
    out: Annotated[Path, typer.Option("--out", help="CSV file to write")],
    db: DbOption = DEFAULT_DB,
) -> None:
    """Export every stored response as one CSV row (docs/responses.md)."""
    from experiment_server.db import make_session_factory
    from experiment_server.export import export_csv
    from stimuli.bundle import load_bundle

    n = export_csv(load_bundle(bundle), make_session_factory(db), out)
    typer.echo(f"wrote {n} responses to {out}")


@app.command()
def analyze(
    responses: Annotated[Path, typer.Argument(help="response CSV")],
    out: Annotated[Path, typer.Option("--out", help="report directory")] = Path("report"),
    resamples: Annotated[int, typer.Option(help="bootstrap resamples")] = 10_000,
) -> None:
    """Accuracy per model and condition with bootstrap CIs, a figure and report/index.html."""
    from analysis.report import write_report

    page = write_report(responses, out, n_resamples=resamples)
    typer.echo(f"report: {page}")


@app.command()
def demo(
    workdir: Annotated[Path, typer.Option(help="where the demo's data, bundle and database go")] = Path(".demo"),
    host: str = "127.0.0.1",
    port: int = 5000,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="serve the study at the end")] = True,
) -> None:
    """Build a small study offline, store sample responses, analyse them, then serve it."""
    from psychinterp.demo import run_demo

    run_demo(workdir, host=host, port=port, serve=serve_after)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for package in ("stimuli", "experiment_server", "analysis", "psychinterp"):
        logging.getLogger(package).setLevel(logging.INFO)
    try:
        app()
    except PsychinterpError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
