"""The task builder (pure): trials from units and conditions, dealt into tasks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stimuli.bundle import Answer, References, Task, Trial


@dataclass(frozen=True)
class UnitStimuli:
    """Image hashes for one unit, most extreme first, and the query facts."""

    unit_id: str
    natural_min: Sequence[str]
    natural_max: Sequence[str]
    synthetic_min: Sequence[str]
    synthetic_max: Sequence[str]
    max_query: str
    min_query: str
    max_query_activation: float
    min_query_activation: float
    query_rank: int
    max_query_source: str
    min_query_source: str


def build_tasks(
    units: Sequence[UnitStimuli], conditions: Sequence[str], trials_per_task: int, seed: int
) -> tuple[list[Task], dict[str, Answer]]:
    """One trial per unit and condition; sides and query order seeded; tasks of ``trials_per_task``."""
    rng = np.random.default_rng(seed)
    trials: list[Trial] = []
    answers: dict[str, Answer] = {}
    for condition in conditions:
        for stim in units:
            trial_id = f"{condition}__{stim.unit_id}"
            max_first = bool(rng.integers(2))
            queries = (stim.max_query, stim.min_query) if max_first else (stim.min_query, stim.max_query)
            if condition == "natural":
                refs = References(min=list(stim.natural_min), max=list(stim.natural_max))
            elif condition == "synthetic":
                refs = References(min=list(stim.synthetic_min), max=list(stim.synthetic_max))
            else:
                refs = References()
            trials.append(
                Trial(
                    trial_id=trial_id,
                    unit_id=stim.unit_id,
                    condition=condition,
                    max_side="right" if rng.integers(2) else "left",
                    references=refs,
                    queries=queries,
                )
            )
            acts = (stim.max_query_activation, stim.min_query_activation)
            sources = (stim.max_query_source, stim.min_query_source)
            answers[trial_id] = Answer(
                max_query=0 if max_first else 1,
                query_activations=acts if max_first else acts[::-1],
                query_ranks=(stim.query_rank, stim.query_rank),
                query_sources=sources if max_first else sources[::-1],
            )
    order = rng.permutation(len(trials))
    shuffled = [trials[i] for i in order]
    tasks = [
        Task(task_id=f"task_{k // trials_per_task:03d}", trials=shuffled[k : k + trials_per_task])
        for k in range(0, len(shuffled), trials_per_task)
    ]
    return tasks, answers
