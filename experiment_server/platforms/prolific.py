"""Prolific: PROLIFIC_PID identifies the participant; the study's completion (or failed) code and redirect;
an approve list and a bulk-bonus list to paste into Prolific."""

from __future__ import annotations

import re

from experiment_server.platforms.base import Platform, allowed, checked_id, random_code, require_worker_id

# Prolific's ids (participant, study, session) are 24 hexadecimal digits; case carries no meaning.
PROLIFIC_ID = re.compile(r"[0-9a-f]{24}")


def _identify(params, cfg) -> str:
    pid = checked_id(require_worker_id(params, "PROLIFIC_PID").lower(), "participant_id", PROLIFIC_ID, "a Prolific id")
    for name in ("platform_study_id", "platform_session_id"):
        value = getattr(params, name)
        checked_id(value.lower() if value else None, name, PROLIFIC_ID, "a Prolific id")
    return allowed(pid, cfg)


def _code(session, passed: bool, cfg) -> str:
    configured = cfg.prolific.completion_code if passed else cfg.prolific.failed_code
    return configured or random_code()


def _completion(session, cfg) -> dict:
    if not session.completion_code:
        return {}
    return {"redirect_url": cfg.prolific.completion_url.format(code=session.completion_code)}


PROLIFIC = Platform(
    name="prolific",
    identify=_identify,
    completion_code=_code,
    completion=_completion,
    payment_lists={
        "prolific-approve.txt": ("text/plain", lambda paid: "".join(f"{s.participant_id}\n" for s, _ in paid)),
        # Prolific's bulk bonus box takes "participant_id,amount" lines without a header.
        "prolific-bonus.csv": (
            "text/csv",
            lambda paid: "".join(f"{s.participant_id},{bonus:.2f}\n" for s, bonus in paid if bonus > 0),
        ),
    },
)
