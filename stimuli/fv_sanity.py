"""A sanity check for feature visualisations: do they reach the unit the way natural images do?

Geirhos et al. (ICML 2024, "Don't trust your eyes") showed that a network can be changed so that
its visualisations show anything at all while its behaviour on natural images stays the same: the
visualisations then drive the unit through a path that natural images never use. Such images
tell a participant nothing about what the unit does on photographs.

The check compares, in every layer below the unit, how a visualisation and the unit's natural
exemplars move the layer's activations (channel means, token means for a ViT):

- the layer's *natural direction* for a side (max or min) is the mean of that side's exemplars
  minus the mean of all the unit's exemplars (both sides);
- an image's *path similarity* is the cosine between its own activations minus that mean and the
  natural direction, averaged over the layers below the unit;
- the exemplars' own similarities, each left out of the direction it is compared with, give the
  reference: an image is flagged when its similarity is below :data:`OUTLIER_SIMILARITY`, a fixed
  floor, and below the exemplars' lowest.

A visualisation that works like its exemplars, only more so, points the same way (a similarity
near the exemplars'); one that rides a path of its own points elsewhere (near zero or below).
Units in the first eligible layer have no layer below and are not checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stimuli.registry import LoadedModel, capture_outputs, channel_map, forward_until_captured

OUTLIER_SIMILARITY = 0.3  # below this (and below every exemplar's), an image's path is flagged
SIDES = ("max", "min")


@dataclass(frozen=True)
class PathCheck:
    """Per image of one side: its path similarity and whether it is flagged."""

    similarity: np.ndarray  # (n,)
    outlier: np.ndarray  # (n,) bool
    exemplar_floor: float  # the exemplars' lowest (left-out) similarity on this side


def layer_means(
    model: LoadedModel, images: torch.Tensor, layers: Sequence[str], batch: int = 64
) -> dict[str, np.ndarray]:
    """(N, C) channel means (token means) of each layer for [0, 1] images (resized to the model's input size)."""
    out: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    with capture_outputs(model.module, list(layers), stop_early=True) as captured, torch.no_grad():
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch].to(model.device)
            if chunk.shape[-1] != model.input_size:  # visualisations come at their own size
                chunk = F.interpolate(chunk, size=(model.input_size,) * 2, mode="bilinear", antialias=True)
            forward_until_captured(model.module, model.normalize(chunk), captured)
            for layer in layers:
                mapped = channel_map(captured[layer], model.spec.prefix_tokens)
                means = mapped.flatten(2).mean(-1) if mapped.ndim > 2 else mapped
                out[layer].append(means.double().cpu().numpy())
    return {layer: np.concatenate(parts) for layer, parts in out.items()}


def _cosine(vectors: np.ndarray, direction: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(direction)
    return np.divide(vectors @ direction, norms, out=np.zeros(len(vectors)), where=norms > 0)


def path_similarity(
    exemplars: Mapping[str, Mapping[str, np.ndarray]], images: Mapping[str, np.ndarray], side: str
) -> np.ndarray:
    """Mean over layers of cos(image − the exemplars' mean, side's exemplar mean − the exemplars' mean).

    ``exemplars[side][layer]`` and ``images[layer]`` are (N, C) layer means."""
    scores = []
    for layer, vectors in images.items():
        everything = np.concatenate([exemplars[s][layer] for s in SIDES])
        centre = everything.mean(0)
        scores.append(_cosine(vectors - centre, exemplars[side][layer].mean(0) - centre))
    return np.mean(scores, axis=0)


def _left_out_similarity(exemplars: Mapping[str, Mapping[str, np.ndarray]], side: str) -> np.ndarray:
    """Each exemplar of ``side`` against the direction made without it."""
    n = len(next(iter(exemplars[side].values())))
    scores = []
    for i in range(n):
        kept = {
            s: {layer: np.delete(v, i, axis=0) if s == side else v for layer, v in layers.items()}
            for s, layers in exemplars.items()
        }
        scores.append(path_similarity(kept, {layer: v[i : i + 1] for layer, v in exemplars[side].items()}, side)[0])
    return np.asarray(scores)


def check_paths(
    model: LoadedModel,
    layers_below: Sequence[str],
    exemplar_images: Mapping[str, torch.Tensor],
    visualisations: Mapping[str, torch.Tensor],
) -> dict[str, PathCheck] | None:
    """Per side, the path check of the visualisations against the unit's exemplars (both [0, 1]
    image tensors at the model's input size); None when the unit has no layer below it."""
    if not layers_below:
        return None
    exemplars = {side: layer_means(model, exemplar_images[side], layers_below) for side in SIDES}
    checks = {}
    for side in SIDES:
        similarity = path_similarity(exemplars, layer_means(model, visualisations[side], layers_below), side)
        floor = float(_left_out_similarity(exemplars, side).min())
        checks[side] = PathCheck(similarity, (similarity < OUTLIER_SIMILARITY) & (similarity < floor), floor)
    return checks
