"""Exclusions applied to a response table: per-participant (or per-session) summaries checked against
the criteria of :mod:`contracts.criteria`, which the server's dashboard uses too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from analysis.estimate import responses_paradigm
from contracts.criteria import RULES, ExclusionCriteria, ParticipantSummary, describe, failed_rules, load_criteria

__all__ = [
    "RULES",
    "ExclusionCriteria",
    "ParticipantSummary",
    "apply_exclusions",
    "counterfactual_grid",
    "describe",
    "exclusion_table",
    "failed_rules",
    "load_criteria",
    "published_exclusions",
]


def _first(rows: pd.DataFrame, column: str) -> Any:
    """A per-session value repeated on every row of the participant."""
    if column not in rows:
        return None
    values = pd.to_numeric(rows[column], errors="coerce").dropna()
    return float(values.iloc[0]) if len(values) else None


def _first_text(rows: pd.DataFrame, column: str) -> str | None:
    if column not in rows:
        return None
    values = rows[column].dropna()
    return str(values.iloc[0]) if len(values) else None


def _shown_times(scored: pd.DataFrame) -> tuple[float | None, ...] | None:
    """Each main trial's seconds shown on the server's clock (``shown_s``); None where the table has none."""
    if "shown_s" not in scored:
        return None
    times = pd.to_numeric(scored["shown_s"], errors="coerce")
    return tuple(None if pd.isna(t) else float(t) for t in times) if times.notna().any() else None


def session_key(responses: pd.DataFrame) -> str:
    """What a row of the exclusion table is: a session where the table names them, else a participant."""
    return "session_id" if "session_id" in responses else "participant_id"


def summarise_participants(responses: pd.DataFrame) -> list[ParticipantSummary]:
    """Per-session summaries from a response table (docs/responses.md): main and catch trials."""
    summaries = []
    key = session_key(responses)
    n_queries = responses_paradigm(responses).n_queries
    for session, rows in responses.groupby(key, sort=True):
        participant = rows["participant_id"].iloc[0]
        kind = rows["trial_kind"] if "trial_kind" in rows else pd.Series("main", index=rows.index)
        catch = rows[kind == "catch"]
        scored = rows[kind.isin(["main", "catch"])]

        chosen = pd.to_numeric(scored["chosen_query"], errors="coerce") if "chosen_query" in scored else None
        blocks = _first(rows, "practice_blocks")
        summaries.append(
            ParticipantSummary(
                participant_id=str(participant),
                catch_accuracy=float(catch["correct"].mean()) if len(catch) else None,
                query_choices=(
                    tuple(int((chosen == q).sum()) for q in range(n_queries)) if chosen is not None else None
                ),
                instruction_s=_first(rows, "instruction_s"),
                session_s=_first(rows, "session_s"),
                trial_s=_first(rows, "trial_s"),
                practice_blocks=int(blocks) if blocks is not None else None,
                session_id=str(session) if key == "session_id" else None,
                excluded_by_experimenter=bool(_first(rows, "excluded_by_experimenter")),
                session_status=_first_text(rows, "session_status"),
                n_trials=len(scored),
                trial_times=_shown_times(scored),
            )
        )
    return summaries


def exclusion_table(responses: pd.DataFrame, criteria: ExclusionCriteria | None = None) -> pd.DataFrame:
    """One row per participant (or session): the values checked, the rules failed, whether excluded."""
    criteria = criteria or ExclusionCriteria()
    rows = []
    reasons = _per_session(responses, "exclusion_reason")
    for summary in summarise_participants(responses):
        failed = failed_rules(summary, criteria)
        row = {**summary.__dict__, "failed_rules": ";".join(failed), "excluded": bool(failed)}
        # One column per query position, so that the table stays flat (query_0_choices, ...).
        row.pop("trial_times")
        row["fast_trial_share"] = summary.fast_share(criteria.min_single_trial_s)
        choices = row.pop("query_choices")
        row.update({f"query_{q}_choices": n for q, n in enumerate(choices or ())})
        if summary.session_id is None:
            del row["session_id"]
        if reasons is not None:
            row["exclusion_reason"] = reasons.get(summary.session_id or summary.participant_id)
        rows.append(row)
    return pd.DataFrame(rows)


def _per_session(responses: pd.DataFrame, column: str) -> dict[str, Any] | None:
    """A per-session text column (repeated on every row), by session key; None when the table lacks it."""
    if column not in responses:
        return None
    key = session_key(responses)
    values = responses.dropna(subset=[column]).groupby(responses[key].astype(str))[column].first()
    return values.to_dict()


def _kept(responses: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    key = session_key(responses)
    excluded = set(table.loc[table["excluded"], key].astype(str)) if len(table) else set()
    return responses[~responses[key].astype(str).isin(excluded)]


def apply_exclusions(
    responses: pd.DataFrame, criteria: ExclusionCriteria | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The responses of included participants (or sessions), and the exclusion table."""
    table = exclusion_table(responses, criteria)
    return _kept(responses, table), table


PUBLISHED_RULE = "published:{column}"


def published_exclusions(responses: pd.DataFrame, keep: Mapping[str, bool]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Exclusions as the source itself made them: a session is kept when every flag column in
    ``keep`` has its keeping value (e.g. the 2023 release's ``passed_checks`` True and
    ``multi_participation`` False). Missing flag columns are an error: the claim would be false."""
    missing = [column for column in keep if column not in responses]
    if missing:
        raise ValueError(f"the table has no {missing} column(s), so the published exclusions cannot be applied")
    key = session_key(responses)
    reasons = _per_session(responses, "exclusion_reason")
    rows = []
    for session, group in responses.groupby(key, sort=True):
        failed = [PUBLISHED_RULE.format(column=c) for c, value in keep.items() if not (group[c] == value).all()]
        row = {"participant_id": group["participant_id"].iloc[0], **{c: group[c].iloc[0] for c in keep}}
        if key == "session_id":
            row["session_id"] = session
        if reasons is not None:
            row["exclusion_reason"] = reasons.get(str(session))
        rows.append({**row, "failed_rules": ";".join(failed), "excluded": bool(failed)})
    table = pd.DataFrame(rows)
    return _kept(responses, table), table


COUNTERFACTUAL_GRID = {
    "min_catch_accuracy": (0.0, 0.6, 0.7, 0.8, 0.9, 1.0),
    # Fixed thresholds only: the defaults of these two derive from each session's length (no dotted line).
    "min_choices_per_query_row": (0, 2, 5, 8, 10),
    "min_instruction_s": (0.0, 5.0, 15.0, 30.0, 60.0),
    "min_session_s": (0.0, 60.0, 135.0, 300.0, 600.0),
    "min_trial_s": (0.0, 0.5, 1.0, 2.0, 3.0),
    "max_practice_blocks": (1, 2, 3, 5),
}


def counterfactual_grid(
    responses: pd.DataFrame,
    criteria: ExclusionCriteria | None = None,
    grid: dict[str, tuple] | None = None,
) -> pd.DataFrame:
    """Accuracy per model x condition when one criterion's threshold moves and the others stay.

    Returns one row per (criterion, threshold, model, condition): accuracy on main
    trials of the participants kept, and how many were kept.
    """
    criteria = criteria or ExclusionCriteria()
    summaries = summarise_participants(responses)
    main = responses[responses["trial_kind"] == "main"] if "trial_kind" in responses else responses
    key = session_key(responses)
    cells = (
        main.assign(**{key: main[key].astype(str), "participant_id": main["participant_id"].astype(str)})
        .groupby(list(dict.fromkeys([key, "participant_id", "model_id", "condition"])))["correct"]
        .agg(["sum", "count"])
        .reset_index()
    )
    rows = []
    for field, thresholds in (grid or COUNTERFACTUAL_GRID).items():
        for threshold in thresholds:
            varied = criteria.model_copy(update={field: threshold})
            kept = {s.session_id or s.participant_id for s in summaries if not failed_rules(s, varied)}
            chosen = cells[cells[key].isin(kept)]
            for (model_id, condition), group in chosen.groupby(["model_id", "condition"], sort=True):
                rows.append(
                    {
                        "criterion": field,
                        "threshold": threshold,
                        "is_default": threshold == getattr(criteria, field),
                        "model_id": model_id,
                        "condition": condition,
                        "accuracy": group["sum"].sum() / group["count"].sum(),
                        "n_participants": group["participant_id"].nunique(),
                    }
                )
    return pd.DataFrame(rows)
