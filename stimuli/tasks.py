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
    queries: Mapping[str, QueryImage]  # by the paradigm's query role ("max", "min")


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
    trial = Trial(
        trial_id=trial_id,
        unit_id=stim.unit_id,
        condition=condition,
        kind=planned.kind,
        batch=planned.batch,
        max_side=max_side,
        references=References(min=list(refs["min"][0]), max=list(refs["max"][0])),
        queries=[q.sha256 for q in shown],
    )
    answer = Answer(
        max_query=paradigm.answer_position(order),
        query_activations=[q.activation for q in shown],
        query_ranks=[q.rank for q in shown],
        query_sources=[q.source for q in shown],
    )
    return trial, answer


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
) -> tuple[list[Task], list[Trial], dict[str, Answer]]:
    """Trials of ``paradigm`` for every plan entry; returns tasks, practice trials and the answer key."""
    rng = np.random.default_rng([seed, 1])
    answers: dict[str, Answer] = {}
    tasks = []
    for task in plan.tasks:
        trials = []
        for index, (planned, side) in enumerate(zip(task.trials, _sides(len(task.trials), max_side, rng), strict=True)):
            trial_id = f"{task.task_id}__{index:02d}"
            stim = stimuli[planned.unit_id]
            trial, answers[trial_id] = _trial(trial_id, planned, task.condition, side, stim, paradigm, rng)
            trials.append(trial)
        tasks.append(Task(task_id=task.task_id, condition=task.condition, model_id=task.model_id, trials=trials))
    practice = []
    for condition, planned_trials in plan.practice.items():
        for index, (planned, side) in enumerate(
            zip(planned_trials, _sides(len(planned_trials), max_side, rng), strict=True)
        ):
            trial_id = f"practice__{condition}__{index:02d}"
            stim = stimuli[planned.unit_id]
            trial, answers[trial_id] = _trial(trial_id, planned, condition, side, stim, paradigm, rng)
            practice.append(trial)
    return tasks, practice, answers
