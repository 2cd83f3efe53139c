"""Recruiting platforms, one module each, in one table (a new platform is a module and an entry here)."""

from __future__ import annotations

from experiment_server.platforms.base import Platform, PlatformRefusal
from experiment_server.platforms.direct import DIRECT
from experiment_server.platforms.mturk import MTURK
from experiment_server.platforms.prolific import PROLIFIC

PLATFORMS: dict[str, Platform] = {p.name: p for p in (DIRECT, PROLIFIC, MTURK)}

__all__ = ["PLATFORMS", "Platform", "PlatformRefusal"]
