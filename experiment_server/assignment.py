"""Atomic task assignment with expiring reservations, an allocation strategy and a stopping rule."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Integer, cast, func, select, true, update
from sqlalchemy.orm import Session

from contracts.bundle import Task
from experiment_server.allocation import ALLOCATIONS, Cell, cell_done, cell_precision, least_filled_task
from experiment_server.config import ServerConfig
from experiment_server.db import ParticipantSession, Response, Study

# Sessions that hold their task: valid completions, and running sessions whose reservation is live.
FILLING = ("active", "completed")


def least_filled(task_ids: Sequence[str], fill: Mapping[str, int]) -> str:
    """The task with the fewest valid completions plus live reservations; ties go to bundle order."""
    order = {t: i for i, t in enumerate(task_ids)}
    return min(task_ids, key=lambda t: (fill.get(t, 0), order[t]))


def lock_study(db: Session, study_id: str) -> None:
    """Take the study row's write lock (PostgreSQL row lock; SQLite's database write lock) until commit.

    It is the transaction's first statement, so on SQLite the snapshot that the
    following reads see starts after the lock is held.
    """
    db.execute(update(Study).where(Study.study_id == study_id).values(assignments=Study.assignments + 1))


def expire_reservations(db: Session, study_id: str, now: datetime) -> int:
    result = db.execute(
        update(ParticipantSession)
        .where(
            ParticipantSession.study_id == study_id,
            ParticipantSession.status == "active",
            ParticipantSession.reserved_until < now,
        )
        .values(status="expired")
    )
    return result.rowcount


def task_fill(db: Session, study_id: str) -> Counter:
    rows = db.execute(
        select(ParticipantSession.task_id, func.count())
        .where(ParticipantSession.study_id == study_id, ParticipantSession.status.in_(FILLING))
        .group_by(ParticipantSession.task_id)
    ).all()
    return Counter({task: n for task, n in rows if task is not None})


@dataclass(frozen=True)
class Allocation:
    """What the server config and the bundle say about filling cells (built once per app)."""

    strategy: object  # an ALLOCATIONS value
    target: float | None  # the stopping rule's half-width (proportion)
    min_fill: int
    max_fill: int | None
    cells: Mapping[tuple[str, str], tuple[str, ...]]  # (model, condition) -> its task ids, in bundle order
    unit_of: Mapping[str, str]  # main trial id -> unit id
    catch_ids: frozenset[str]
    task_order: Mapping[str, int]
    trials_per_task: Mapping[str, int]  # main trials

    @property
    def adaptive(self) -> bool:
        """Whether assignment needs the cells' states (a stopping rule, or a strategy other than balanced)."""
        return self.target is not None or self.max_fill is not None or self.strategy.needs_target

    @classmethod
    def of(cls, config: ServerConfig, tasks: Mapping[str, Task]) -> Allocation:
        cells: dict[tuple[str, str], list[str]] = defaultdict(list)
        unit_of, catch = {}, set()
        for task in tasks.values():
            cells[(task.model_id, task.condition)].append(task.task_id)
            for trial in task.trials:
                if trial.kind == "main":
                    unit_of[trial.trial_id] = trial.unit_id
                elif trial.kind == "catch":
                    catch.add(trial.trial_id)
        rule = config.stopping
        return cls(
            ALLOCATIONS[config.allocation],
            rule.half_width_pp / 100 if rule is not None and rule.half_width_pp is not None else None,
            rule.min_participants_per_cell if rule is not None else 0,
            rule.max_participants_per_cell if rule is not None else None,
            {key: tuple(ids) for key, ids in cells.items()},
            unit_of,
            frozenset(catch),
            {t: i for i, t in enumerate(tasks)},
            {t.task_id: sum(trial.kind == "main" for trial in t.trials) for t in tasks.values()},
        )


def cell_states(db: Session, study_id: str, allocation: Allocation, fill: Mapping[str, int]) -> list[Cell]:
    """Each cell's fill (running and completed sessions) and precision (SQL aggregates of completed, valid
    sessions' main answers)."""
    # Completed, valid sessions only: a running session's answers could be a script's, placed to make a
    # cell look precise (and stop the study) or noisy (and draw paid participants to it) before it fails.
    live = (
        ParticipantSession.study_id == study_id,
        ParticipantSession.status == "completed",
        ParticipantSession.excluded_by_experimenter.is_(False),
        Response.phase == "main",
    )
    by_trial = db.execute(
        select(ParticipantSession.task_id, Response.trial_id, func.count(), func.sum(cast(Response.correct, Integer)))
        .join(Response)
        .where(*live)
        .group_by(ParticipantSession.task_id, Response.trial_id)
    ).all()
    by_session = db.execute(
        select(
            ParticipantSession.task_id, ParticipantSession.id, func.count(), func.sum(cast(Response.correct, Integer))
        )
        .join(Response)
        .where(*live, Response.trial_id.not_in(allocation.catch_ids) if allocation.catch_ids else true())
        .group_by(ParticipantSession.task_id, ParticipantSession.id)
    ).all()
    cell_of = {t: key for key, ids in allocation.cells.items() for t in ids}
    units: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for task_id, trial_id, n, k in by_trial:
        if (unit := allocation.unit_of.get(trial_id)) is not None and task_id in cell_of:
            units[cell_of[task_id]][(unit, "n")] += n
            units[cell_of[task_id]][(unit, "k")] += k or 0
    participants: dict[tuple[str, str], list] = defaultdict(list)
    for task_id, _, n, k in by_session:
        if task_id in cell_of:
            participants[cell_of[task_id]].append((n, k or 0))
    states = []
    for key, ids in allocation.cells.items():
        counts = units[key]
        unit_counts = [(counts[(u, "n")], counts[(u, "k")]) for u in {u for u, _ in counts}]
        states.append(Cell(*key, ids, sum(fill.get(t, 0) for t in ids), cell_precision(unit_counts, participants[key])))
    return states


def choose_task(
    db: Session, study_id: str, task_ids: Sequence[str], now: datetime, allocation: Allocation | None = None
) -> str | None:
    """Inside the caller's transaction: lock, release expired reservations, pick a task (None: the study is full).

    Without a stopping rule and with the balanced strategy this is the least-filled task. Otherwise
    each cell's state is computed under the lock; cells that met the stopping rule are closed, the
    strategy picks among the open ones, and the cell's least-filled task is taken. When no cell is
    open the study row records when and why it stopped, and later arrivals are told it is full.
    """
    lock_study(db, study_id)
    expire_reservations(db, study_id, now)
    fill = task_fill(db, study_id)
    if allocation is None or not allocation.adaptive:
        return least_filled(task_ids, fill)
    study = db.get(Study, study_id)
    if study is not None and study.stopped_at is not None:
        return None
    cells = cell_states(db, study_id, allocation, fill)
    reasons = {c.name: cell_done(c, allocation.target, allocation.min_fill, allocation.max_fill) for c in cells}
    open_cells = [c for c in cells if reasons[c.name] is None]
    if not open_cells:
        if study is not None:
            study.stopped_at = now
            study.stop_reason = "every cell met the stopping rule: " + "; ".join(
                f"{name}: {why}" for name, why in reasons.items()
            )
        return None
    return least_filled_task(allocation.strategy.pick(open_cells, allocation.target), fill, allocation.task_order)


def reservation_end(now: datetime, minutes: float) -> datetime:
    return now + timedelta(minutes=minutes)
