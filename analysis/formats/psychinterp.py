"""Our own response table (``psychinterp export``): the columns of contracts.responses."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.formats.base import LoadOptions, TableFormat
from contracts.paradigms import TWO_AFC
from contracts.responses import RESPONSE_COLUMNS


def _to_tidy(path: Path, frame: pd.DataFrame, options: LoadOptions) -> pd.DataFrame:
    tidy = frame.copy()
    if "trial_kind" not in tidy:
        tidy["trial_kind"] = "main"
    if "paradigm" not in tidy:  # exports from before the column existed were all 2AFC
        tidy["paradigm"] = TWO_AFC.name
    return tidy


FORMAT = TableFormat(
    name="psychinterp",
    title="a psychinterp export",
    kind="responses",
    required={c.name: c.kind for c in RESPONSE_COLUMNS if c.required},
    optional={c.name: c.kind for c in RESPONSE_COLUMNS if not c.required},
    to_tidy=_to_tidy,
    published_keep={"excluded_by_experimenter": False},
    published_note="the experimenter's exclusions on the server's dashboard",
)
