"""Unit sampling (pure): a layer uniformly, then a channel uniformly, no duplicates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stimuli.errors import PsychinterpError


@dataclass(frozen=True)
class SampledUnit:
    model_id: str
    layer: str
    channel: int
    layer_index: int
    n_layers: int

    @property
    def unit_id(self) -> str:
        return f"{self.model_id}__{self.layer}__{self.channel}"


def sample_units(model_id: str, layers: Sequence[tuple[str, int]], n_units: int, seed: int) -> list[SampledUnit]:
    """Sample ``n_units`` distinct (layer, channel) pairs, as the 2023 study did.

    ``layers`` are (name, channel count) in forward order.
    """
    capacity = sum(c for _, c in layers)
    if n_units > capacity:
        raise PsychinterpError(f"model {model_id!r}: asked for {n_units} units but it has {capacity}")
    rng = np.random.default_rng([seed, sum(model_id.encode())])
    chosen: dict[tuple[int, int], None] = {}
    while len(chosen) < n_units:
        li = int(rng.integers(len(layers)))
        ch = int(rng.integers(layers[li][1]))
        chosen.setdefault((li, ch))
    return [
        SampledUnit(model_id, layers[li][0], ch, li, len(layers))
        for li, ch in sorted(chosen, key=lambda k: (k[0], k[1]))
    ]
