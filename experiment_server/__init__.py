"""The experiment server: serves a study bundle and stores every response."""

from experiment_server.app import create_app

__all__ = ["create_app"]
