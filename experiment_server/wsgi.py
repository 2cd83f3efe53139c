"""Entry point for WSGI servers with several workers, e.g.

    gunicorn -w 4 'experiment_server.wsgi:app_from_env()'

Settings come from the environment: ``PSYCHINTERP_SERVER_CONFIG`` (a server
config YAML), and/or ``PSYCHINTERP_BUNDLE`` and ``PSYCHINTERP_DATABASE_URL``.
"""

from __future__ import annotations

import os
import runpy
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from flask import Flask

from contracts.errors import PsychinterpError
from experiment_server.app import create_app
from experiment_server.config import load_server_config

IN_MEMORY_STORAGE = "memory://"


def gunicorn_workers(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """How many worker processes gunicorn was told to run, read as gunicorn reads it (its default from
    WEB_CONCURRENCY, a Python config file, GUNICORN_CMD_ARGS, the command line, each over the one before);
    1 outside gunicorn."""
    if argv is None and "gunicorn" not in sys.modules:
        return 1
    from gunicorn.config import Config

    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    parser = Config().parser()
    from_env, _ = parser.parse_known_args(shlex.split(environ.get("GUNICORN_CMD_ARGS", "")))
    from_argv, _ = parser.parse_known_args(list(argv))
    workers = int(environ.get("WEB_CONCURRENCY", 1))
    config_file = (from_argv.config or from_env.config or "gunicorn.conf.py").removeprefix("file:")
    if config_file.endswith(".py") and Path(config_file).is_file():
        workers = int(runpy.run_path(config_file).get("workers", workers))
    for args in (from_env, from_argv):
        if args.workers is not None:
            workers = int(args.workers)
    return workers


def refuse_unshared_limits(storage_uri: str, workers: int) -> None:
    """Rate limits kept in each worker's memory count each worker on its own: N workers make every limit
    N times as loose (and the failed-login alarm sees 1/N of the failures). Refused, naming the fix."""
    if workers > 1 and storage_uri.startswith(IN_MEMORY_STORAGE):
        raise PsychinterpError(
            f"gunicorn runs {workers} workers but rate_limit_storage_uri is {storage_uri!r}: each worker would count "
            f"requests on its own, so every rate limit would be {workers} times as loose. Set rate_limit_storage_uri "
            "in the server config to a store the workers share (redis://127.0.0.1:6379/0, docs/deploy.md), or run "
            "one worker"
        )


def app_from_env() -> Flask:
    config_file = os.environ.get("PSYCHINTERP_SERVER_CONFIG")
    config = load_server_config(
        Path(config_file) if config_file else None,
        bundle_dir=os.environ.get("PSYCHINTERP_BUNDLE"),
        database_url=os.environ.get("PSYCHINTERP_DATABASE_URL"),
    )
    refuse_unshared_limits(config.rate_limit_storage_uri, gunicorn_workers())
    return create_app(config)
