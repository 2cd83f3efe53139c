"""The unit microscope, live: the report's unit pages for a running study, from the database.

``/admin/units/`` lists every unit with its accuracy so far; ``/admin/units/<unit>`` shows what its
participants saw (exemplars, visualisations, queries with the answer marked) beside how they did.
The pages are :mod:`contracts.microscope`'s, so the live view and the report's ``units/`` are one
design. Counts are in SQL: the index is one query grouped by trial, a unit page reads only that
unit's responses. Everything here is behind the experimenter's login: it shows answers.

Live counts are before the analysis's exclusions: they take main-trial responses of sessions that
did not fail a check and that the experimenter did not exclude.
"""

from __future__ import annotations

from collections import defaultdict
from functools import cache

from flask import Blueprint, Response, abort, current_app, render_template_string, send_file
from flask_login import login_required
from sqlalchemy import Integer, func, select
from sqlalchemy.orm import Session, selectinload
from statsmodels.stats.proportion import proportion_confint

from contracts import microscope
from contracts.bundle import Manifest
from contracts.criteria import failed_rules
from experiment_server.checks import session_summary
from experiment_server.context import bundle as _bundle
from experiment_server.context import cfg as _cfg
from experiment_server.context import db as _db
from experiment_server.context import paradigm as _paradigm
from experiment_server.db import ParticipantSession
from experiment_server.db import Response as ResponseRow

blueprint = Blueprint("units", __name__, url_prefix="/admin/units")
images = Blueprint("admin_images", __name__, url_prefix="/admin/images")

LIVE_NOTE = (
    "Live: main-trial responses so far, without the sessions that failed a check of the server's criteria, "
    "that the server failed, or that you excluded (as the report leaves them out). The analysis report's "
    "numbers are the ones to cite."
)
COUNTED_STATUSES = ("active", "completed")


def _failing_checks(db: Session, study_id: str) -> set[int]:
    """Completed sessions that fail a check of the server's criteria (the report leaves them out too).

    A completed session's checks never change, so each is judged once per app (the app's criteria)."""
    judged: dict[int, bool] = current_app.extensions.setdefault("psychinterp_session_checks", {})
    new = db.scalars(
        select(ParticipantSession)
        .where(ParticipantSession.study_id == study_id, ParticipantSession.status == "completed")
        .where(ParticipantSession.id.not_in(list(judged)))
        .options(selectinload(ParticipantSession.responses))
    ).all()
    tasks, criteria = current_app.extensions["psychinterp_tasks"], _cfg().criteria
    for session in new:
        task = tasks.get(session.task_id)
        summary = session_summary(session, task.trials if task else [], _paradigm())
        judged[session.id] = bool(failed_rules(summary, criteria))
    return {session_id for session_id, failing in judged.items() if failing}


def _counted(db: Session, study_id: str):
    """The sessions whose responses count on the live pages, as a SQL condition."""
    return (
        (ParticipantSession.study_id == study_id)
        & ParticipantSession.status.in_(COUNTED_STATUSES)
        & ~ParticipantSession.excluded_by_experimenter
        & ParticipantSession.id.not_in(_failing_checks(db, study_id))
    )


def _wilson(k: int, n: int) -> tuple[float, float]:
    return proportion_confint(k, n, alpha=0.05, method="wilson")


def model_rank(manifest: Manifest) -> dict[str, int]:
    """Models in order of scale (parameters, else training images), as the report orders them."""
    order = sorted(
        manifest.models,
        key=lambda m: (m.parameter_count is None, m.parameter_count or 0, m.train_images or 0, m.id),
    )
    return {m.id: i for i, m in enumerate(order)}


def unit_scores(db: Session, manifest: Manifest) -> dict[str, list[microscope.HumanResult]]:
    """Every unit's accuracy per condition so far: one query, grouped by trial and confidence."""
    main = {t.trial_id: t for t in manifest.all_trials() if t.kind == "main"}
    rows = db.execute(
        select(ResponseRow.trial_id, ResponseRow.confidence, func.count(), func.sum(ResponseRow.correct.cast(Integer)))
        .join(ParticipantSession, ParticipantSession.id == ResponseRow.session_id)
        .where(_counted(db, manifest.study_id), ResponseRow.phase == "main")
        .group_by(ResponseRow.trial_id, ResponseRow.confidence)
    )
    totals: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0, defaultdict(int)])
    for trial_id, confidence, n, k in rows:
        trial = main.get(trial_id)
        if trial is None:
            continue
        total = totals[(trial.unit_id, trial.condition)]
        total[0] += int(k or 0)
        total[1] += int(n)
        total[2][confidence] += int(n)
    out: dict[str, list[microscope.HumanResult]] = defaultdict(list)
    for (unit_id, condition), (k, n, confidence) in sorted(totals.items()):
        low, high = _wilson(k, n)
        out[unit_id].append(
            microscope.HumanResult(
                condition=condition,
                n_responses=n,
                n_participants=0,  # not shown in the index; a unit's page counts them
                accuracy=k / n,
                ci_low=float(low),
                ci_high=float(high),
                confidence_counts={c: confidence.get(c, 0) for c in microscope.CONFIDENCE_LEVELS},
                rt_counts=[],
                rt_median_s=None,
            )
        )
    return dict(out)


def unit_results(db: Session, manifest: Manifest, unit_id: str) -> list[microscope.HumanResult]:
    """One unit's responses so far, per condition, with their confidence and response times."""
    trials = {t.trial_id: t for t in manifest.all_trials() if t.kind == "main" and t.unit_id == unit_id}
    rows = db.execute(
        select(
            ResponseRow.trial_id, ResponseRow.correct, ResponseRow.confidence, ResponseRow.rt_ms, ResponseRow.session_id
        )
        .join(ParticipantSession, ParticipantSession.id == ResponseRow.session_id)
        .where(_counted(db, manifest.study_id), ResponseRow.phase == "main", ResponseRow.trial_id.in_(list(trials)))
    )
    by_condition: dict[str, list] = defaultdict(list)
    for row in rows:
        by_condition[trials[row.trial_id].condition].append(row)
    results = []
    for condition, answered in sorted(by_condition.items()):
        correct = [bool(r.correct) for r in answered]
        results.append(
            microscope.human_result(
                condition,
                correct,
                [r.confidence for r in answered],
                [r.rt_ms for r in answered],
                [r.session_id for r in answered],
                _wilson(sum(correct), len(correct)),
            )
        )
    return results


@cache
def _template(name: str) -> str:
    return microscope.template(name)


def _views() -> dict[str, microscope.UnitView]:
    """The bundle's unit views, made once per app (they depend only on the bundle)."""
    views = current_app.extensions.get("psychinterp_unit_views")
    if views is None:
        manifest = _bundle().manifest
        names = {m.id: m.display_name for m in manifest.models}
        views = {v.unit.unit_id: v for v in microscope.unit_views(_bundle(), names)}
        current_app.extensions["psychinterp_unit_views"] = views
    return views


_LINKS = {
    "stylesheet": f"assets/{microscope.STYLESHEET}",
    "script": f"assets/{microscope.INDEX_SCRIPT}",
    "report_url": None,
    "note": LIVE_NOTE,
}


@blueprint.get("/")
@login_required
def index():
    manifest = _bundle().manifest
    with _db() as db:
        scores = unit_scores(db, manifest)
    views = microscope.with_human(list(_views().values()), scores)
    rows = microscope.index_rows(views, model_rank(manifest), page="{unit_id}")
    names = {m.id: m.display_name for m in manifest.models}
    replaced = microscope.replaced_rows(_bundle(), names, page="{unit_id}")
    return render_template_string(_template("units_index.html"), rows=rows, replaced=replaced, **_LINKS)


@blueprint.get("/assets/<name>")
@login_required
def asset(name: str):
    if name not in microscope.ASSETS:
        abort(404, f"no asset {name!r}")
    return Response(_template(name), mimetype=microscope.ASSETS[name])


@blueprint.get("/<unit_id>")
@login_required
def unit(unit_id: str):
    view = _views().get(unit_id)
    if view is None:
        abort(404, f"no unit {unit_id!r} in this study")
    with _db() as db:
        human = unit_results(db, _bundle().manifest, unit_id)
    (view,) = microscope.with_human([view], {unit_id: human})
    page = _template("unit.html")
    return render_template_string(page, v=view, images="../images", index_url=".", **_LINKS)


@cache
def _bundle_images(root: str) -> frozenset[str]:
    return frozenset(p.stem for p in (_bundle().root / "images").glob("*.png"))


@images.get("/<sha256>.png")
@login_required
def image(sha256: str):
    """A bundle image by its hash, for the experimenter's pages only (participants get per-trial
    images under unguessable names, never a hash)."""
    if sha256 not in _bundle_images(str(_bundle().root)):
        abort(404, "no such image in this study's bundle")
    return send_file(_bundle().root / "images" / f"{sha256}.png", mimetype="image/png", max_age=3600)
