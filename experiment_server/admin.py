"""Experimenter dashboard: login, live progress, participants with exclusion checks, exports, payments.

Pages need a login (hashed passwords, rate-limited); every state change is a
POST with a CSRF token (Flask-WTF).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import hmac
import io
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user, login_required, login_user, logout_user
from limits import RateLimitItemPerHour
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, selectinload
from werkzeug.security import check_password_hash, generate_password_hash

from contracts.criteria import describe, failed_rules
from experiment_server import dashboard as dashboard_panels
from experiment_server.assignment import expire_reservations, lock_study
from experiment_server.checks import session_summary
from experiment_server.context import bundle as _bundle
from experiment_server.context import cfg as _cfg
from experiment_server.context import db as _db
from experiment_server.context import paradigm as _paradigm
from experiment_server.context import reservation_lapsed
from experiment_server.db import Admin, ParticipantSession, WorkerGroupMember, utcnow
from experiment_server.export import csv_chunks, jsonl_chunks, response_rows, spreadsheet_safe
from experiment_server.platforms import PLATFORMS
from experiment_server.schemas import PROSE_ALLOWED, control_character

blueprint = Blueprint("admin", __name__, url_prefix="/admin")
api = Blueprint("admin_api", __name__, url_prefix="/api/admin")


@dataclass(frozen=True)
class AdminUser:
    """What Flask-Login keeps for a logged-in experimenter."""

    id: int
    username: str
    session_version: int = 0
    # Ties the cookie to this database's row: apps on one machine share the secret key that signs cookies,
    # and admin 1 of another study's database must not be admin 1 here.
    credential: str = ""
    is_authenticated: bool = True
    is_active: bool = True
    is_anonymous: bool = False

    def get_id(self) -> str:
        # The version travels in the signed cookie: once the admin's version moves on, the cookie is dead.
        return f"{self.id}:{self.session_version}:{self.credential}"


def _credential(admin: Admin) -> str:
    """A keyed digest of the admin's (salted) password hash: it differs between databases and passwords."""
    key = current_app.config["SECRET_KEY"].encode()
    return hmac.new(key, admin.password_hash.encode(), hashlib.sha256).hexdigest()[:32]


def admin_user(admin: Admin) -> AdminUser:
    return AdminUser(admin.id, admin.username, admin.session_version, _credential(admin))


def load_admin(session_factory, cookie_id: str) -> AdminUser | None:
    """The admin a login cookie names, if its session version and credential are still the admin's."""
    admin_id, version, credential = (cookie_id.split(":") + ["", ""])[:3]
    if not (admin_id.isdigit() and version.isdigit()):
        return None
    with session_factory() as db:
        found = db.get(Admin, int(admin_id))
    if found is None or found.session_version != int(version):
        return None
    user = admin_user(found)
    return user if hmac.compare_digest(user.credential, credential) else None


def end_sessions(session_factory, admin_id: int) -> None:
    """Every login session of this admin ends (logout, password change)."""
    with session_factory() as db, db.begin():
        admin = db.get(Admin, admin_id)
        if admin is not None:
            admin.session_version += 1


@functools.cache
def _stand_in_hash() -> str:
    # Checked when the username is unknown, so that both paths cost one password hash.
    return generate_password_hash(secrets.token_hex(16))


def set_admin_password(session_factory, username: str, password: str) -> bool:
    """Create the admin, or change their password; returns True when created."""
    if len(password) < 12:
        from contracts.errors import ConfigError

        raise ConfigError("admin password: use at least 12 characters")
    with session_factory() as db, db.begin():
        admin = db.scalar(select(Admin).where(Admin.username == username))
        hashed = generate_password_hash(password)
        if admin is None:
            db.add(Admin(username=username, password_hash=hashed))
            return True
        admin.password_hash = hashed
        admin.session_version += 1  # a new password logs every browser out
        return False


@blueprint.before_request
def _printable_form():
    """Every admin form field, as the API's bodies: a NUL in a login or an exclusion reason was a 500 on
    PostgreSQL."""
    for name, value in request.form.items(multi=True):
        if problem := control_character(value, PROSE_ALLOWED):
            abort(400, f"form field {name}: {problem}; remove it and send the form again")


# --- login (rate-limited by the app factory) --------------------------------------------

# Failed logins are counted per username over an hour in the rate limiter's storage (memory, or the
# redis that several workers share), for the dashboard's alarm; this count never refuses anyone.
FAILED_LOGIN_WINDOW = RateLimitItemPerHour(1_000_000)
ANY_USERNAME = "*"


def _failure_counter() -> MovingWindowRateLimiter:
    return MovingWindowRateLimiter(current_app.extensions["psychinterp_limiter"].storage)


def record_failed_login(username: str) -> None:
    counter = _failure_counter()
    for key in (username[:100], ANY_USERNAME):
        counter.hit(FAILED_LOGIN_WINDOW, "failed-admin-login", key)


def failed_logins(usernames: list[str]) -> dict[str, int]:
    """Failed logins in the last hour: per username given, and under ``*`` for every username tried."""
    counter = _failure_counter()
    counts = {}
    for key in (*usernames, ANY_USERNAME):
        stats = counter.get_window_stats(FAILED_LOGIN_WINDOW, "failed-admin-login", key)
        counts[key] = FAILED_LOGIN_WINDOW.amount - stats.remaining
    return counts


@blueprint.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "POST":
        username = request.form.get("username", "")
        password = request.form.get("password", "")
        with _db() as db:
            admin = db.scalar(select(Admin).where(Admin.username == username[:100]))
        matches = check_password_hash(admin.password_hash if admin else _stand_in_hash(), password)
        if admin is not None and matches:
            login_user(admin_user(admin))
            target = request.args.get("next", "")
            # Only local paths, so the login cannot be used to redirect elsewhere.
            return redirect(target if target.startswith("/admin") else url_for("admin.dashboard"))
        record_failed_login(username)
        flash("Wrong username or password.")
        return render_template("admin/login.html"), 401
    return render_template("admin/login.html")


@blueprint.post("/logout")
@login_required
def logout():
    end_sessions(current_app.extensions["psychinterp_db"], current_user.id)
    logout_user()
    return redirect(url_for("admin.login"))


# --- progress and participants --------------------------------------------------------


PER_PAGE = 50  # participants per dashboard page
MAX_PER_PAGE = 1000  # for the JSON API


def _sessions(db: Session) -> list[ParticipantSession]:
    """Every session with its responses: for the payment and review exports, which need them all."""
    return list(
        db.scalars(
            select(ParticipantSession)
            .where(ParticipantSession.study_id == _bundle().manifest.study_id)
            .options(selectinload(ParticipantSession.responses))
            .order_by(ParticipantSession.id)
        )
    )


def _page_of_sessions(db: Session, page: int, per_page: int) -> list[ParticipantSession]:
    """One page of the study's sessions, newest first, with their responses (only this page's)."""
    return list(
        db.scalars(
            select(ParticipantSession)
            .where(ParticipantSession.study_id == _bundle().manifest.study_id)
            .options(selectinload(ParticipantSession.responses))
            .order_by(ParticipantSession.id.desc())
            .offset((page - 1) * per_page)
            .limit(per_page)
        )
    )


def _live_status(session: ParticipantSession, now) -> str:
    if session.status == "active":
        if reservation_lapsed(session.status, session.reserved_until, now):
            return "expired"
        return "in progress" if session.responses else "reserved"
    if session.status == "completed" and session.excluded_by_experimenter:
        return "excluded"
    return {"failed": "excluded"}.get(session.status, session.status)


def progress(db: Session) -> list[dict[str, Any]]:
    """Per task: reserved, in progress, completed, excluded, expired (one grouped query)."""
    return dashboard_panels.task_progress(db, _bundle().manifest, utcnow())


def _trials_of(session: ParticipantSession) -> list:
    task = current_app.extensions["psychinterp_tasks"].get(session.task_id)
    return task.trials if task else []


def participants(db: Session, page: int = 1, per_page: int = PER_PAGE) -> list[dict[str, Any]]:
    """One page of sessions, newest first, with the exclusion checks of the server's criteria previewed."""
    criteria = _cfg().criteria
    now = utcnow()
    rows = []
    for session in _page_of_sessions(db, page, per_page):
        main = [r for r in session.responses if r.phase == "main"]
        trials = _trials_of(session)
        summary = session_summary(session, trials, _paradigm())
        rules = failed_rules(summary, criteria) if session.status == "completed" else []
        rows.append(
            {
                "id": session.id,
                "participant_id": session.participant_id,
                "platform": session.platform,
                "task_id": session.task_id,
                "status": _live_status(session, now),
                "failure_reason": session.failure_reason,
                "answered": len(main),
                "n_trials": len(trials),
                "catch_accuracy": summary.catch_accuracy,
                "instruction_s": summary.instruction_s,
                "session_s": summary.session_s,
                "practice_blocks": session.practice_blocks,
                "focus_lost": sum(r.focus_lost for r in main),
                "failed_checks": [describe(r, criteria) for r in rules],
                "excluded_by_experimenter": session.excluded_by_experimenter,
                "exclusion_reason": session.exclusion_reason,
                "feedback": session.feedback,
                "completion_code": session.completion_code,
            }
        )
    return rows


def _page_argument(maximum_per_page: int = PER_PAGE) -> tuple[int, int]:
    try:
        page = max(1, int(request.args.get("page", 1)))
        per_page = min(maximum_per_page, max(1, int(request.args.get("per_page", PER_PAGE))))
    except ValueError:
        abort(400, "page and per_page must be whole numbers")
    return page, per_page


def panels(db: Session) -> dict[str, Any]:
    """Every panel of the dashboard except the participants table: one query each."""
    manifest = _bundle().manifest
    tasks = progress(db)
    totals = Counter()
    for row in tasks:
        totals.update({k: row[k] for k in dashboard_panels.LIVE_STATES})
    return {
        "study_id": manifest.study_id,
        "totals": dict(totals),
        "tasks": tasks,
        "funnel": dashboard_panels.funnel(db, manifest.study_id),
        "over_time": dashboard_panels.over_time(
            db, manifest, current_app.extensions.setdefault("psychinterp_hourly", {})
        ),
        "feedback": dashboard_panels.feedback(db, manifest.study_id),
        "n_sessions": dashboard_panels.count_sessions(db, manifest.study_id),
        "cells": dashboard_panels.cell_progress(
            db, manifest.study_id, current_app.extensions["psychinterp_allocation"]
        ),
    }


@blueprint.get("/")
@login_required
def dashboard():
    page, per_page = _page_argument()
    with _db() as db:
        shown = panels(db)
        people = participants(db, page, per_page)
    n_pages = max(1, -(-shown["n_sessions"] // per_page))
    series = shown["over_time"]
    charts = {
        name: dashboard_panels.chart_points(row[name] for row in series)
        for name in ("responses", "completions", "catch_accuracy", "median_minutes")
    }
    with _db() as db:
        admins = list(db.scalars(select(Admin.username)))
    return render_template(
        "admin/dashboard.html",
        failed_logins=failed_logins(admins),
        proxy_notices=list(current_app.extensions["psychinterp_proxy_notices"].values()),
        manifest=_bundle().manifest,
        progress=shown["tasks"],
        cells=shown["cells"],
        totals=Counter(shown["totals"]),
        funnel=shown["funnel"],
        series=series,
        charts=charts,
        feedback=shown["feedback"],
        participants=people,
        page=page,
        n_pages=n_pages,
        platforms=list(PLATFORMS.values()),
        user=current_user,
    )


@blueprint.post("/participants/<int:session_id>/exclusion")
@login_required
def toggle_exclusion(session_id: int):
    with _db() as db, db.begin():
        session = db.get(ParticipantSession, session_id)
        if session is None or session.study_id != _bundle().manifest.study_id:
            abort(404)
        session.excluded_by_experimenter = request.form.get("exclude") == "1"
        reason = " ".join(request.form.get("reason", "").split())[:500]  # one line, as exported
        session.exclusion_reason = (reason or None) if session.excluded_by_experimenter else None
    return redirect(url_for("admin.dashboard") + "#participants")


RESET_MARK = "~reset"  # platform ids never contain "~", so a reset session's id cannot be anyone's


@blueprint.post("/participants/<int:session_id>/reset")
@login_required
def reset_participant(session_id: int):
    """A participant who lost their browser may start again: the unfinished session keeps its responses
    (nothing stored is lost) under the id ``<id>~reset<session>``, ends as expired and frees its task."""
    with _db() as db, db.begin():
        session = db.get(ParticipantSession, session_id)
        if session is None or session.study_id != _bundle().manifest.study_id:
            abort(404)
        if session.status not in ("active", "expired") or RESET_MARK in session.participant_id:
            flash(f"Session {session_id} is {session.status}; only unfinished sessions can be reset.")
            return redirect(url_for("admin.dashboard") + "#participants")
        original = session.participant_id
        session.participant_id = f"{original}{RESET_MARK}{session.id}"
        session.status, session.reserved_until = "expired", utcnow()
        if _cfg().study_group:
            db.execute(
                delete(WorkerGroupMember).where(
                    WorkerGroupMember.study_group == _cfg().study_group,
                    WorkerGroupMember.participant_id == original,
                    WorkerGroupMember.study_id == session.study_id,
                )
            )
    flash(f"Reset {original}: they can start again from their study link.")
    return redirect(url_for("admin.dashboard") + "#participants")


@blueprint.post("/reservations/release")
@login_required
def release_reservations():
    with _db() as db, db.begin():
        lock_study(db, _bundle().manifest.study_id)
        n = expire_reservations(db, _bundle().manifest.study_id, utcnow())
    flash(f"Released {n} expired reservation(s).")
    return redirect(url_for("admin.dashboard"))


# --- exports and payments ---------------------------------------------------------------


def _stream(chunks: Iterator[str], mimetype: str, filename: str) -> Response:
    return Response(
        stream_with_context(chunks),
        mimetype=mimetype,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@blueprint.get("/export/responses.csv")
@login_required
def export_csv():
    rows = response_rows(_bundle(), current_app.extensions["psychinterp_db"])
    return _stream(csv_chunks(rows), "text/csv", f"{_bundle().manifest.study_id}_responses.csv")


@blueprint.get("/export/responses.jsonl")
@login_required
def export_jsonl():
    rows = response_rows(_bundle(), current_app.extensions["psychinterp_db"])
    return _stream(jsonl_chunks(rows), "application/jsonl", f"{_bundle().manifest.study_id}_responses.jsonl")


def _unpaid_reasons(session: ParticipantSession) -> list[str]:
    """Why a finished session is not on its platform's payment lists (empty: it is paid)."""
    summary = session_summary(session, _trials_of(session), _paradigm())
    reasons = [describe(rule, _cfg().criteria) for rule in failed_rules(summary, _cfg().criteria)]
    if session.status == "failed" and session.failure_reason:
        reasons.insert(0, f"failed by the server: {session.failure_reason}")
    return reasons


def _payable(db: Session, platform: str) -> list[tuple[ParticipantSession, float]]:
    """Valid completions of one platform that pass the criteria, with their bonus (in the platform's currency)."""
    bonus = _cfg().bonus
    trials = _bundle().manifest.trials()
    out = []
    for session in _sessions(db):
        if session.platform != platform or session.status != "completed":
            continue
        if _unpaid_reasons(session):
            continue
        correct = sum(r.correct for r in session.responses if r.phase == "main" and trials[r.trial_id].kind == "main")
        out.append((session, round(bonus.flat + bonus.per_correct_main_trial * correct, 2)))
    return out


REVIEW_COLUMNS = ["platform", "participant_id", "assignment_id", "status", "completion_code", "reasons"]


@blueprint.get("/export/held-for-review.csv")
@login_required
def held_for_review():
    """Finished sessions left off the payment lists, each with why: to approve, reject or message by hand."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(REVIEW_COLUMNS)
    with _db() as db:
        for session in _sessions(db):
            if session.status not in ("completed", "failed") or not (reasons := _unpaid_reasons(session)):
                continue
            row = [session.platform, session.participant_id, session.assignment_id, session.status]
            writer.writerow([spreadsheet_safe(v) for v in [*row, session.completion_code, "; ".join(reasons)]])
    return Response(buffer.getvalue(), mimetype="text/csv")


@blueprint.get("/export/<name>")
@login_required
def payments(name: str):
    """Each platform's payment files (Prolific: approve and bulk-bonus lists; MTurk: batch CSVs)."""
    for platform in PLATFORMS.values():
        if name in platform.payment_lists:
            mimetype, render = platform.payment_lists[name]
            with _db() as db:
                return Response(render(_payable(db, platform.name)), mimetype=mimetype)
    abort(404)


# --- JSON API for scripts (same login) ------------------------------------------------------


@api.get("/progress")
@login_required
def api_progress():
    with _db() as db:
        return jsonify(study_id=_bundle().manifest.study_id, tasks=progress(db))


@api.get("/participants")
@login_required
def api_participants():
    page, per_page = _page_argument(MAX_PER_PAGE)
    with _db() as db:
        people = participants(db, page, per_page)
    return jsonify(study_id=_bundle().manifest.study_id, page=page, per_page=per_page, participants=people)


@api.get("/dashboard")
@login_required
def api_dashboard():
    """The dashboard's panels: totals, tasks, funnel, the hourly series and feedback."""
    with _db() as db:
        return jsonify(panels(db))
