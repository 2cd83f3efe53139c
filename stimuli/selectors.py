"""How each unit selector kind (contracts.units) reads a layer's output.

A selector names a unit; a *readout* is what computes it. A channel selector is its own readout;
a direction or latent selector is bound to its dictionary's vectors first
(:func:`stimuli.dictionaries.bind`). An open table keyed by ``kind`` gives, per kind, the
activation per image (the mean over positions), the value per position, and the value a
feature-visualisation objective maximises.

Layer outputs arrive as channel maps, (N, C, *positions) (:func:`stimuli.registry.channel_map`).
A new kind adds one entry here and its selector type in contracts/units.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from contracts.errors import PsychinterpError
from contracts.units import ChannelSelector, UnitRef


@dataclass(frozen=True, eq=False)
class LinearReadout:
    """``v · x`` at each position: a direction unit bound to its vector (C,)."""

    vector: np.ndarray
    kind: str = "direction"


@dataclass(frozen=True, eq=False)
class LatentReadout:
    """``ReLU(w · x + b)`` at each position: an encoder latent bound to its row (C,) and bias."""

    weights: np.ndarray
    bias: float
    kind: str = "latent"


Readout = ChannelSelector | LinearReadout | LatentReadout


@dataclass(frozen=True)
class BoundUnit:
    """A unit's layer and its readout: what a scan or an objective computes."""

    layer: str
    readout: Readout


def as_bound(unit: UnitRef | BoundUnit) -> BoundUnit:
    """A bound unit as it is; a channel unit's ref, bound to itself. Dictionary units need their vectors."""
    if isinstance(unit, BoundUnit):
        return unit
    if isinstance(unit.selector, ChannelSelector):
        return BoundUnit(unit.layer, unit.selector)
    raise PsychinterpError(
        f"unit {unit.unit_id}: a {unit.selector.kind} unit must be bound to its dictionary first "
        "(stimuli.dictionaries.bind)"
    )


@dataclass(frozen=True)
class ReadoutKind:
    # (N, C, *positions) and k readouts of this kind -> (N, k): each unit's mean over positions.
    activations: Callable[[torch.Tensor, Sequence[Readout]], torch.Tensor]
    # (N, C, *positions) and one readout -> (N, *positions): the unit's value at each position.
    positions: Callable[[torch.Tensor, Readout], torch.Tensor]
    # What a feature visualisation maximises per position; the values themselves unless a ReLU
    # would leave no gradient to follow.
    objective: Callable[[torch.Tensor, Readout], torch.Tensor]
    # The layer's size this readout must fit, e.g. a channel index below the channel count.
    problem_with: Callable[[Readout, int], str | None]


def _mean_over_positions(values: torch.Tensor) -> torch.Tensor:
    return values.flatten(2).mean(dim=2) if values.ndim > 2 else values


def _channel_activations(mapped: torch.Tensor, readouts: Sequence[ChannelSelector]) -> torch.Tensor:
    # Every channel's mean, then the chosen ones: the very numbers a direction's product with the
    # channel means starts from, so a one-hot direction equals its channel to the last bit.
    index = torch.as_tensor([r.channel for r in readouts], device=mapped.device)
    return _mean_over_positions(mapped).index_select(1, index)


def _channel_positions(mapped: torch.Tensor, readout: ChannelSelector) -> torch.Tensor:
    return mapped[:, readout.channel]


def _channel_problem(readout: ChannelSelector, channels: int) -> str | None:
    if readout.channel >= channels:
        return f"channel {readout.channel} is outside the layer's {channels} channels"
    return None


def _rows(mapped: torch.Tensor, vectors: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.as_tensor(np.stack(vectors), device=mapped.device).to(mapped.dtype)


def _project(mapped: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(N, C, *positions) and (k, C) -> (N, k, *positions)."""
    return torch.einsum("nc...,kc->nk...", mapped, rows)


def _linear_activations(mapped: torch.Tensor, readouts: Sequence[LinearReadout]) -> torch.Tensor:
    # The mean of v · x over positions is v · (the channel means): no per-position work.
    return _mean_over_positions(mapped) @ _rows(mapped, [r.vector for r in readouts]).T


def _linear_positions(mapped: torch.Tensor, readout: LinearReadout) -> torch.Tensor:
    # An elementwise product and a sum, not a matrix product: its zeros add nothing in any order,
    # so a one-hot direction gives exactly its channel's values.
    weights = _rows(mapped, [readout.vector])[0]
    return (mapped * weights.view(1, -1, *([1] * (mapped.ndim - 2)))).sum(dim=1)


def _vector_problem(vector: np.ndarray, channels: int) -> str | None:
    if vector.shape != (channels,):
        return f"its vector has shape {tuple(vector.shape)}, the layer has {channels} channels"
    return None


def _pre_activations(mapped: torch.Tensor, readouts: Sequence[LatentReadout]) -> torch.Tensor:
    bias = torch.as_tensor([r.bias for r in readouts], device=mapped.device).to(mapped.dtype)
    projected = _project(mapped, _rows(mapped, [r.weights for r in readouts]))
    return projected + bias.view(1, -1, *([1] * (projected.ndim - 2)))


def _latent_activations(mapped: torch.Tensor, readouts: Sequence[LatentReadout]) -> torch.Tensor:
    return _mean_over_positions(torch.relu(_pre_activations(mapped, readouts)))


def _latent_positions(mapped: torch.Tensor, readout: LatentReadout) -> torch.Tensor:
    return torch.relu(_pre_activations(mapped, [readout]))[:, 0]


def _latent_objective(mapped: torch.Tensor, readout: LatentReadout) -> torch.Tensor:
    # Before the ReLU: from noise a latent is often off everywhere, where ReLU has no gradient.
    return _pre_activations(mapped, [readout])[:, 0]


READOUT_KINDS: dict[str, ReadoutKind] = {
    "channel": ReadoutKind(_channel_activations, _channel_positions, _channel_positions, _channel_problem),
    "direction": ReadoutKind(
        _linear_activations, _linear_positions, _linear_positions, lambda r, c: _vector_problem(r.vector, c)
    ),
    "latent": ReadoutKind(
        _latent_activations, _latent_positions, _latent_objective, lambda r, c: _vector_problem(r.weights, c)
    ),
}


def readout_kind(readout: Readout) -> ReadoutKind:
    try:
        return READOUT_KINDS[readout.kind]
    except KeyError:
        known = sorted(READOUT_KINDS)
        raise PsychinterpError(f"unit readout kind {readout.kind!r} is unknown; known: {known}") from None


def readout_activations(mapped: torch.Tensor, readouts: Sequence[Readout]) -> torch.Tensor:
    """(N, len(readouts)): every unit's activation, in the order given; one call per kind."""
    by_kind: dict[str, list[int]] = {}
    for j, readout in enumerate(readouts):
        by_kind.setdefault(readout.kind, []).append(j)
    out = torch.empty(mapped.shape[0], len(readouts), dtype=mapped.dtype, device=mapped.device)
    for columns in by_kind.values():
        chosen = [readouts[j] for j in columns]
        out[:, columns] = readout_kind(chosen[0]).activations(mapped, chosen).to(out.dtype)
    return out


def readout_positions(mapped: torch.Tensor, readout: Readout) -> torch.Tensor:
    return readout_kind(readout).positions(mapped, readout)


def readout_objective(mapped: torch.Tensor, readout: Readout) -> torch.Tensor:
    return readout_kind(readout).objective(mapped, readout)


def readout_problem(readout: Readout, channels: int) -> str | None:
    """Why ``readout`` does not fit a layer of ``channels`` channels, or None."""
    return readout_kind(readout).problem_with(readout, channels)
