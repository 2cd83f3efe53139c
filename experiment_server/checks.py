"""A session's exclusion checks, computed once for the dashboard, the payment lists and the completion step.

The values are those of the exported columns (``export.session_facts``), so a session passes or
fails here exactly as ``psychinterp analyze`` will judge it from the export.
"""

from __future__ import annotations

from contracts.bundle import Trial
from contracts.criteria import ParticipantSummary
from contracts.paradigms import Paradigm
from experiment_server.db import ParticipantSession
from experiment_server.export import session_facts, session_trial_times


def session_summary(session: ParticipantSession, main_trials: list[Trial], paradigm: Paradigm) -> ParticipantSummary:
    """What the criteria check, from the session's stored main-phase responses (catch trials included)."""
    facts = session_facts(session)
    shown = session_trial_times(session)
    main = [r for r in session.responses if r.phase == "main"]
    catch = [r for r in main if r.trial_index < len(main_trials) and main_trials[r.trial_index].kind == "catch"]
    return ParticipantSummary(
        participant_id=session.participant_id,
        catch_accuracy=sum(r.correct for r in catch) / len(catch) if catch else None,
        query_choices=tuple(sum(r.chosen_query == q for r in main) for q in range(paradigm.n_queries)),
        instruction_s=facts["instruction_s"],
        session_s=facts["session_s"],
        practice_blocks=session.practice_blocks or None,
        session_status=session.status,
        excluded_by_experimenter=bool(session.excluded_by_experimenter),
        trial_s=facts["trial_s"],
        n_trials=len(main),
        trial_times=tuple(shown[i] for i in sorted(shown)) if shown else None,
    )
