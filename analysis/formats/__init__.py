"""The table formats ``psychinterp analyze`` reads: ours and the published ones, as values in one table.

A :class:`~analysis.formats.base.TableFormat` names its columns (with their kinds, see
:mod:`analysis.tables`) and maps a checked frame to the tidy response table of docs/responses.md
(or, for rating tables, to a tidy rating table). Adding a format is adding an entry here.
"""

from __future__ import annotations

from analysis.formats import borowski, imi, psychinterp
from analysis.formats.base import LoadOptions, TableFormat

FORMATS: dict[str, TableFormat] = {
    f.name: f for f in (psychinterp.FORMAT, imi.FORMAT, borowski.RESPONSES, borowski.INTUITIVENESS)
}

__all__ = ["FORMATS", "LoadOptions", "TableFormat"]
