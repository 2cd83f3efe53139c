"""The unit microscope's views (pure): what participants saw for each unit, beside how they did on it.

For every unit of a bundle: its natural exemplars by batch and rank with their activations, its
feature visualisations with their diversity weight and whether each beats the exemplars, the
query images of each of its trials as shown with the answer marked, and its layer and depth.
How people did on it (:class:`HumanResult`) comes from whoever holds the responses: the analysis
renders the report's ``units/`` from a response table, the server renders the same pages live from
its database. Both read the templates beside this module (``templates/unit.html``,
``templates/units_index.html``) and its :data:`ASSETS`, so the two show one page.
"""

from __future__ import annotations

import bisect
import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources

from contracts.bundle import Bundle, Unit

RT_BINS_S = (0, 1, 2, 3, 5, 8, 13, 21, math.inf)  # seconds, for the response-time histogram
CONFIDENCE_LEVELS = (1, 2, 3)
STYLESHEET = "report.css"  # one stylesheet for every page of a report and of the live microscope
INDEX_SCRIPT = "units_index.js"  # sorts and filters the units index (a file: the server's CSP allows no inline script)
ASSETS = {STYLESHEET: "text/css", INDEX_SCRIPT: "text/javascript"}


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
    replaces: list[str] = field(default_factory=list)  # the refused units whose place it took, with why


def template(name: str) -> str:
    """The text of one of the microscope's templates (or its stylesheet)."""
    return resources.files("contracts").joinpath("templates", name).read_text()


def rt_histogram(rt_ms: Sequence[float]) -> list[tuple[str, int]]:
    """Responses per :data:`RT_BINS_S` bin (left-closed), labelled in seconds."""
    counts = [0] * (len(RT_BINS_S) - 1)
    for ms in rt_ms:
        if ms < 0:
            continue  # outside every bin, as numpy's histogram drops it
        counts[min(bisect.bisect_right(RT_BINS_S, ms / 1000) - 1, len(counts) - 1)] += 1
    edges = list(zip(RT_BINS_S[:-1], RT_BINS_S[1:], strict=True))
    labels = [f"{lo:g}–{hi:g} s" if math.isfinite(hi) else f"≥ {lo:g} s" for lo, hi in edges]
    return list(zip(labels, counts, strict=True))


def human_result(
    condition: str,
    correct: Sequence[bool],
    confidence: Sequence[int],
    rt_ms: Sequence[float | None],
    participants: Sequence[object],
    interval: tuple[float, float],
    machine_score: float | None = None,
) -> HumanResult:
    """One unit's main-trial responses in one condition, as the page shows them. ``interval`` is the
    accuracy's 95% interval, computed by the caller (both use statsmodels' Wilson interval)."""
    times = [float(t) for t in rt_ms if t is not None and not math.isnan(t)]
    return HumanResult(
        condition=condition,
        n_responses=len(correct),
        n_participants=len(set(participants)),
        accuracy=sum(map(bool, correct)) / len(correct),
        ci_low=float(interval[0]),
        ci_high=float(interval[1]),
        confidence_counts={c: sum(1 for x in confidence if x == c) for c in CONFIDENCE_LEVELS},
        rt_counts=rt_histogram(times) if times else [],
        rt_median_s=statistics.median(times) / 1000 if times else None,
        machine_score=machine_score,
    )


def unit_views(bundle: Bundle, model_names: Mapping[str, str]) -> list[UnitView]:
    """Every unit of the bundle as the microscope shows it (no responses yet: see :func:`with_human`)."""
    manifest, answers = bundle.manifest, bundle.answer_key.answers
    by_unit: dict[str, list] = {}
    for image in manifest.reference_images:
        by_unit.setdefault(image.unit_id, []).append(image)
    trials_by_unit: dict[str, list] = {}
    for trial in manifest.all_trials():
        trials_by_unit.setdefault(trial.unit_id, []).append(trial)
    took_place_of = {r.replaced_by: r for r in manifest.replaced_units if r.replaced_by}
    views = []
    for unit in manifest.units:
        replaces, before = [], took_place_of.get(unit.unit_id)
        while before is not None:
            replaces.append(f"{before.unit_id} ({'; '.join(before.problems)})")
            before = took_place_of.get(before.unit_id)
        batches: dict[int, dict[str, list[tuple[int, Image]]]] = {}
        visualisations: dict[str, list[Image]] = {"max": [], "min": []}
        for image in by_unit.get(unit.unit_id, []):
            if image.kind == "natural":
                side = batches.setdefault(image.batch or 0, {"max": [], "min": []})[image.direction]
                side.append((image.rank or 0, Image(image.sha256, image.activation, f"rank {image.rank}")))
            else:
                words = f"α {image.diversity:.3g}" if image.diversity else "not diverse"
                beats = "beats the exemplars" if image.beats_exemplars else "does not beat the exemplars"
                path = ""
                if image.path_similarity is not None:
                    flag = ", FLAGGED: a path its exemplars do not use" if image.path_outlier else ""
                    path = f"; path similarity {image.path_similarity:.2f}{flag}"
                method = f"{image.fv_method}: " if image.fv_method else ""
                visualisations[image.direction].append(
                    Image(
                        image.sha256,
                        image.activation,
                        f"{method}{words}; {beats}{path}",
                        marked=not image.beats_exemplars or bool(image.path_outlier),
                    )
                )
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
                batches={
                    b: {s: [i for _, i in sorted(images, key=lambda p: p[0])] for s, images in sides.items()}
                    for b, sides in sorted(batches.items())
                },
                visualisations=visualisations,
                trials=shown,
                replaces=replaces,
            )
        )
    return views


def with_human(views: Sequence[UnitView], human: Mapping[str, list[HumanResult]]) -> list[UnitView]:
    return [replace(v, human=human.get(v.unit.unit_id, [])) for v in views]


def index_rows(views: Sequence[UnitView], model_rank: Mapping[str, int], page: str = "{unit_id}.html") -> list[dict]:
    """The units index: one row per unit and condition (one empty row for a unit nobody answered yet),
    in order of model scale, layer and unit. ``page`` is the link to a unit's page."""
    rows = []
    for view in views:
        for h in view.human or [None]:
            rows.append(
                {
                    "model": view.model_name,
                    "model_rank": model_rank.get(view.unit.model_id, len(model_rank)),
                    "layer": view.unit.layer or "",
                    "depth": f"{view.relative_depth:.2f}" if view.relative_depth is not None else "",
                    "kind": view.unit.unit_kind,
                    "unit": view.unit.selector.id_part if view.unit.selector else view.unit.unit_id,
                    "page": page.format(unit_id=view.unit.unit_id),
                    "condition": h.condition if h else "",
                    "accuracy": f"{h.accuracy:.3f}" if h else "",
                    "ci_low": f"{h.ci_low:.3f}" if h else "",
                    "ci_high": f"{h.ci_high:.3f}" if h else "",
                    "n": h.n_responses if h else 0,
                    "machine": f"{h.machine_score:.3f}" if h and h.machine_score is not None else "",
                }
            )
    rows.sort(key=lambda r: (r["model_rank"], natural_key(r["layer"]), natural_key(r["unit"]), r["condition"]))
    order = {unit: k for k, unit in enumerate(sorted({r["unit"] for r in rows}, key=natural_key))}
    for row in rows:
        row["unit_order"] = order[row["unit"]]  # channel 2 before 11, as a person counts
    return rows


def natural_key(text: str) -> list:
    """Sorts ``"stages.2"`` before ``"stages.11"`` and unit 2 before unit 11: digit runs compare as numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", text)]


def replaced_rows(bundle: Bundle, model_names: Mapping[str, str], page: str = "{unit_id}.html") -> list[dict]:
    """The units the build refused (stimuli/acceptance.py), each with its problems and what took its place."""
    shown = {u.unit_id for u in bundle.manifest.units}
    return [
        {
            "model": model_names.get(r.model_id, r.model_id),
            "layer": r.layer,
            "unit": r.selector.id_part,
            "problems": r.problems,
            "replaced_by": r.replaced_by.rsplit("__", 1)[-1] if r.replaced_by else None,
            "page": page.format(unit_id=r.replaced_by) if r.replaced_by in shown else None,
        }
        for r in bundle.manifest.replaced_units
    ]
