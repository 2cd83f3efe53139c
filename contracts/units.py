"""What a unit is: one model, one layer, and a selector that says which of the layer's units.

Selector kinds:

- ``channel``: one channel; its activation is the channel's spatial (or token) mean;
- ``direction``: row ``index`` of a dictionary of linear directions ``v`` in the layer's channel
  space (k-means centroids, NMF or PCA components, a decoder matrix from a file); its activation is
  the spatial mean of ``v · x``;
- ``latent``: row ``index`` of a dictionary with an encoder (a sparse autoencoder's): its activation
  is the spatial mean of ``ReLU(w · x + b)`` over positions.

A dictionary is named per study (``kmeans``, ``sae``); its vectors live in the bundle
(``contracts.bundle.Dictionary``). Unit ids are built here and nowhere else.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

CHANNEL_KIND = "channel"
# A dictionary's name: a letter first and no '-' or '.', so that a unit id stays unambiguous.
DICTIONARY_NAME = r"^[A-Za-z][A-Za-z0-9_]*$"


class ChannelSelector(BaseModel):
    """One channel of the layer; its activation is the channel's spatial (or token) mean."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["channel"] = "channel"
    channel: int = Field(ge=0)

    @property
    def id_part(self) -> str:
        return str(self.channel)

    @property
    def row(self) -> int:
        """Which of the layer's units of this kind (what a replacement of the same kind changes)."""
        return self.channel

    def with_row(self, row: int) -> ChannelSelector:
        return ChannelSelector(channel=row)

    @property
    def unit_kind(self) -> str:
        return CHANNEL_KIND


class _DictionaryRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dictionary: str = Field(pattern=DICTIONARY_NAME, description="the study's name for the dictionary")
    index: int = Field(ge=0, description="the row of the dictionary")

    @property
    def id_part(self) -> str:
        return f"{self.dictionary}-{self.index}"

    @property
    def row(self) -> int:
        return self.index

    def with_row(self, row: int):
        return self.model_copy(update={"index": row})

    @property
    def unit_kind(self) -> str:
        """What the analysis compares: the dictionary's name, e.g. ``sae`` against ``channel``."""
        return self.dictionary


class DirectionSelector(_DictionaryRow):
    """A linear direction ``v``: the spatial mean of ``v · x``, which equals ``v ·`` the channel means."""

    kind: Literal["direction"] = "direction"


class LatentSelector(_DictionaryRow):
    """A dictionary latent with an encoder row ``w`` and bias ``b``: the spatial mean of ``ReLU(w · x + b)``."""

    kind: Literal["latent"] = "latent"


UnitSelector = Annotated[ChannelSelector | DirectionSelector | LatentSelector, Field(discriminator="kind")]
DictionarySelector = DirectionSelector | LatentSelector


def channel(index: int) -> ChannelSelector:
    """The selector of channel ``index``."""
    return ChannelSelector(channel=index)


def _safe(part: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", part)


def unit_id(model_id: str, layer: str, selector: UnitSelector) -> str:
    """Stable, URL-safe unit id: ``<model>__<layer>__<selector>`` (a channel's number, or ``<dictionary>-<row>``)."""
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
