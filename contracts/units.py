"""What a unit is: one model, one layer, and a selector that says which of the layer's units.

A channel is the only selector kind for now. Unit ids are built here and nowhere else.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ChannelSelector(BaseModel):
    """One channel of the layer; its activation is the channel's spatial (or token) mean."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["channel"] = "channel"
    channel: int = Field(ge=0)

    @property
    def id_part(self) -> str:
        return str(self.channel)


# A discriminated union on ``kind`` once a second selector exists.
UnitSelector = ChannelSelector


def channel(index: int) -> ChannelSelector:
    """The selector of channel ``index``."""
    return ChannelSelector(channel=index)


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", part)


def unit_id(model_id: str, layer: str, selector: UnitSelector) -> str:
    """Stable, URL-safe unit id: ``<model>__<layer>__<selector>`` (for a channel, its number)."""
    return "__".join(_safe(part) for part in (model_id, layer, selector.id_part))


class UnitRef(BaseModel):
    """A unit of a model: where it is, and which one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str
    layer: str
    selector: UnitSelector

    @property
    def unit_id(self) -> str:
        return unit_id(self.model_id, self.layer, self.selector)
