"""The unit microscope (pure): what participants saw for each unit, beside how they did on it.

For every unit of a bundle: its natural exemplars by batch and rank with their activations, its
feature visualisations with their diversity weight and whether each beats the exemplars, the
query images of each of its trials as shown with the answer marked, human accuracy per condition
with its interval, the confidence and response-time distributions, the machine score, and its
layer and depth. :mod:`analysis.report` renders these as ``units/<unit>.html`` and a sortable
index; the images are referenced from the bundle, never copied per page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import proportion_confint

from contracts.bundle import Bundle, Unit

RT_BINS_S = (0, 1, 2, 3, 5, 8, 13, 21, float("inf"))  # seconds, for the response-time histogram


@dataclass(frozen=True)
class Image:
    sha256: str
    activation: float | None
    caption: str
    marked: bool = False  # the correct query, or a visualisation that does not beat the exemplars


@dataclass(frozen=True)
class ShownTrial:
    trial_id: str
    condition: str
    kind: str
    batch: int
    queries: list[Image]


@dataclass(frozen=True)
class HumanResult:
    condition: str
    n_responses: int
    n_participants: int
    accuracy: float
    ci_low: float
    ci_high: float
    confidence_counts: dict[int, int]
    rt_counts: list[tuple[str, int]]  # (bin label, responses)
    rt_median_s: float | None
    machine_score: float | None = None


@dataclass(frozen=True)
class UnitView:
    unit: Unit
    model_name: str
    relative_depth: float | None
    dictionary: str | None  # where a direction came from, in words
    batches: dict[int, dict[str, list[Image]]]  # batch -> side ("max", "min") -> exemplars, most extreme first
    visualisations: dict[str, list[Image]]  # side -> images
    trials: list[ShownTrial]
    human: list[HumanResult] = field(default_factory=list)


def _rt_histogram(rt_ms: pd.Series) -> list[tuple[str, int]]:
    seconds = rt_ms.dropna().to_numpy(float) / 1000
    counts, _ = np.histogram(seconds, bins=np.asarray(RT_BINS_S))
    edges = list(zip(RT_BINS_S[:-1], RT_BINS_S[1:], strict=True))
    labels = [f"{lo:g}–{hi:g} s" if np.isfinite(hi) else f"≥ {lo:g} s" for lo, hi in edges]
    return list(zip(labels, (int(c) for c in counts), strict=True))


def human_results(responses: pd.DataFrame, machine: pd.DataFrame | None = None) -> dict[str, list[HumanResult]]:
    """Per unit and condition: accuracy with its Wilson 95% interval (each participant answers a unit
    about once, so its responses are nearly independent), confidence counts and the RT histogram."""
    main = responses[responses["trial_kind"] == "main"] if "trial_kind" in responses else responses
    scores = {}
    if machine is not None:
        scores = {(r.unit_id, r.condition): float(r.machine_score) for r in machine.itertuples()}
    out: dict[str, list[HumanResult]] = {}
    for (unit_id, condition), rows in main.groupby(["unit_id", "condition"], sort=True):
        k, n = int(rows["correct"].sum()), len(rows)
        low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
        rt = rows["rt_ms"] if "rt_ms" in rows else pd.Series(dtype=float)
        out.setdefault(unit_id, []).append(
            HumanResult(
                condition=condition,
                n_responses=n,
                n_participants=int(rows["participant_id"].nunique()),
                accuracy=k / n,
                ci_low=float(low),
                ci_high=float(high),
                confidence_counts={c: int((rows["confidence"] == c).sum()) for c in (1, 2, 3)},
                rt_counts=_rt_histogram(rt) if len(rt.dropna()) else [],
                rt_median_s=float(rt.median() / 1000) if len(rt.dropna()) else None,
                machine_score=scores.get((unit_id, condition)),
            )
        )
    return out


def unit_views(bundle: Bundle, model_names: Mapping[str, str]) -> list[UnitView]:
    """Every unit of the bundle as the microscope shows it (no responses yet: see :func:`human_results`)."""
    manifest, answers = bundle.manifest, bundle.answer_key.answers
    by_unit: dict[str, list] = {}
    for image in manifest.reference_images:
        by_unit.setdefault(image.unit_id, []).append(image)
    trials_by_unit: dict[str, list] = {}
    for trial in manifest.all_trials():
        trials_by_unit.setdefault(trial.unit_id, []).append(trial)
    views = []
    for unit in manifest.units:
        batches: dict[int, dict[str, list[Image]]] = {}
        visualisations: dict[str, list[Image]] = {"max": [], "min": []}
        for image in by_unit.get(unit.unit_id, []):
            if image.kind == "natural":
                side = batches.setdefault(image.batch or 0, {"max": [], "min": []})[image.direction]
                side.append(Image(image.sha256, image.activation, f"rank {image.rank}"))
            else:
                words = f"α {image.diversity:.3g}" if image.diversity else "not diverse"
                beats = "beats the exemplars" if image.beats_exemplars else "does not beat the exemplars"
                visualisations[image.direction].append(
                    Image(image.sha256, image.activation, f"{words}; {beats}", marked=not image.beats_exemplars)
                )
        for sides in batches.values():
            for images in sides.values():
                images.sort(key=lambda i: int(i.caption.split()[1]))
        shown = []
        for trial in sorted(trials_by_unit.get(unit.unit_id, []), key=lambda t: (t.kind != "main", t.trial_id)):
            answer = answers[trial.trial_id]
            acts = answer.query_activations or [None] * len(trial.queries)
            ranks = answer.query_ranks or [None] * len(trial.queries)
            queries = [
                Image(sha, act, f"rank {rank}" if rank else "", marked=i == answer.max_query)
                for i, (sha, act, rank) in enumerate(zip(trial.queries, acts, ranks, strict=True))
            ]
            shown.append(ShownTrial(trial.trial_id, trial.condition, trial.kind, trial.batch, queries))
        depth = (
            unit.layer_index / (unit.n_layers - 1)
            if unit.layer_index is not None and unit.n_layers and unit.n_layers > 1
            else None
        )
        dictionary = None
        if unit.selector is not None and unit.selector.kind != "channel":
            found = manifest.dictionary(unit.model_id, unit.layer or "", unit.selector.dictionary)
            if found is not None:
                fit = ", ".join(f"{k} {v:.3g}" for k, v in found.fit.items())
                dictionary = f"row {unit.selector.index} of {found.name} ({found.method}: {found.source}; {fit})"
        views.append(
            UnitView(
                unit=unit,
                model_name=model_names.get(unit.model_id, unit.model_id),
                relative_depth=depth,
                dictionary=dictionary,
                batches=dict(sorted(batches.items())),
                visualisations=visualisations,
                trials=shown,
            )
        )
    return views
