"""Which cell (model x condition) the next participant serves, and when a cell or the study is done.

An allocation strategy is a small value with a ``pick`` (the open table :data:`ALLOCATIONS`, from
which the server config's ``allocation`` names are derived). Each looks at :class:`Cell` states
computed inside the assignment's lock from SQL aggregates of the stored main responses:

- ``balanced``: the least-filled cell (today's rule: with no stopping rule every cell stays open);
- ``precision``: the cell whose interval half-width lies furthest above the stopping rule's target
  (a cell with too few answers to estimate it first), ties broken by fill.

A cell's half-width is t sqrt(V) (t on min(units, participants) - 1 df), V the variance of its
accuracy (the mean of its units' accuracies)
with units and participants crossed, each source counted once: var(units) / U + var(participants) / P
- p (1 - p) / N (the answer noise, which each of the first two holds once; Owen's pigeonhole
correction), never below either of the first two. Its floor, what no number of further participants
removes with the bundle's units fixed, is the units' own spread over U.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

Z95 = 1.959963984540054

# Per unit or per participant: (answers, correct answers).
Counts = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class Precision:
    """A cell's estimated 95 % half-width and the part of it that more participants cannot remove."""

    half_width: float
    floor: float
    responses: int

    def responses_needed(self, target: float) -> float:
        """Responses the cell needs in all for ``target`` (inf when the units' spread alone is wider)."""
        if self.half_width <= target:
            return float(self.responses)
        if self.floor >= target:
            return math.inf
        reducible = (self.half_width / Z95) ** 2 - (self.floor / Z95) ** 2
        room = (target / Z95) ** 2 - (self.floor / Z95) ** 2
        return self.responses * reducible / room


def _spread(counts: Counts) -> tuple[float, int]:
    """The variance over groups of their proportion correct, and how many groups answered."""
    rates = [k / n for n, k in counts if n > 0]
    if len(rates) < 2:
        return math.nan, len(rates)
    mean = sum(rates) / len(rates)
    return sum((r - mean) ** 2 for r in rates) / (len(rates) - 1), len(rates)


def cell_precision(units: Counts, participants: Counts) -> Precision | None:
    """The half-width of a cell's accuracy from per-unit and per-participant counts (None: too few)."""
    unit_var, n_units = _spread(units)
    participant_var, n_participants = _spread(participants)
    total = sum(n for n, _ in units)
    if math.isnan(unit_var) or math.isnan(participant_var) or total == 0:
        return None
    p = sum(k for _, k in units) / total
    by_units, by_participants = unit_var / n_units, participant_var / n_participants
    variance = max(by_units + by_participants - p * (1 - p) / total, by_units, by_participants)
    # The units' own spread: their accuracies' variance less the answer noise each one carries.
    noise = sum(p * (1 - p) / n for n, _ in units if n > 0) / n_units
    floor = max(unit_var - noise, 0.0) / n_units
    # A t quantile on the scarcer factor's df: with few participants the variance is itself uncertain,
    # and a stopping rule that trusted a lucky small estimate would stop early and under-cover.
    quantile = float(stats.t.ppf(0.975, min(n_units, n_participants) - 1))
    return Precision(quantile * math.sqrt(variance), Z95 * math.sqrt(floor), total)


@dataclass(frozen=True)
class Cell:
    """One model x condition: its tasks, how many sessions hold it, and its precision so far."""

    model_id: str
    condition: str
    tasks: tuple[str, ...]
    fill: int  # active and completed sessions
    precision: Precision | None

    @property
    def name(self) -> str:
        return f"{self.model_id} / {self.condition}"


@dataclass(frozen=True)
class Balanced:
    """Today's rule: the least-filled open cell."""

    name: str = "balanced"
    needs_target: bool = False

    def pick(self, cells: Sequence[Cell], target: float | None) -> Cell:
        return min(cells, key=lambda c: c.fill)


@dataclass(frozen=True)
class PrecisionFirst:
    """The open cell whose half-width is furthest above the target; unestimated cells first."""

    name: str = "precision"
    needs_target: bool = True

    def pick(self, cells: Sequence[Cell], target: float | None) -> Cell:
        def gap(cell: Cell) -> float:
            return math.inf if cell.precision is None else cell.precision.half_width - (target or 0.0)

        return min(cells, key=lambda c: (-gap(c), c.fill))


ALLOCATIONS = {strategy.name: strategy for strategy in (Balanced(), PrecisionFirst())}


def cell_done(cell: Cell, target: float | None, min_fill: int, max_fill: int | None) -> str | None:
    """Why a cell takes no new participants (None: it is open)."""
    if max_fill is not None and cell.fill >= max_fill:
        return f"reached {max_fill} participants"
    if target is not None and cell.fill >= min_fill and cell.precision is not None:
        if cell.precision.half_width <= target:
            return f"half-width {100 * cell.precision.half_width:.2f} pp <= {100 * target:.2f} pp"
    return None


def least_filled_task(cell: Cell, fill: Mapping[str, int], order: Mapping[str, int]) -> str:
    return min(cell.tasks, key=lambda t: (fill.get(t, 0), order[t]))
