"""The task builder (pure): deal units into tasks, then assemble trials from stored images.

Dealing comes first so that only the (unit, batch) pairs that some trial uses
need their images stored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from contracts.bundle import Answer, References, Task, Trial
from contracts.errors import PsychinterpError
from contracts.paradigms import TWO_AFC, Paradigm

MaxSide = Literal["counterbalanced", "right"]  # where the max references are shown


@dataclass(frozen=True)
class QueryImage:
    """A query candidate of one batch: its hash, activation, rank from its end, and dataset path."""

    sha256: str
    activation: float
    rank: int
    source: str


@dataclass(frozen=True)
class BatchImages:
    """Hashes and facts of one batch of one unit (natural exemplars and queries)."""

    natural_min: tuple[str, ...]  # most extreme first
    natural_max: tuple[str, ...]
    natural_min_activations: tuple[float, ...]
    natural_max_activations: tuple[float, ...]
    # By the paradigm's query role ("max", "min"), and "random" when the build drew random images.
    queries: Mapping[str, QueryImage]
    # The references as candidate queries, per side (an odd-one-out trial shows some of them).
    references: Mapping[str, tuple[QueryImage, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class UnitStimuli:
    unit_id: str
    batches: Mapping[int, BatchImages]
    synthetic_min: tuple[str, ...] = ()
    synthetic_max: tuple[str, ...] = ()
    synthetic_min_activations: tuple[float, ...] = ()
    synthetic_max_activations: tuple[float, ...] = ()


@dataclass(frozen=True)
class PlannedTrial:
    unit_id: str
    batch: int
    kind: Literal["main", "catch", "practice"] = "main"


@dataclass(frozen=True)
class TaskPlan:
    task_id: str
    condition: str
    model_id: str
    trials: tuple[PlannedTrial, ...]


@dataclass(frozen=True)
class StudyPlan:
    tasks: tuple[TaskPlan, ...]
    practice: Mapping[str, tuple[PlannedTrial, ...]] = field(default_factory=dict)

    def needed_batches(self) -> set[tuple[str, int]]:
        pairs = {(t.unit_id, t.batch) for task in self.tasks for t in task.trials}
        return pairs | {(t.unit_id, t.batch) for trials in self.practice.values() for t in trials}


def _deal_units(
    unit_ids: Sequence[str], repetitions: int, trials_per_task: int, rng: np.random.Generator
) -> list[list[str]]:
    """Each unit ``repetitions`` times and at most once per task.

    The units, in one random order, are repeated cyclically and cut into
    consecutive runs of ``trials_per_task``: any run no longer than the cycle
    holds distinct units. Only the last task can be shorter.
    """
    if trials_per_task > len(unit_ids):
        raise PsychinterpError(
            f"trials_per_task ({trials_per_task}) exceeds the {len(unit_ids)} units of a model, "
            "so a unit would appear twice in one task: use fewer trials per task or more units"
        )
    order = [str(u) for u in rng.permutation(np.asarray(unit_ids, dtype=object))]
    sequence = [order[p % len(order)] for p in range(len(order) * repetitions)]
    return [sequence[k : k + trials_per_task] for k in range(0, len(sequence), trials_per_task)]


def plan_study(
    units_by_model: Mapping[str, Sequence[str]],
    conditions: Sequence[str],
    *,
    repetitions: int,
    trials_per_task: int,
    catch_trials_per_task: int,
    batches: int,
    practice_units: Sequence[str] = (),
    seed: int = 0,
) -> StudyPlan:
    """Deal every model's units into tasks of one model and one condition.

    A unit's k-th appearance (over all tasks of a condition) uses batch ``k mod
    batches``; catch trials use units of the same model outside the task's main
    trials; practice trials use ``practice_units`` with the last batch.
    """
    rng = np.random.default_rng(seed)
    tasks: list[TaskPlan] = []
    for condition in conditions:
        for model_id, unit_ids in units_by_model.items():
            seen: dict[str, int] = {}
            for k, main_units in enumerate(_deal_units(unit_ids, repetitions, trials_per_task, rng)):
                trials = []
                for unit in main_units:
                    trials.append(PlannedTrial(unit, seen.get(unit, 0) % batches))
                    seen[unit] = seen.get(unit, 0) + 1
                if condition != "none" and catch_trials_per_task:
                    spare = [u for u in unit_ids if u not in main_units] or list(unit_ids)
                    chosen = rng.choice(
                        len(spare), size=catch_trials_per_task, replace=len(spare) < catch_trials_per_task
                    )
                    trials += [PlannedTrial(spare[i], batches - 1, "catch") for i in chosen]
                order = rng.permutation(len(trials))
                tasks.append(
                    TaskPlan(f"{condition}__{model_id}__{k:03d}", condition, model_id, tuple(trials[i] for i in order))
                )
    practice = {c: tuple(PlannedTrial(u, batches - 1, "practice") for u in practice_units) for c in conditions}
    return StudyPlan(tasks=tuple(tasks), practice=practice)


def practice_unit_ranking(separation: Mapping[str, float]) -> list[str]:
    """Units whose max and min exemplars are most clearly separated come first."""
    return sorted(separation, key=lambda u: (-separation[u], u))


def _references(condition: str, images: BatchImages, stim: UnitStimuli) -> dict[str, tuple[tuple, tuple]]:
    """Per side, the reference hashes and their activations that ``condition`` shows."""
    if condition == "natural":
        return {
            "max": (images.natural_max, images.natural_max_activations),
            "min": (images.natural_min, images.natural_min_activations),
        }
    if condition == "synthetic":
        return {
            "max": (stim.synthetic_max, stim.synthetic_max_activations),
            "min": (stim.synthetic_min, stim.synthetic_min_activations),
        }
    return {"max": ((), ()), "min": ((), ())}


def _shown(
    trial_id: str,
    planned: PlannedTrial,
    condition: str,
    stim: UnitStimuli,
    max_side: str | None,
    references: References,
    shown: Sequence[QueryImage],
    answer_position: int,
) -> tuple[Trial, Answer]:
    """The trial as the page shows it, and its answer: which of ``shown`` is correct, and every query's facts."""
    trial = Trial(
        trial_id=trial_id,
        unit_id=stim.unit_id,
        condition=condition,
        kind=planned.kind,
        batch=planned.batch,
        max_side=max_side,
        references=references,
        queries=[q.sha256 for q in shown],
    )
    answer = Answer(
        max_query=answer_position,
        query_activations=[q.activation for q in shown],
        query_ranks=[q.rank for q in shown],
        query_sources=[q.source for q in shown],
    )
    return trial, answer


def _trial(
    trial_id: str,
    planned: PlannedTrial,
    condition: str,
    max_side: str,
    stim: UnitStimuli,
    paradigm: Paradigm,
    rng: np.random.Generator,
) -> tuple[Trial, Answer]:
    images = stim.batches[planned.batch]
    refs = _references(condition, images, stim)
    roles = paradigm.query_roles
    if planned.kind == "catch":
        # Every query is a copy of a reference of its side, so an attentive participant cannot miss.
        picks = [int(v) for v in rng.integers(len(refs["max"][0]), size=len(roles))]
        queries = [
            QueryImage(refs[role][0][i], refs[role][1][i], i + 1, "reference-image")
            for role, i in zip(roles, picks, strict=True)
        ]
    else:
        queries = [images.queries[role] for role in roles]
    order = paradigm.query_order(int(rng.integers(paradigm.n_orders)))
    shown = [queries[i] for i in order]
    references = References(min=list(refs["min"][0]), max=list(refs["max"][0]))
    return _shown(trial_id, planned, condition, stim, max_side, references, shown, paradigm.answer_position(order))


def _side_images(condition: str, images: BatchImages, stim: UnitStimuli, side: str, batch: int, n: int) -> list:
    """Candidate images of one side: the batch's natural references, or that batch's share of the visualisations."""
    if condition == "natural":
        return list(images.references[side])
    hashes = stim.synthetic_max if side == "max" else stim.synthetic_min
    acts = stim.synthetic_max_activations if side == "max" else stim.synthetic_min_activations
    # Batch b takes visualisations [b n, (b + 1) n): no image repeats across a unit's batches.
    return [
        QueryImage(hashes[i], acts[i], i + 1, "feature-visualisation")
        for i in range(batch * n, min((batch + 1) * n, len(hashes)))
    ]


def _odd_one_out_trial(
    trial_id: str,
    planned: PlannedTrial,
    condition: str,
    stim: UnitStimuli,
    paradigm: Paradigm,
    odd_position: int,
    odd_image: str,
    rng: np.random.Generator,
) -> tuple[Trial, Answer]:
    """n - 1 of the unit's most activating images and one odd image, the odd one at ``odd_position``.

    A catch trial shows one max image n - 1 times beside the odd image, so an attentive participant cannot miss.
    """
    images = stim.batches[planned.batch]
    n_max = paradigm.n_queries - 1
    tops = _side_images(condition, images, stim, "max", planned.batch, n_max)
    if planned.kind == "catch":
        chosen = [tops[int(rng.integers(len(tops)))]] * n_max
    else:
        chosen = [tops[i] for i in rng.choice(len(tops), size=n_max, replace=False)]
    if odd_image == "random":
        odd = images.queries["random"]
    else:
        bottoms = _side_images(condition, images, stim, "min", planned.batch, 1 if condition == "synthetic" else 0)
        odd = bottoms[int(rng.integers(len(bottoms)))]
    shown = list(chosen)
    shown.insert(odd_position, odd)
    return _shown(trial_id, planned, condition, stim, None, References(), shown, odd_position)


def _odd_positions(n_trials: int, n_queries: int, rng: np.random.Generator) -> list[int]:
    """Where each trial's odd image goes: every position equally often (up to one), in a random order."""
    cycles = [int(p) for _ in range(-(-n_trials // n_queries)) for p in rng.permutation(n_queries)]
    return [cycles[i] for i in rng.permutation(n_trials)]


def _sides(n: int, mode: MaxSide, rng: np.random.Generator) -> list[str]:
    if mode == "right":
        return ["right"] * n
    sides = ["left", "right"] * (n // 2) + ([str(rng.choice(["left", "right"]))] if n % 2 else [])
    return [sides[i] for i in rng.permutation(n)]


def assemble_tasks(
    plan: StudyPlan,
    stimuli: Mapping[str, UnitStimuli],
    max_side: MaxSide = "counterbalanced",
    seed: int = 0,
    paradigm: Paradigm = TWO_AFC,
    odd_image: str = "least",
) -> tuple[list[Task], list[Trial], dict[str, Answer]]:
    """Trials of ``paradigm`` for every plan entry; returns tasks, practice trials and the answer key."""
    rng = np.random.default_rng([seed, 1])
    answers: dict[str, Answer] = {}

    def make(trial_id: str, planned: PlannedTrial, condition: str, layout) -> Trial:
        stim = stimuli[planned.unit_id]
        if paradigm.shows_references:
            trial, answers[trial_id] = _trial(trial_id, planned, condition, layout, stim, paradigm, rng)
        else:
            trial, answers[trial_id] = _odd_one_out_trial(
                trial_id, planned, condition, stim, paradigm, layout, odd_image, rng
            )
        return trial

    def layouts(n: int) -> list:
        # Per trial: the max references' side (2AFC), or the odd image's position, each balanced over the block.
        return _sides(n, max_side, rng) if paradigm.shows_references else _odd_positions(n, paradigm.n_queries, rng)

    tasks = []
    for task in plan.tasks:
        trials = [
            make(f"{task.task_id}__{index:02d}", planned, task.condition, layout)
            for index, (planned, layout) in enumerate(zip(task.trials, layouts(len(task.trials)), strict=True))
        ]
        tasks.append(Task(task_id=task.task_id, condition=task.condition, model_id=task.model_id, trials=trials))
    practice = []
    for condition, planned_trials in plan.practice.items():
        for index, (planned, layout) in enumerate(zip(planned_trials, layouts(len(planned_trials)), strict=True)):
            practice.append(make(f"practice__{condition}__{index:02d}", planned, condition, layout))
    return tasks, practice, answers
