"""A direct link: no platform; the server makes up the participant id and a per-session completion code."""

from __future__ import annotations

import secrets

from experiment_server.platforms.base import Platform

DIRECT = Platform(name="direct", identify=lambda params, cfg: f"direct-{secrets.token_hex(8)}")
