"""Server configuration: a YAML file (``psychinterp serve --config``) validated into ``ServerConfig``."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, model_validator

from contracts.config import Strict
from contracts.criteria import ExclusionCriteria, load_criteria
from contracts.errors import load_yaml
from experiment_server.allocation import ALLOCATIONS
from experiment_server.db import DEFAULT_DATABASE_URL

DEFAULT_CONSENT = """\
You are invited to take part in a research study on how people understand the inner workings of
artificial neural networks. You will look at images and answer questions about them; this takes
about 20 minutes. Taking part is voluntary, and you may stop at any time by closing this window.
We store your answers, response times, and basic facts about your browser window (its size, and
when it lost focus). We store no name or contact details; your platform id is used only to pay
you and to prevent repeated participation. The anonymised responses may be published for research.
"""


class ProlificConfig(Strict):
    completion_code: str | None = Field(None, description="the study's completion code (Prolific study page)")
    failed_code: str | None = Field(None, description="the code for sessions that failed the attention checks")
    full_code: str | None = Field(
        None, description="the code shown to a participant who arrives after the study is full (else: please return it)"
    )
    completion_url: str = Field(
        "https://app.prolific.com/submissions/complete?cc={code}", description="where participants are sent back"
    )


class MTurkConfig(Strict):
    submit_hosts: list[str] = Field(
        ["https://www.mturk.com", "https://workersandbox.mturk.com"],
        description="turkSubmitTo must be one of these, so a crafted link cannot redirect answers elsewhere",
    )
    frame_hosts: list[str] = Field(
        ["https://worker.mturk.com", "https://workersandbox.mturk.com", "https://www.mturk.com"],
        description="the pages that may show the study in a frame (MTurk's worker sites); no other site may",
    )


class BonusConfig(Strict):
    per_correct_main_trial: float = Field(
        0.0, ge=0, description="bonus per correct main trial, in the platform's currency"
    )
    flat: float = Field(0.0, ge=0, description="bonus per valid completed session")


class RateLimits(Strict):
    """Flask-Limiter limits (``N per second|minute|hour|day``, several joined by ``;``); a 429 says when to retry."""

    session_start: str = Field(
        "30 per minute; 300 per day", description="session starts per client address (a lab shares one)"
    )
    decline: str = Field("30 per minute; 300 per day", description="declines per client address")
    responses: str = Field(
        "120 per minute", description="practice and main responses per session (a person answers every 2 s at most)"
    )
    events: str = Field("60 per minute", description="event batches per session (the page sends one every 5 s)")
    login: str = Field(
        "5 per minute",
        description="failed admin logins per client address, and per username at an address (never per username "
        "alone: that would let anyone lock an admin out; the dashboard shows failures from everywhere instead)",
    )


class CatchCopies(Strict):
    """How a catch trial's queries are served: each a fresh transformed copy, so that no query equals a
    reference in bytes or in pixels and only looking (or a similarity model) matches them."""

    crop: float = Field(
        0.12, ge=0, lt=0.5, description="cut up to this share of the side (at least half of it), then resize back"
    )
    flip: bool = Field(True, description="mirror left-right at random, where the paradigm allows (catch_flip)")
    jitter: float = Field(0.06, ge=0, lt=0.5, description="brightness, contrast and saturation each move by up to this")


class StoppingRule(Strict):
    half_width_pp: float | None = Field(
        None,
        gt=0,
        lt=50,
        description="a model x condition cell takes no new participants once its accuracy's 95% half-width "
        "(units and participants crossed) is at most this many percentage points",
    )
    min_participants_per_cell: int = Field(5, ge=2, description="no cell stops on precision before this many")
    max_participants_per_cell: int | None = Field(
        None, ge=1, description="a cell takes no new participants beyond this many, whatever its precision"
    )

    @model_validator(mode="after")
    def _bounds(self) -> StoppingRule:
        if self.half_width_pp is None and self.max_participants_per_cell is None:
            raise ValueError("stopping: give half_width_pp, max_participants_per_cell or both")
        top = self.max_participants_per_cell
        if self.half_width_pp is not None and top is not None and top < self.min_participants_per_cell:
            raise ValueError(
                f"stopping: max_participants_per_cell ({top}) is below min_participants_per_cell "
                f"({self.min_participants_per_cell})"
            )
        return self


class ServerConfig(Strict):
    bundle_dir: Path = Field(description="the study bundle to serve (relative to this file; `serve BUNDLE` gives it)")
    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLAlchemy URL")
    secret_key: str | None = Field(
        None,
        description="signs admin cookies (give the same one to servers on several hosts); default: secret_key_file",
    )
    secret_key_file: Path | None = Field(
        None,
        description="where a generated signing key is kept (mode 0600), out of the database: a copy of the "
        "database must not be an admin login. Default: ~/.psychinterp/secret_key",
    )
    migrate: bool = Field(True, description="bring the database schema up to date at start-up")
    consent_text: str | None = Field(None, description="overrides the bundle's consent text")
    feedback: bool = Field(False, description="tell participants after each main trial whether they were right")
    button_lock_ms: int = Field(1500, ge=0, description="answer buttons stay locked this long after trial onset")
    min_window_width: int = Field(
        940, gt=0, description="smaller windows are asked to grow (the 2023 study's 940 x 600)"
    )
    min_window_height: int = Field(600, gt=0)
    max_image_px: int = Field(
        256,
        gt=0,
        description="the largest a trial's image is drawn (CSS pixels): images grow with the window up to this "
        "(the bundle's files are 224 px)",
    )
    reservation_minutes: float = Field(60.0, gt=0, description="a started session holds its task this long")
    criteria_file: Path | None = Field(
        None,
        description="exclusion criteria (YAML, as for `psychinterp analyze --criteria`): the server fails sessions "
        "below their catch accuracy or past their practice blocks, the dashboard previews them, payment lists "
        "leave out sessions that fail them, and `analyze --db` uses them by default",
    )
    criteria: ExclusionCriteria = Field(
        ExclusionCriteria(), description="the criteria themselves, when no criteria_file is given"
    )
    allowed_participants_file: Path | None = Field(
        None,
        description="a text file of platform ids, one per line: only these may start a session (ids are "
        "compared in their platform's case: Prolific lower, MTurk upper)",
    )
    study_group: str | None = Field(None, description="workers may take part in only one study of this group")
    prolific: ProlificConfig = Field(ProlificConfig(), description="Prolific's completion codes")
    mturk: MTurkConfig = Field(MTurkConfig(), description="where MTurk answers may be submitted")
    bonus: BonusConfig = Field(BonusConfig(), description="bonuses on the payment lists")
    image_cache_dir: Path | None = Field(
        None,
        description="where each trial's served (re-encoded, padded) images are kept; default: "
        "~/.psychinterp/served-images. Workers of one study should share it",
    )
    catch_copies: CatchCopies = Field(
        CatchCopies(), description="how a catch trial's queries are transformed copies of what they copy"
    )
    rate_limits: RateLimits = Field(RateLimits(), description="limits on every kind of request that writes")
    trusted_proxies: int = Field(
        0,
        ge=0,
        description="reverse proxies in front of the server (docs/deploy.md's nginx: 1); their X-Forwarded-For "
        "and X-Forwarded-Proto give the client's address and scheme (werkzeug's ProxyFix)",
    )
    max_request_bytes: int = Field(256 * 1024, gt=0, description="larger request bodies are refused (413)")
    max_events_per_session: int = Field(
        2000, ge=0, description="events stored per session; more are refused (a session sends a few hundred)"
    )
    allow_direct_links: bool | None = Field(
        None,
        description="whether direct links (no platform) may start sessions. Default: yes, unless feedback is on "
        "(a direct-link script could learn the answers and pass them on). Set false in production",
    )
    rate_limit_storage_uri: str = Field("memory://", description="Flask-Limiter storage; use redis:// with workers")
    allocation: Literal[tuple(ALLOCATIONS)] = Field(
        "balanced",
        description="which cell the next participant serves: balanced (the least filled) or precision (the one "
        "whose interval is furthest above stopping.half_width_pp)",
    )
    stopping: StoppingRule | None = Field(
        None, description="when a cell, and then the study, stops taking participants (none: never by itself)"
    )
    allow_rebuilt_bundle: bool = Field(
        False,
        description="serve a bundle whose build differs from the one the database's sessions of this study took "
        "(their trials and answers may differ; the export marks every session with the build now served)",
    )

    @model_validator(mode="before")
    @classmethod
    def _read_criteria(cls, data, info: ValidationInfo):
        """A criteria file (relative to the server config) is read into ``criteria``."""
        if not isinstance(data, dict) or data.get("criteria_file") is None:
            return data
        if data.get("criteria") is not None:
            raise ValueError("give criteria_file or criteria, not both")
        path, base = Path(data["criteria_file"]), (info.context or {}).get("base")
        path = base / path if base is not None and not path.is_absolute() else path
        return {**data, "criteria_file": path, "criteria": load_criteria(path)}

    @model_validator(mode="before")
    @classmethod
    def _allow_list_path(cls, data, info: ValidationInfo):
        """The allow-list, like the criteria file, is relative to the server config; it must be readable."""
        if not isinstance(data, dict) or data.get("allowed_participants_file") is None:
            return data
        path, base = Path(data["allowed_participants_file"]), (info.context or {}).get("base")
        path = base / path if base is not None and not path.is_absolute() else path
        allow_list(path)
        return {**data, "allowed_participants_file": path}

    @model_validator(mode="after")
    def _allocation_target(self) -> ServerConfig:
        if ALLOCATIONS[self.allocation].needs_target and (self.stopping is None or self.stopping.half_width_pp is None):
            raise ValueError(
                f"allocation {self.allocation!r} aims at a half-width: set stopping.half_width_pp "
                "(or use allocation: balanced)"
            )
        return self

    @model_validator(mode="after")
    def _codes(self) -> ServerConfig:
        codes = (self.prolific.completion_code, self.prolific.failed_code)
        if all(codes) and codes[0] == codes[1]:
            raise ValueError("prolific: completion_code and failed_code must differ")
        return self


@functools.cache
def allow_list(path: Path) -> frozenset[str]:
    """The ids of an allow-list file (one per line, # comments), in both platforms' canonical cases."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"allowed_participants_file: cannot read {path}: {exc.strerror or exc}") from None
    ids = {line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")}
    return frozenset({i.lower() for i in ids} | {i.upper() for i in ids})


def consent_version(text: str) -> str:
    """A short hash of the consent text, stored with each participant's consent."""
    return hashlib.sha256(text.strip().encode()).hexdigest()[:16]


def load_server_config(path: Path | None, **overrides) -> ServerConfig:
    """A config file (optional) plus command-line values; relative paths resolve against the file."""
    config = load_yaml(path, ServerConfig, "server config", overrides)
    if path is not None and overrides.get("bundle_dir") is None and not config.bundle_dir.is_absolute():
        config = config.model_copy(update={"bundle_dir": Path(path).parent / config.bundle_dir})
    return config


def admin_cookie_name(study_id: str) -> str:
    """The admin login's cookie: one per study, so that studies served from one host keep their own logins."""
    return f"psychinterp_admin_{study_id}"
