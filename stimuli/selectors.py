"""How each unit selector kind (contracts.units) reads a layer's output.

An open table keyed by the selector's ``kind``: a kind gives its activation per image (the mean
over positions) and its value per position, which a feature-visualisation objective maximises.
Layer outputs arrive as channel maps, (N, C, *positions) (:func:`stimuli.registry.channel_map`).
A new selector kind adds one entry here and its type in contracts/units.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from contracts.errors import PsychinterpError
from contracts.units import ChannelSelector, UnitSelector


@dataclass(frozen=True)
class SelectorKind:
    # (N, C, *positions) and k selectors of this kind -> (N, k): each unit's mean over positions.
    activations: Callable[[torch.Tensor, Sequence[UnitSelector]], torch.Tensor]
    # (N, C, *positions) and one selector -> (N, *positions): the unit's value at each position.
    positions: Callable[[torch.Tensor, UnitSelector], torch.Tensor]
    # The layer's size this selector must fit, e.g. a channel index below the channel count.
    problem_with: Callable[[UnitSelector, int], str | None]


def _mean_over_positions(values: torch.Tensor) -> torch.Tensor:
    return values.flatten(2).mean(dim=2) if values.ndim > 2 else values


def _channel_activations(mapped: torch.Tensor, selectors: Sequence[ChannelSelector]) -> torch.Tensor:
    index = torch.as_tensor([s.channel for s in selectors], device=mapped.device)
    return _mean_over_positions(mapped.index_select(1, index))


def _channel_positions(mapped: torch.Tensor, selector: ChannelSelector) -> torch.Tensor:
    return mapped[:, selector.channel]


def _channel_problem(selector: ChannelSelector, channels: int) -> str | None:
    if selector.channel >= channels:
        return f"channel {selector.channel} is outside the layer's {channels} channels"
    return None


SELECTOR_KINDS: dict[str, SelectorKind] = {
    "channel": SelectorKind(_channel_activations, _channel_positions, _channel_problem),
}


def selector_kind(selector: UnitSelector) -> SelectorKind:
    try:
        return SELECTOR_KINDS[selector.kind]
    except KeyError:
        known = sorted(SELECTOR_KINDS)
        raise PsychinterpError(f"unit selector kind {selector.kind!r} is unknown; known: {known}") from None


def selector_activations(mapped: torch.Tensor, selectors: Sequence[UnitSelector]) -> torch.Tensor:
    """(N, len(selectors)): every selector's activation, in the order given; one call per kind."""
    by_kind: dict[str, list[int]] = {}
    for j, selector in enumerate(selectors):
        by_kind.setdefault(selector.kind, []).append(j)
    out = torch.empty(mapped.shape[0], len(selectors), dtype=mapped.dtype, device=mapped.device)
    for columns in by_kind.values():
        chosen = [selectors[j] for j in columns]
        out[:, columns] = selector_kind(chosen[0]).activations(mapped, chosen)
    return out


def selector_positions(mapped: torch.Tensor, selector: UnitSelector) -> torch.Tensor:
    return selector_kind(selector).positions(mapped, selector)


def selector_problem(selector: UnitSelector, channels: int) -> str | None:
    """Why ``selector`` does not fit a layer of ``channels`` channels, or None."""
    return selector_kind(selector).problem_with(selector, channels)
