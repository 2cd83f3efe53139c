"""What a table format is: its columns and its mapping to the tidy table."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd


@dataclass(frozen=True)
class LoadOptions:
    model_id: str = "googlenet"  # for files that name no model (Borowski et al. 2021 studied InceptionV1)


@dataclass(frozen=True)
class TableFormat:
    name: str
    title: str
    kind: Literal["responses", "ratings"]
    required: Mapping[str, str]  # column -> kind (analysis.tables.KINDS, "?" for cells that may be empty)
    optional: Mapping[str, str]
    to_tidy: Callable[[Path, pd.DataFrame, LoadOptions], pd.DataFrame]
    # What the source says about exclusions: tidy column -> the value that keeps a row.
    # None: the format records no exclusions of its own; empty: the file holds only kept participants.
    published_keep: Mapping[str, bool] | None = None
    published_note: str = ""
    # What one loaded table is, where the format covers several (Borowski et al.: Experiment I or II).
    describe: Callable[[pd.DataFrame], str] | None = None
    # The breakdown columns (analysis.breakdown.BREAKDOWN_COLUMNS) that the source paper reports as its
    # results, when a table splits by them: the report leads with them and labels pooled numbers secondary.
    lead_by: tuple[str, ...] = ()

    def title_of(self, tidy: pd.DataFrame) -> str:
        """The title of one loaded table: the format's, or what ``describe`` says this table is."""
        return self.describe(tidy) if self.describe is not None else self.title
