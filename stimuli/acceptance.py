"""Which units may reach a participant: the acceptance rules of a unit's exemplars and visualisations (pure).

A unit is refused when what a trial would show of it cannot teach anything:

- **dead**: its activation is the same on every dataset image (its exemplars are an arbitrary draw and
  its queries tie);
- **tied queries**: in some batch the max query does not activate it more than the min query;
- **degenerate visualisations** (synthetic condition): an image whose pixels barely vary (a flat field:
  the optimisation never moved, as at a unit whose gradient vanishes at grey images);
- **visualisations that do not beat the exemplars**: fewer than ``min_beating`` of a side's images
  activate the unit beyond its most extreme natural exemplar (by default none does: the 2023
  release skipped a unit whose non-diverse visualisations did not beat its exemplars);
- **visualisations that take another path**: more than ``max_path_outliers`` of a side's images are
  flagged by the path sanity check (:mod:`stimuli.fv_sanity`).

The build (:mod:`stimuli.build`) makes a refused unit's visualisations again where that can help (flat
images, or images that do not beat the exemplars: ``retries``, each with a new seed and its method's
retry settings), and then puts the next reserve unit of the same model,
layer and kind in its place (``replacements``), or stops (``on_failure: stop``). Each verdict is
recorded (``.work/verdicts/``), and the bundle's manifest lists every unit that was replaced, and why.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from contracts.config import Strict

SIDES = ("max", "min")


class AcceptanceConfig(Strict):
    """When a unit's stimuli are good enough to show, and what the build does when they are not."""

    min_beating: float = Field(
        0.1,
        ge=0,
        le=1,
        description="share of each side's visualisations that must beat the unit's most extreme exemplar (0.1: one "
        "of 9, the non-diverse image, the 2023 release's rule; 1: every image)",
    )
    max_path_outliers: float = Field(
        0.5, ge=0, le=1, description="share of each side's visualisations the path sanity check may flag"
    )
    min_pixel_sd: float = Field(
        2.0, ge=0, description="a visualisation whose pixel standard deviation (0-255) is below this is a flat image"
    )
    retries: int = Field(
        1, ge=0, description="times a refused unit's visualisations are made again (new seed, the method's retry)"
    )
    replacements: int = Field(
        3, ge=0, description="reserve units of the same model, layer and kind tried in a refused unit's place"
    )
    on_failure: Literal["replace", "stop"] = Field(
        "replace", description="replace: a refused unit gives way to a reserve; stop: the build ends with an error"
    )


def exemplar_problems(targets: tuple[float, float], query_pairs: Sequence[tuple[float, float]]) -> list[str]:
    """What makes a unit's natural stimuli useless: ``targets`` are its most extreme activations (max, min)
    over the dataset, ``query_pairs`` each batch's (max query, min query) activations."""
    if not np.isfinite(targets).all() or targets[0] <= targets[1]:
        return [f"dead: the same activation ({targets[0]:.4g}) on every dataset image"]
    tied = [b for b, (high, low) in enumerate(query_pairs) if not high > low]
    if tied:
        return [f"tied queries: in batch(es) {tied} the max query does not activate the unit more than the min query"]
    return []


def pixel_sd(pixels: np.ndarray) -> float:
    """The mean over colour channels of the pixels' standard deviation (0-255): how much an image varies."""
    return float(np.asarray(pixels, dtype=np.float64).reshape(-1, pixels.shape[-1]).std(axis=0).mean())


FLAT = "images are flat"
NOT_BEATING = "beat the most extreme exemplar"


def retry_can_help(problems: Sequence[str]) -> bool:
    """Whether new visualisations may mend these problems: flat images are the optimisation's failure
    (it never moved), and so may be images too weak but on the exemplars' path; images that take a path
    of their own, or dead exemplars, are the unit's."""
    return any(FLAT in p for p in problems) or all(NOT_BEATING in p for p in problems)


def visualisation_problems(images: Sequence[Mapping[str, Any]], rules: AcceptanceConfig) -> list[str]:
    """What makes a unit's visualisations unfit to show; ``images`` are its stored records (direction,
    beats_exemplars, path_outlier, pixel_sd)."""
    problems = []
    for side in SIDES:
        mine = [image for image in images if image["direction"] == side]
        if not mine:
            problems.append(f"{side} side: no visualisations")
            continue
        flat = [image["pixel_sd"] for image in mine if image["pixel_sd"] < rules.min_pixel_sd]
        if flat:
            problems.append(
                f"{side} side: {len(flat)} of {len(mine)} {FLAT} (pixel SD {min(flat):.2g} < {rules.min_pixel_sd:g})"
            )
        beating = sum(bool(image["beats_exemplars"]) for image in mine)
        if beating < rules.min_beating * len(mine):
            problems.append(
                f"{side} side: {beating} of {len(mine)} images {NOT_BEATING} (at least {rules.min_beating:.0%} must)"
            )
        flagged = sum(bool(image.get("path_outlier")) for image in mine)
        if flagged > rules.max_path_outliers * len(mine):
            problems.append(
                f"{side} side: {flagged} of {len(mine)} images flagged by the path sanity check "
                f"(at most {rules.max_path_outliers:.0%} may be)"
            )
    return problems
