"""Unit sampling (pure): a layer, then a channel, no duplicates, seeded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from contracts.errors import PsychinterpError
from contracts.units import ChannelSelector, unit_id


@dataclass(frozen=True)
class SampledUnit:
    model_id: str
    layer: str
    channel: int
    layer_index: int
    n_layers: int

    @property
    def selector(self) -> ChannelSelector:
        return ChannelSelector(channel=self.channel)

    @property
    def unit_id(self) -> str:
        return unit_id(self.model_id, self.layer, self.selector)

    def for_model(self, model_id: str) -> SampledUnit:
        """The same unit in another model of the same architecture."""
        return SampledUnit(model_id, self.layer, self.channel, self.layer_index, self.n_layers)


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
    return [SampledUnit(model_id, layers[li][0], ch, li, len(layers)) for li, ch in sorted(chosen)]
