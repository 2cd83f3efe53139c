"""Amazon Mechanical Turk: workerId, assignmentId, hitId and a whitelisted turkSubmitTo; the page posts the
assignment back to MTurk; batch CSVs for approval and bonuses."""

from __future__ import annotations

import csv
import io
import re
from typing import Any
from urllib.parse import urlsplit

from experiment_server.export import spreadsheet_safe
from experiment_server.platforms.base import Platform, PlatformRefusal, allowed, checked_id, require_worker_id

PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE"  # the assignment id MTurk sends while a worker only previews the HIT
# MTurk's ids are upper-case letters and digits: a worker id starts with A (12 to 14 long in practice);
# assignment and HIT ids are 30 long. Lower case is the same worker, so ids are upper-cased first.
WORKER_ID = re.compile(r"A[0-9A-Z]{9,21}")
TASK_ID = re.compile(r"[0-9A-Z]{20,40}")


def submit_host(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _identify(params, cfg) -> str:
    if params.assignment_id == PREVIEW:
        raise PlatformRefusal(400, "MTurk preview: nothing is stored until the HIT is accepted")
    worker = checked_id(
        require_worker_id(params, "workerId").upper(), "participant_id", WORKER_ID, "an MTurk worker id"
    )
    if not (params.assignment_id and params.hit_id and params.turk_submit_to):
        raise PlatformRefusal(400, "mturk: assignment_id, hit_id and turk_submit_to are required")
    checked_id(params.assignment_id, "assignment_id", TASK_ID, "an MTurk assignment id")
    checked_id(params.hit_id, "hit_id", TASK_ID, "an MTurk HIT id")
    if submit_host(params.turk_submit_to) not in cfg.mturk.submit_hosts:
        raise PlatformRefusal(400, f"turk_submit_to: {params.turk_submit_to!r} is not an MTurk submission host")
    return allowed(worker, cfg)


def _completion(session, cfg) -> dict[str, Any]:
    return {
        "submit_url": submit_host(session.turk_submit_to) + "/mturk/externalSubmit",
        "submit_fields": {"assignmentId": session.assignment_id, "completion_code": session.completion_code or ""},
    }


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows([spreadsheet_safe(v) for v in row] for row in rows)
    return buffer.getvalue()


def _bonus_csv(paid) -> str:
    rows = [[s.participant_id, s.assignment_id, f"{b:.2f}", "Bonus for correct answers"] for s, b in paid if b > 0]
    return _csv(["WorkerId", "AssignmentId", "BonusAmount", "Reason"], rows)


MTURK = Platform(
    name="mturk",
    identify=_identify,
    completion=_completion,
    payment_lists={
        "mturk-approve.csv": (
            "text/csv",
            lambda paid: _csv(
                ["AssignmentId", "WorkerId", "HITId", "Approve", "Reject"],
                [[s.assignment_id, s.participant_id, s.hit_id, "x", ""] for s, _ in paid],
            ),
        ),
        "mturk-bonus.csv": ("text/csv", lambda paid: _bonus_csv(paid)),
    },
)
