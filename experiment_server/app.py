"""The Flask app factory."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from flask import Flask, jsonify, redirect, request, url_for
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException

from contracts.bundle import load_bundle
from experiment_server.config import ServerConfig
from experiment_server.db import Admin, AppSetting, Study, make_session_factory
from experiment_server.extensions import csrf, login_manager
from experiment_server.images import TrialImages


def _shared_secret(session_factory, configured: str | None) -> str:
    """The configured key, or one generated once and kept in the database, so every worker signs alike."""
    if configured:
        return configured
    try:
        with session_factory() as db, db.begin():
            if db.get(AppSetting, "secret_key") is None:
                db.add(AppSetting(key="secret_key", value=secrets.token_hex(32)))
    except IntegrityError:
        pass  # another worker stored one first
    with session_factory() as db:
        return db.get(AppSetting, "secret_key").value


def _register_study(session_factory, study_id: str, criteria: str) -> None:
    """The study's row, with the criteria this server applies (the last server started wins)."""
    try:
        with session_factory() as db, db.begin():
            if db.get(Study, study_id) is None:
                db.add(Study(study_id=study_id, exclusion_criteria=criteria))
    except IntegrityError:
        pass  # another worker registered it first
    with session_factory() as db, db.begin():
        study = db.get(Study, study_id)
        if study.exclusion_criteria != criteria:
            study.exclusion_criteria = criteria


def create_app(config: ServerConfig | dict[str, Any]) -> Flask:
    """Build the app for one bundle and one database."""
    if isinstance(config, dict):
        config = ServerConfig.model_validate(config)
    bundle = load_bundle(config.bundle_dir)
    session_factory = make_session_factory(config.database_url)
    if config.migrate:
        from experiment_server.migrate import upgrade

        upgrade(session_factory.kw["bind"])
    _register_study(session_factory, bundle.manifest.study_id, config.criteria.model_dump_json())

    app = Flask(__name__)
    app.config.update(
        PSYCHINTERP=config,
        SECRET_KEY=_shared_secret(session_factory, config.secret_key),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the admin's login session
    )
    app.extensions["psychinterp_bundle"] = bundle
    app.extensions["psychinterp_tasks"] = {t.task_id: t for t in bundle.manifest.tasks}
    app.extensions["psychinterp_db"] = session_factory
    image_key = hmac.new(app.config["SECRET_KEY"].encode(), b"served images", hashlib.sha256).digest()
    app.extensions["psychinterp_images"] = TrialImages(bundle, image_key, config.image_cache_dir)

    from experiment_server.admin import AdminUser
    from experiment_server.admin import api as admin_api
    from experiment_server.admin import blueprint as admin
    from experiment_server.api_docs import blueprint as api_docs
    from experiment_server.participant import blueprint as participant

    csrf.init_app(app)
    login_manager.init_app(app)

    @login_manager.user_loader
    def _load_admin(admin_id: str):
        with session_factory() as db:
            found = db.scalar(select(Admin).where(Admin.id == int(admin_id))) if admin_id.isdigit() else None
            return AdminUser(found.id, found.username) if found else None

    # Participants authenticate by an unguessable token in the URL, never by cookie: CSRF cannot apply.
    csrf.exempt(participant)
    app.register_blueprint(participant)
    app.register_blueprint(admin)
    app.register_blueprint(admin_api)
    # One limiter per app, so that two apps in one process (tests, several studies) count separately.
    limiter = Limiter(get_remote_address, app=app, storage_uri=config.rate_limit_storage_uri, default_limits=[])
    app.view_functions["admin.login"] = limiter.limit(config.login_rate_limit, methods=["POST"])(
        app.view_functions["admin.login"]
    )

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
        if request.path.startswith("/api/"):
            return jsonify(error=exc.name, detail=exc.description), exc.code
        return exc

    return app
