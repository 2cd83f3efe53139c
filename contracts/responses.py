"""The response table, in one place: every column ``psychinterp export`` writes and ``analyze`` reads.

``experiment_server.export`` writes exactly these columns, in this order; the analysis checks
each column it finds against its kind and requires the ``required`` ones; docs/responses.md's
column table is generated from here (``python -m contracts.responses``; a test keeps it equal).

Kinds are the analysis' cell checks (``analysis.tables.KINDS``); a trailing ``?`` lets a cell be empty.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    type: str  # as the documentation shows it
    meaning: str = ""
    required: bool = False  # the analysis needs it


RESPONSE_COLUMNS: tuple[Column, ...] = (
    Column("study_id", "str", "string", "the bundle's study"),
    Column(
        "bundle_fingerprint",
        "str",
        "16 hex digits",
        "which build of the study's bundle the session was served (a rebuilt bundle has another)",
    ),
    Column(
        "study_stopped",
        "str?",
        "string or empty",
        "when and why the study stopped taking participants (the server's stopping rule); empty while it takes them",
    ),
    Column(
        "paradigm",
        "str",
        "`2afc` / `odd_one_out_<n>`",
        "the bundle's paradigm (`contracts/paradigms.py`): how many queries, what chance is",
    ),
    Column("participant_id", "str", "string", "platform worker id, or `direct-<random>` for a direct link", True),
    Column("platform", "str", "string", "`prolific`, `mturk` or `direct`"),
    Column("task_id", "str", "string", "the task the participant was assigned"),
    Column("trial_index", "int", "int ≥ 0", "position in the task (in the practice block, for practice rows)"),
    Column("trial_id", "str", "string", "the bundle's trial id"),
    Column("model_id", "str", "string", "the unit's model", True),
    Column("unit_id", "str", "string", "`<model>__<layer>__<channel>`, or `…__<dictionary>-<row>`", True),
    Column("layer", "str?", "string or empty", "module name (empty for imported bundles)"),
    Column("channel", "int?", "int or empty", "the unit's channel (channel units only)"),
    Column(
        "unit_kind",
        "str",
        "string",
        "`channel`, or the name of the unit's dictionary (e.g. `sae`): what unit-kind comparisons group by",
    ),
    Column(
        "dictionary_method",
        "str?",
        "`file` / `kmeans` / `nmf` / `pca` / `sae` or empty",
        "where the unit's dictionary came from (docs/units.md); empty for channels",
    ),
    Column("dictionary_row", "int?", "int or empty", "the unit's row of its dictionary; empty for channels"),
    Column("layer_index", "int?", "int or empty", "0-based among the model's eligible layers"),
    Column("n_layers", "int?", "int or empty", "number of eligible layers of the model"),
    Column("condition", "str", "`natural` / `synthetic` / `none`", "reference type", True),
    Column(
        "trial_kind",
        "str",
        "`main` / `catch` / `practice`",
        "catch trials show copies of references as queries (served slightly transformed)",
    ),
    Column("practice_block", "int?", "int ≥ 1 or empty", "the practice block (1 = first try), practice rows only"),
    Column("batch", "int?", "int ≥ 0", "which batch of the unit's natural exemplars the trial used"),
    Column("max_side", "str?", "`left` / `right` or empty", "where the max references were shown (empty: none shown)"),
    Column("chosen_query", "int", "int ≥ 0", "the query the participant chose, in display order (0 = first)"),
    Column(
        "max_query",
        "int",
        "int ≥ 0",
        "the correct query: the more activating one (2AFC), the odd one (odd-one-out)",
    ),
    Column("correct", "binary", "0 / 1", "`chosen_query == max_query`", True),
    Column("confidence", "confidence", "1 / 2 / 3", "3 = most confident", True),
    Column(
        "rt_ms", "number", "float", "from the first frame with the trial visible to the click (`performance.now()`)"
    ),
    Column("focus_lost", "int", "int ≥ 0", "how often the window lost focus while the trial was shown"),
    Column("responded_at", "str", "ISO 8601 UTC", "when the server stored the response"),
    Column(
        "shown_s",
        "number?",
        "float or empty",
        "seconds the main trial was shown, on the server's clock: from its fetch to its answer, or to the next "
        "trial's fetch where that came sooner (empty: practice rows, and data older than per-trial timing)",
    ),
    Column(
        "session_status",
        "str",
        "`active` / `completed` / `failed` / `expired`",
        "`failed`: practice or catch trials failed, or the session was too fast (`failure_reason`)",
    ),
    Column("session_completed", "binary", "0 / 1", "1 when `session_status` is `completed` (a valid completion)"),
    Column(
        "failure_reason",
        "str?",
        "`practice` / `attention` / `timing` or empty",
        "why the server failed the session: practice blocks, catch trials, or minimum times",
    ),
    Column(
        "excluded_by_experimenter", "binary", "0 / 1", "1 when the experimenter excluded the session on the dashboard"
    ),
    Column("exclusion_reason", "str?", "string or empty", "the experimenter's note for that exclusion"),
    Column("instruction_s", "number?", "float or empty", "seconds from the instructions' first display to practice"),
    Column("session_s", "number?", "float or empty", "seconds from consent to completion"),
    Column(
        "trial_s",
        "number?",
        "float or empty",
        "mean seconds per main trial on the server's clock: from the start of the main trials to the last main "
        "response, over the main responses",
    ),
    Column("practice_blocks", "int?", "int ≥ 0", "practice blocks the participant needed"),
    Column("window_width", "int?", "int or empty", "browser window at the start, CSS pixels"),
    Column("window_height", "int?", "int or empty", "browser window at the start, CSS pixels"),
    Column("device_pixel_ratio", "number?", "float or empty", "the browser's device pixel ratio at the start"),
    Column("feedback", "str?", "string or empty", "the participant's optional free-text feedback at the end"),
)

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in RESPONSE_COLUMNS)


def markdown_table() -> str:
    """The column table of docs/responses.md."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{c.name}` | {c.type} | {c.meaning}{' (required)' if c.required else ''} |" for c in RESPONSE_COLUMNS]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
