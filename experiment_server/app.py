"""The Flask app factory."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from experiment_server.config import ServerConfig
from experiment_server.db import make_session_factory
from stimuli.bundle import load_bundle


def create_app(config: ServerConfig | dict[str, Any]) -> Flask:
    """Build the app for one bundle and one database."""
    if isinstance(config, dict):
        config = ServerConfig.model_validate(config)
    app = Flask(__name__)
    app.config["PSYCHINTERP"] = config
    app.extensions["psychinterp_bundle"] = load_bundle(config.bundle_dir)
    app.extensions["psychinterp_db"] = make_session_factory(config.database_url)

    from experiment_server.participant import blueprint as participant

    app.register_blueprint(participant)

    @app.errorhandler(HTTPException)
    def _json_errors(exc: HTTPException):
        # API clients get JSON errors; pages keep Flask's HTML ones.
        if exc.code and exc.code < 500 and request.path.startswith("/api/"):
            return jsonify(error=exc.name, detail=exc.description), exc.code
        return exc

    return app
