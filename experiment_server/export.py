"""The response table: one row per stored response (documented in docs/responses.md)."""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from experiment_server.db import ParticipantSession, Response
from stimuli.bundle import Bundle

RESPONSE_COLUMNS = (
    "study_id",
    "participant_id",
    "platform",
    "task_id",
    "trial_index",
    "trial_id",
    "model_id",
    "unit_id",
    "layer",
    "channel",
    "layer_index",
    "n_layers",
    "condition",
    "trial_kind",
    "batch",
    "max_side",
    "chosen_query",
    "max_query",
    "correct",
    "confidence",
    "rt_ms",
    "responded_at",
    "session_completed",
)


def response_rows(bundle: Bundle, session_factory: sessionmaker) -> Iterator[dict[str, Any]]:
    """Rows in (session, trial index) order, joined with the bundle's unit and answer facts."""
    trials = bundle.manifest.trials()
    units = {u.unit_id: u for u in bundle.manifest.units}
    answers = bundle.answer_key.answers
    query = (
        select(Response, ParticipantSession)
        .join(ParticipantSession)
        .where(ParticipantSession.study_id == bundle.manifest.study_id)
        .order_by(ParticipantSession.id, Response.trial_index)
    )
    with session_factory() as db:
        for response, session in db.execute(query).yield_per(1000):
            trial = trials[response.trial_id]
            unit = units[trial.unit_id]
            yield {
                "study_id": session.study_id,
                "participant_id": session.participant_id,
                "platform": session.platform,
                "task_id": session.task_id,
                "trial_index": response.trial_index,
                "trial_id": response.trial_id,
                "model_id": unit.model_id,
                "unit_id": unit.unit_id,
                "layer": unit.layer,
                "channel": unit.channel,
                "layer_index": unit.layer_index,
                "n_layers": unit.n_layers,
                "condition": trial.condition,
                "trial_kind": trial.kind,
                "batch": trial.batch,
                "max_side": trial.max_side,
                "chosen_query": response.chosen_query,
                "max_query": answers[response.trial_id].max_query,
                "correct": int(response.correct),
                "confidence": response.confidence,
                "rt_ms": round(response.rt_ms, 3),
                "responded_at": response.created_at.isoformat(),
                "session_completed": int(session.completed_at is not None),
            }


def export_csv(bundle: Bundle, session_factory: sessionmaker, out: Path) -> int:
    """Write the table atomically; returns the number of rows."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    n = 0
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=RESPONSE_COLUMNS)
            writer.writeheader()
            for row in response_rows(bundle, session_factory):
                writer.writerow(row)
                n += 1
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n
