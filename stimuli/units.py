"""Unit sampling (pure): a layer, then a channel, no duplicates, seeded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from contracts.errors import PsychinterpError
from contracts.units import UnitRef, UnitSelector, channel


class SampledUnit(BaseModel):
    """A unit the build works on: which one, and where its layer sits among the model's eligible layers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str
    layer: str
    selector: UnitSelector
    layer_index: int
    n_layers: int

    @model_validator(mode="before")
    @classmethod
    def _loose_channel(cls, raw: Any) -> Any:
        # Work records of builds before unit selectors hold a loose channel; they resume unchanged.
        if isinstance(raw, dict) and "channel" in raw and "selector" not in raw:
            raw = {**raw, "selector": channel(raw["channel"])}
            del raw["channel"]
        return raw

    @property
    def ref(self) -> UnitRef:
        return UnitRef(model_id=self.model_id, layer=self.layer, selector=self.selector)

    @property
    def unit_id(self) -> str:
        return self.ref.unit_id

    def for_model(self, model_id: str) -> SampledUnit:
        """The same unit in another model of the same architecture."""
        return self.model_copy(update={"model_id": model_id})


def sample_units(
    model_id: str,
    layers: Sequence[tuple[str, int]],
    n_units: int,
    seed: int,
    weight_by_layer_size: bool = False,
) -> list[SampledUnit]:
    """Sample ``n_units`` distinct (layer, channel) pairs, as the 2023 study did.

    A layer is drawn uniformly (or in proportion to its channel count), then a
    channel uniformly; repeats are drawn again. ``layers`` are (name, channel
    count) in forward order.
    """
    capacity = sum(c for _, c in layers)
    if n_units > capacity:
        raise PsychinterpError(f"model {model_id!r}: asked for {n_units} units but it has {capacity}")
    rng = np.random.default_rng([seed, *model_id.encode()])
    sizes = np.array([c for _, c in layers], dtype=float)
    p = sizes / sizes.sum() if weight_by_layer_size else None
    chosen: dict[tuple[int, int], None] = {}
    while len(chosen) < n_units:
        li = int(rng.choice(len(layers), p=p))
        ch = int(rng.integers(layers[li][1]))
        chosen.setdefault((li, ch))
    return [
        SampledUnit(model_id=model_id, layer=layers[li][0], selector=channel(ch), layer_index=li, n_layers=len(layers))
        for li, ch in sorted(chosen)
    ]
