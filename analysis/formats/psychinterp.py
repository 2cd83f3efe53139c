"""Our own response table (``psychinterp export``; docs/responses.md)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.formats.base import LoadOptions, TableFormat


def _to_tidy(path: Path, frame: pd.DataFrame, options: LoadOptions) -> pd.DataFrame:
    tidy = frame.copy()
    if "trial_kind" not in tidy:
        tidy["trial_kind"] = "main"
    return tidy


FORMAT = TableFormat(
    name="psychinterp",
    title="a psychinterp export",
    kind="responses",
    required={
        "participant_id": "str",
        "model_id": "str",
        "unit_id": "str",
        "condition": "str",
        "correct": "binary",
        "confidence": "confidence",
    },
    optional={
        "rt_ms": "number?",
        "trial_index": "int?",
        "layer_index": "int?",
        "n_layers": "int?",
        "channel": "int?",
        "chosen_query": "int?",
        "max_query": "int?",
        "instruction_s": "number?",
        "session_s": "number?",
        "practice_blocks": "int?",
    },
    to_tidy=_to_tidy,
)
