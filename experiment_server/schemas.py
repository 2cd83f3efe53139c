"""Request and response bodies of the HTTP API; every request body is validated against these."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

WorkerId = Field(None, min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")


def control_character(text: str, allowed: str = "") -> str | None:
    """What makes ``text`` unstorable, or None: NUL, a control character or a lone surrogate (PostgreSQL
    refuses them; nobody types them), other than those ``allowed``."""
    for position, character in enumerate(text):
        if character not in allowed and unicodedata.category(character) in ("Cc", "Cs"):
            return f"control character U+{ord(character):04X} at position {position}"
    return None


def _printable(allowed: str):
    def check(text: str) -> str:
        if problem := control_character(text, allowed):
            raise ValueError(problem)
        return text

    return AfterValidator(check)


PROSE_ALLOWED = "\n\r\t"  # what a text box may hold besides printable text
Text = Annotated[str, _printable("")]  # one line: ids, names, details
Prose = Annotated[str, _printable(PROSE_ALLOWED)]  # what a person types in a text box


class _Body(BaseModel):
    # strict: no bool as an int, no "500" as a number; finite floats only.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class WindowInfo(_Body):
    width: int = Field(ge=0, le=100_000)
    height: int = Field(ge=0, le=100_000)
    device_pixel_ratio: float = Field(1.0, gt=0, le=20)


class PlatformParams(_Body):
    """What the landing page read from its URL."""

    platform: Literal["prolific", "mturk", "direct"] = "direct"
    participant_id: Text | None = WorkerId  # PROLIFIC_PID or workerId; generated for direct links
    platform_study_id: Text | None = Field(None, max_length=200)  # Prolific STUDY_ID
    platform_session_id: Text | None = Field(None, max_length=200)  # Prolific SESSION_ID
    assignment_id: Text | None = Field(None, max_length=200)
    hit_id: Text | None = Field(None, max_length=200)
    turk_submit_to: Text | None = Field(None, max_length=300)


class StartSession(PlatformParams):
    consent_version: Text = Field(min_length=1, max_length=64, description="hash of the consent text agreed to")
    window: WindowInfo | None = None
    user_agent: Text | None = Field(None, max_length=400)


class Decline(PlatformParams):
    consent_version: Text = Field(min_length=1, max_length=64, description="must be the page's current version")


class PhaseBody(_Body):
    phase: Literal["instructions", "practice", "main"]


class ResponseBody(_Body):
    trial_index: int = Field(ge=0)
    chosen_query: int = Field(ge=0, le=25, description="index into the trial's queries (the paradigm says how many)")
    confidence: int = Field(ge=1, le=10, description="one of the paradigm's confidence levels (2AFC: 1, 2, 3)")
    rt_ms: float = Field(ge=0, le=24 * 3600 * 1000)
    focus_lost: int = Field(0, ge=0, le=10_000, description="blur events while the trial was shown")
    shown: Text | None = Field(
        None,
        max_length=100,
        description="a main trial's `shown` from its GET, as it came: the server's signed record of when it "
        "served the trial (required for main trials; practice takes none)",
    )


class ResponseBatch(_Body):
    responses: list[ResponseBody] = Field(min_length=1, max_length=500)


class EventBody(_Body):
    kind: Literal[
        "focus", "blur", "fullscreen_enter", "fullscreen_exit", "resize", "visibility_hidden", "visibility_visible"
    ]
    client_ms: float = Field(ge=0)
    detail: Text | None = Field(None, max_length=300)


class EventBatch(_Body):
    events: list[EventBody] = Field(min_length=1, max_length=200)


class FeedbackBody(_Body):
    text: Prose = Field(max_length=5000)


# --- responses (documented in the OpenAPI document; the server builds them as dicts) ---


class TrialOut(BaseModel):
    trial_index: int
    n_trials: int
    condition: str
    max_side: Literal["left", "right"] | None
    references: dict[Literal["min", "max"], list[str]]
    queries: list[str] = Field(description="image URLs in display order; nothing says which is correct")
    shown: str | None = Field(
        None, description="main trials: when the server served the trial, signed; send it back with the answer"
    )
    layout: Literal["pair", "grid"] = Field(
        description="pair: a button per query and confidence; grid: choose a query, then a confidence"
    )
    question: str
    wrong_feedback: str = Field(description="what practice feedback says after a wrong answer")
    answers: list[dict] = Field(
        description="the answer controls in order: query, confidence, key and label (grid: choices, then ratings)"
    )


class ExampleOut(TrialOut):
    answer: int | None = Field(
        description="the correct query of a practice example (a worked example); null for a main trial"
    )


class SessionOut(BaseModel):
    token: str
    status: str
    condition: str | None
    n_trials: int
    next_trial: int | None
    practice_trials: int = Field(description="trials per practice block (0: no practice)")
    practice_block: int | None = Field(description="the block to do next; null once practice is passed")
    practice_next_trial: int | None
    max_practice_blocks: int
    layout: Literal["pair", "grid"]
    question: str
    wrong_feedback: str
    answers: list[dict] = Field(description="the study's answer controls (its paradigm's), as each trial has them")
    natural_images: str = Field(description="what the study's natural images are, in the participant's words")
    example: ExampleOut | None = Field(description="an example trial for the instructions")


class StoredOut(BaseModel):
    stored: bool
    duplicate: bool
    correct: bool | None = Field(None, description="only for practice trials, or when feedback is on")
    block_complete: bool | None = None
    practice_passed: bool | None = None
    practice_failed: bool | None = None


class CompletionOut(BaseModel):
    status: Literal["completed", "failed"]
    failure_reason: Literal["practice", "attention", "timing"] | None = Field(
        description="why a failed session failed (null when it passed)"
    )
    message: str = Field(description="what happened, in plain words, for the end page")
    code_note: str = Field(description="what to do with the code (or that there is none to submit)")
    completion_code: str | None
    redirect_url: str | None = Field(description="Prolific: where to send the participant")
    submit_url: str | None = Field(description="MTurk: where to POST the form")
    submit_fields: dict[str, str] | None


class ErrorOut(BaseModel):
    error: str
    detail: str
    rule: str | None = Field(None, description="the rule that refused the request (fetch_first, in_order, ...)")
    retry_after_s: float | None = Field(None, description="seconds until the same request will be taken")
