"""Unit sampling (pure): a layer, then a channel (or a dictionary's row), no duplicates, seeded."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from contracts.errors import PsychinterpError
from contracts.units import DirectionSelector, LatentSelector, UnitRef, UnitSelector, channel


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


def _draw(
    sizes: Sequence[int], n: int, rng: np.random.Generator, weighted: bool, taken: Collection[tuple[int, int]] = ()
) -> list[tuple[int, int]]:
    """``n`` distinct (layer, row) pairs, none of them ``taken``: a layer uniformly (or by size), then a row
    uniformly; repeats redrawn."""
    p = np.asarray(sizes, dtype=float) / sum(sizes) if weighted else None
    full = {li for li, size in enumerate(sizes) if sum(1 for t in taken if t[0] == li) >= size}
    chosen: dict[tuple[int, int], None] = {}
    while len(chosen) < n:
        li = int(rng.choice(len(sizes), p=p))
        if sizes[li] == 0 or li in full:
            continue
        pair = (li, int(rng.integers(sizes[li])))
        if pair not in taken:
            chosen.setdefault(pair)
    return sorted(chosen)


def sample_units(
    model_id: str,
    layers: Sequence[tuple[str, int]],
    n_units: int,
    seed: int,
    weight_by_layer_size: bool = False,
    taken: Sequence[SampledUnit] = (),
    stream: str = "",
) -> list[SampledUnit]:
    """Sample ``n_units`` distinct (layer, channel) pairs, as the 2023 study did; none of the ``taken``
    units (a second draw, e.g. machine-only units beside the people's, with its own random ``stream``).

    A layer is drawn uniformly (or in proportion to its channel count), then a
    channel uniformly; repeats are drawn again. ``layers`` are (name, channel
    count) in forward order.
    """
    capacity = sum(c for _, c in layers) - len(taken)
    if n_units > capacity:
        more = " more" if taken else ""
        raise PsychinterpError(f"model {model_id!r}: asked for {n_units}{more} units but it has {capacity}{more}")
    rng = np.random.default_rng([seed, *model_id.encode(), *stream.encode()])
    index = {name: li for li, (name, _) in enumerate(layers)}
    taken_pairs = {(index[u.layer], u.selector.row) for u in taken if u.layer in index}
    return [
        SampledUnit(model_id=model_id, layer=layers[li][0], selector=channel(ch), layer_index=li, n_layers=len(layers))
        for li, ch in _draw([c for _, c in layers], n_units, rng, weight_by_layer_size, taken_pairs)
    ]


def sample_dictionary_units(
    model_id: str,
    dictionary: str,
    form: str,
    rows: Sequence[tuple[str, Sequence[int]]],
    layer_order: Sequence[str],
    n_units: int,
    seed: int,
    weight_by_layer_size: bool = False,
) -> list[SampledUnit]:
    """Sample ``n_units`` distinct rows of a dictionary: a layer, then one of its live rows.

    ``rows`` are (layer, the live rows there); ``layer_order`` is the model's eligible layers, in
    forward order, which gives each unit's depth. The draws have their own seed stream per
    dictionary, so adding a dictionary leaves the channel units as they were.
    """
    capacity = sum(len(r) for _, r in rows)
    if n_units > capacity:
        raise PsychinterpError(
            f"model {model_id!r}: asked for {n_units} units of dictionary {dictionary!r}, "
            f"but it has {capacity} live row(s) in its layers"
        )
    selector = DirectionSelector if form == "direction" else LatentSelector
    rng = np.random.default_rng([seed, *model_id.encode(), 0, *dictionary.encode()])
    return [
        SampledUnit(
            model_id=model_id,
            layer=rows[li][0],
            selector=selector(dictionary=dictionary, index=int(rows[li][1][k])),
            layer_index=list(layer_order).index(rows[li][0]),
            n_layers=len(layer_order),
        )
        for li, k in _draw([len(r) for _, r in rows], n_units, rng, weight_by_layer_size)
    ]


def reserve_units(
    planned: Sequence[SampledUnit], unit: SampledUnit, rows: Sequence[int], seed: int, n: int
) -> list[SampledUnit]:
    """The units that may take ``unit``'s place, in order: up to ``n`` other rows of its layer and kind.

    ``planned`` are the model's planned units and ``rows`` every row of ``unit``'s layer and kind (its
    channels, or its dictionary's live rows there). The rows no planned unit uses are shuffled once per
    layer and kind, and dealt in turn to that layer's planned units of the kind: unit ``i`` of ``k`` gets
    rows ``i, i + k, i + 2k, ...``. So no two units share a reserve, whichever shard replaces them, and
    the models of a ``shared_units`` group (the same planned units) get the same reserves.
    """
    same = [u for u in planned if (u.layer, u.selector.unit_kind) == (unit.layer, unit.selector.unit_kind)]
    used = {u.selector.row for u in same}
    spare = np.asarray(sorted(set(rows) - used), dtype=int)
    rng = np.random.default_rng([seed, *unit.layer.encode(), 0, *unit.selector.unit_kind.encode()])
    order = rng.permutation(spare)
    mine = order[same.index(unit) :: len(same)][:n]
    return [unit.model_copy(update={"selector": unit.selector.with_row(int(row))}) for row in mine]
