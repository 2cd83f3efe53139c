"""Entry point for WSGI servers with several workers, e.g.

    gunicorn -w 4 'experiment_server.wsgi:app_from_env()'

Settings come from the environment: ``PSYCHINTERP_SERVER_CONFIG`` (a server
config YAML), and/or ``PSYCHINTERP_BUNDLE`` and ``PSYCHINTERP_DATABASE_URL``.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Flask

from experiment_server.app import create_app
from experiment_server.config import load_server_config


def app_from_env() -> Flask:
    config_file = os.environ.get("PSYCHINTERP_SERVER_CONFIG")
    return create_app(
        load_server_config(
            Path(config_file) if config_file else None,
            bundle_dir=os.environ.get("PSYCHINTERP_BUNDLE"),
            database_url=os.environ.get("PSYCHINTERP_DATABASE_URL"),
        )
    )
