"""The Flask app factory."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import secrets
import time
from pathlib import Path
from typing import Any

from flask import Flask, current_app, jsonify, redirect, request, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_limiter import Limiter, RateLimitExceeded
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from contracts.bundle import Bundle, check_same_study, load_bundle
from contracts.paradigms import paradigm_named
from experiment_server.assignment import Allocation
from experiment_server.config import ServerConfig, admin_cookie_name
from experiment_server.db import ParticipantSession, Study, make_session_factory
from experiment_server.images import TrialImages
from experiment_server.proxies import ProxyCheck

log = logging.getLogger(__name__)


def _shared_secret(configured: str | None, key_file: Path) -> str:
    """The configured key, or one generated once into ``key_file`` (mode 0600) and read by every worker.

    Never the database: a copy of the response database must not be an admin login.
    """
    if configured:
        return configured
    try:
        return key_file.read_text().strip()
    except FileNotFoundError:
        pass
    key_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker wrote it first
        return key_file.read_text().strip()
    with os.fdopen(descriptor, "w") as out:
        out.write(secrets.token_hex(32))
    return key_file.read_text().strip()


class _SessionInterface(SecureCookieSessionInterface):
    """Admin cookies are Secure whenever the request came over https (behind the proxy too)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure or super().get_cookie_secure(app)


def _register_study(session_factory, bundle: Bundle, config: ServerConfig) -> None:
    """The study's row, with the criteria this server applies (the last server started wins) and the build
    of the bundle it serves: a database whose sessions took another build is refused, unless the config
    says allow_rebuilt_bundle."""
    study_id, criteria = bundle.manifest.study_id, config.criteria.model_dump_json()
    try:
        with session_factory() as db, db.begin():
            if db.get(Study, study_id) is None:
                db.add(Study(study_id=study_id, exclusion_criteria=criteria))
    except IntegrityError:
        pass  # another worker registered it first
    with session_factory() as db, db.begin():
        study = db.get(Study, study_id)
        served = db.scalar(select(func.count()).where(ParticipantSession.study_id == study_id))
        if served and study.bundle_fingerprint not in (None, bundle.fingerprint) and not config.allow_rebuilt_bundle:
            check_same_study(
                bundle,
                study_id,
                study.bundle_fingerprint,
                f"the database {make_url(config.database_url).render_as_string(hide_password=True)} "
                f"({served} sessions)",
                "serve the bundle those sessions took, or give a new database (--db); --allow-rebuilt-bundle "
                "serves this build anyway",
            )
        study.exclusion_criteria = criteria
        study.bundle_fingerprint = bundle.fingerprint


def _api_error(exc: HTTPException):
    """An HTTP error as the API's JSON, keeping the exception's own headers (Allow on a 405)."""
    body = {"error": exc.name, "detail": exc.description}
    if rule := getattr(exc, "rule", None):  # a refusal by a named rule (participant.Refusal)
        body |= {"rule": rule, "retry_after_s": exc.retry_after_s}
    response = jsonify(body)
    response.status_code = exc.code
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _token_key() -> str:
    return "session:" + str((request.view_args or {}).get("token", ""))


def _username_address_key() -> str:
    # Per username *and* address: a username held from every address let anyone who knew it lock its
    # admin out; attempts spread over many addresses raise the dashboard's alarm instead.
    return f"admin:{request.form.get('username', '')[:200]}@{get_remote_address()}"


def _failed_login(response) -> bool:
    return response.status_code == 401  # a successful login is not counted against anyone


def _limit_requests(app: Flask, config: ServerConfig) -> None:
    """Flask-Limiter on every endpoint that writes: per client address where no session exists yet, per
    session where one does; a 429 carries Retry-After. One limiter per app, so that two apps in one process
    (tests, several studies) count separately."""
    limits = config.rate_limits
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=config.rate_limit_storage_uri,
        default_limits=[],
    )
    plan = {
        "participant.start_session": [limiter.limit(limits.session_start)],
        "participant.decline": [limiter.limit(limits.decline)],
        "participant.practice_response": [limiter.limit(limits.responses, key_func=_token_key)],
        "participant.post_response": [limiter.limit(limits.responses, key_func=_token_key)],
        "participant.post_responses": [limiter.limit(limits.responses, key_func=_token_key)],
        "participant.post_events": [limiter.limit(limits.events, key_func=_token_key)],
        "admin.login": [
            limiter.limit(limits.login, methods=["POST"], deduct_when=_failed_login),
            limiter.limit(limits.login, methods=["POST"], key_func=_username_address_key, deduct_when=_failed_login),
        ],
    }
    app.extensions["psychinterp_limiter"] = limiter  # the decorators hold it only weakly

    @app.errorhandler(RateLimitExceeded)
    def _retry_after(exc: RateLimitExceeded):
        # Flask-Limiter's own headers cost a storage round trip on every request (the load benchmark's
        # SQLite p99 went from 41 to about 100 ms); a 429 alone says when to come back.
        current = limiter.current_limit
        wait = max(1, math.ceil(current.reset_at - time.time())) if current is not None else 60
        response = _api_error(exc) if request.path.startswith("/api/") else exc.get_response()
        response.headers["Retry-After"] = str(wait)
        return response

    for endpoint, decorators in plan.items():
        for decorate in decorators:
            app.view_functions[endpoint] = decorate(app.view_functions[endpoint])


def _security_headers(response):
    """What a browser may do with each page: no sniffing, no referrer (the participant URL carries the PID),
    framing only by the MTurk hosts (participant pages) or nobody (admin), nothing cached from the admin."""
    cfg = current_app.config["PSYCHINTERP"]
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    admin = request.path.startswith(("/admin", "/api/admin"))
    # Admin forms over https need a same-origin Referer for Flask-WTF's CSRF check; nothing else needs one.
    response.headers.setdefault("Referrer-Policy", "same-origin" if admin else "no-referrer")
    ancestors = "'none'" if admin else " ".join(cfg.mturk.frame_hosts) or "'none'"
    response.headers.setdefault(
        "Content-Security-Policy",
        f"default-src 'self'; img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self' "
        f"{' '.join(cfg.mturk.submit_hosts)}; frame-ancestors {ancestors}",
    )
    if admin:
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers["Cache-Control"] = "no-store"
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response


def create_app(config: ServerConfig | dict[str, Any]) -> Flask:
    """Build the app for one bundle and one database."""
    if isinstance(config, dict):
        config = ServerConfig.model_validate(config)
    # Resolved once, here: Flask resolves a relative path against the package, not the working directory.
    config = config.model_copy(update={"bundle_dir": config.bundle_dir.resolve()})
    if config.button_lock_ms < 1000 * config.criteria.min_single_trial_s:
        log.warning(
            "button_lock_ms (%d) is shorter than the criteria's min_single_trial_s (%g s): a person who answers as "
            "soon as the buttons unlock is asked to wait before the answer is taken; lock the buttons at least as long",
            config.button_lock_ms,
            config.criteria.min_single_trial_s,
        )
    bundle = load_bundle(config.bundle_dir)
    session_factory = make_session_factory(config.database_url)
    if config.migrate:
        from experiment_server.migrate import upgrade

        upgrade(session_factory.kw["bind"])
    _register_study(session_factory, bundle, config)

    app = Flask(__name__)
    app.config.update(
        PSYCHINTERP=config,
        SECRET_KEY=_shared_secret(
            config.secret_key, config.secret_key_file or Path.home() / ".psychinterp" / "secret_key"
        ),
        # Per study: several studies served from one host (the demo's three, on three ports) share cookies,
        # and one login must not replace another.
        SESSION_COOKIE_NAME=admin_cookie_name(bundle.manifest.study_id),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        MAX_CONTENT_LENGTH=config.max_request_bytes,
        MAX_FORM_MEMORY_SIZE=config.max_request_bytes,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the admin's login session
    )
    app.session_interface = _SessionInterface()
    app.extensions["psychinterp_bundle"] = bundle
    app.extensions["psychinterp_tasks"] = {t.task_id: t for t in bundle.manifest.tasks}
    app.extensions["psychinterp_allocation"] = Allocation.of(config, app.extensions["psychinterp_tasks"])
    app.extensions["psychinterp_db"] = session_factory
    image_key = hmac.new(app.config["SECRET_KEY"].encode(), b"served images", hashlib.sha256).digest()
    app.extensions["psychinterp_images"] = TrialImages(
        bundle,
        image_key,
        config.image_cache_dir,
        catch_copies=config.catch_copies,
        flip_allowed=paradigm_named(bundle.manifest.paradigm).catch_flip,
    )

    from experiment_server.admin import api as admin_api
    from experiment_server.admin import blueprint as admin
    from experiment_server.admin import load_admin
    from experiment_server.api_docs import blueprint as api_docs
    from experiment_server.microscope import blueprint as units
    from experiment_server.microscope import images as admin_images
    from experiment_server.participant import blueprint as participant

    # One of each per app: a module-level LoginManager keeps one user loader, so a second app in the
    # process would look logins up in its own database (the demo's apps did).
    csrf = CSRFProtect(app)
    login_manager = LoginManager(app)

    @login_manager.user_loader
    def _load_admin(cookie_id: str):
        return load_admin(session_factory, cookie_id)

    # Participants authenticate by an unguessable token in the URL, never by cookie: CSRF cannot apply.
    csrf.exempt(participant)
    app.register_blueprint(participant)
    app.register_blueprint(admin)
    app.register_blueprint(admin_api)
    app.register_blueprint(units)
    app.register_blueprint(admin_images)
    _limit_requests(app, config)
    if config.trusted_proxies:
        # The client's address and scheme as the documented proxy saw them: rate limits key on people,
        # not on 127.0.0.1, and cookies are Secure behind TLS.
        n = config.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=0, x_port=0, x_prefix=0)
    app.extensions["psychinterp_proxy_notices"] = {}
    app.wsgi_app = ProxyCheck(app.wsgi_app, config.trusted_proxies, app.extensions["psychinterp_proxy_notices"])
    app.after_request(_security_headers)

    @login_manager.unauthorized_handler
    def _unauthorized():
        if request.path.startswith("/api/"):
            return jsonify(error="Unauthorized", detail="log in at /admin/login first"), 401
        return redirect(url_for("admin.login", next=request.path))

    app.register_blueprint(api_docs)

    @app.errorhandler(CSRFError)
    def _csrf_error(exc: CSRFError):
        return jsonify(error="Bad Request", detail=f"CSRF check failed: {exc.description}"), 400

    @app.errorhandler(HTTPException)
    def _json_errors(exc: HTTPException):
        # API clients get JSON errors; pages keep Flask's HTML ones.
        return _api_error(exc) if request.path.startswith("/api/") else exc

    return app
