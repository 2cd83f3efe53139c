"""What a recruiting platform is to the server: who the participant is, how a session ends, how people are paid."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from experiment_server.config import ServerConfig, allow_list
from experiment_server.db import ParticipantSession
from experiment_server.schemas import PlatformParams


class PlatformRefusal(Exception):
    """A landing URL the platform cannot take: ``status`` and ``detail`` go to the page as a JSON error."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


# (session, bonus) pairs of valid, paid completions -> the file's text
PaymentList = Callable[[list[tuple[ParticipantSession, float]]], str]


@dataclass(frozen=True)
class Platform:
    name: str
    # The participant id for a landing URL's parameters (raises PlatformRefusal when they do not fit).
    identify: Callable[[PlatformParams, ServerConfig], str]
    # The completion code for a finished session (passed: its checks passed).
    completion_code: Callable[[ParticipantSession, bool, ServerConfig], str] = lambda session, passed, cfg: (
        random_code()
    )
    # What the page does at the end: redirect_url, or submit_url with submit_fields.
    completion: Callable[[ParticipantSession, ServerConfig], dict[str, Any]] = lambda session, cfg: {}
    # Payment files on the dashboard: name -> (MIME type, renderer).
    payment_lists: dict[str, tuple[str, PaymentList]] = field(default_factory=dict)


def random_code() -> str:
    """A per-session code, for platforms that issue none of their own."""
    return secrets.token_hex(4).upper()


def require_worker_id(params: PlatformParams, url_parameter: str) -> str:
    if not params.participant_id:
        raise PlatformRefusal(400, f"participant_id: {params.platform} links must carry {url_parameter}")
    return params.participant_id


def checked_id(value: str | None, field_name: str, pattern: re.Pattern, what: str) -> str | None:
    """A platform id in its one canonical form (``pattern`` matches it), or a 400 that names the field.

    Each platform's ids have one format, so ``SKIP01.`` or ``skip01_2`` is not a new participant: it is refused.
    """
    if value is None:
        return None
    if not pattern.fullmatch(value):
        raise PlatformRefusal(400, f"{field_name}: {value[:40]!r} is not {what}")
    return value


def allowed(participant_id: str, cfg: ServerConfig) -> str:
    """The id, when the server's allow-list (if it has one) holds it."""
    if cfg.allowed_participants_file is not None and participant_id not in allow_list(cfg.allowed_participants_file):
        raise PlatformRefusal(403, "this worker id is not invited to this study")
    return participant_id
