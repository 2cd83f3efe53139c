"""How to spend a budget on a study (pure): units per model, ratings per unit, participants per cell.

A model x condition cell's accuracy is the mean over the model's units of each unit's proportion
correct. Under the simulation model of :mod:`analysis.power` (additive unit, participant and
binomial noise on the proportion scale), with U units, N paid main responses in the cell and T
trials per participant (each participant's trials in one cell), its variance is

    V = s_u^2 / U + (T s_p^2 + b) / N,        b = base (1 - base) - s_u^2 - s_p^2,

since each participant carries T / N of the mean. A unit's stimuli cost ``per_unit`` once for all
conditions; a response costs ``per_trial``. For one model, minimising V under
per_unit U + conditions per_trial N = B gives (Lagrange) U and N in proportion to
sqrt(s_u^2 / per_unit) and sqrt((T s_p^2 + b) / (conditions per_trial)), and

    V_min = (sqrt(s_u^2 per_unit) + sqrt((T s_p^2 + b) conditions per_trial))^2 / B.

Units are the cheap way to precision when the unit spread dominates: the 2023 study rated about 85
units per model about 80 times each, where its own components ask for many more units rated a few
times each. The scaling slope across M models adds the models' own spread:
SE^2 = (s_m^2 + V) / Sxx, which no number of participants brings below s_m^2 / Sxx.

With a machine that scores S units per model (``MachineAssist``; correlation rho with the units' true
accuracy) and people rating U of them, the prediction-powered estimate (:mod:`analysis.ppi`) has

    V = s_u^2 (1 - rho^2) / U + s_u^2 rho^2 / S + (T s_p^2 + b) / N:

the machine explains rho^2 of the rated units' spread, and the rest of the spread is averaged over all
S. The S units' stimuli are built once (per_unit each); rating one more of them costs only its ratings.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.power import VarianceComponents

Z95 = float(stats.norm.ppf(0.975))

# The 2023 study (Zimmermann, Klein & Brendel, NeurIPS 2023): 767 units over 9 models, each rated
# about 80 times per condition (130,000 main responses over two conditions).
UNITS_PER_MODEL_2023 = 85
RATINGS_PER_UNIT_2023 = 80

# What one more unit's stimuli cost when the build's time is not given: the 2023 procedure's feature
# visualisations take about 3 million image-steps a unit (docs/performance.md, bench_fv), some
# 2.5 GPU minutes at an H100's rate of about 0.05 ms an image-step; priced at 2.5 a GPU hour.
DEFAULT_GPU_MINUTES_PER_UNIT = 2.5
DEFAULT_GPU_PRICE_PER_HOUR = 2.5


@dataclass(frozen=True)
class Costs:
    per_trial: float  # one paid main response
    per_unit: float  # one more unit's stimuli (all conditions)

    def __post_init__(self) -> None:
        if not self.per_trial > 0:
            raise ValueError(f"the price of a trial must be positive, not {self.per_trial}")
        if self.per_unit < 0:
            raise ValueError(f"the cost of a unit cannot be negative ({self.per_unit})")


@dataclass(frozen=True)
class Allocation:
    """One way to run the study, and what it buys."""

    name: str
    models: int
    conditions: int
    units_per_model: int
    participants_per_cell: int
    trials_per_participant: int
    half_width: float  # expected 95 % half-width of each model x condition accuracy (proportion)
    slope_se: float  # expected SE of the scaling slope per condition (proportion per unit of x)
    cost: float

    @property
    def responses_per_cell(self) -> int:
        return self.participants_per_cell * self.trials_per_participant

    @property
    def ratings_per_unit(self) -> float:
        return self.responses_per_cell / self.units_per_model

    @property
    def paid_responses(self) -> int:
        return self.responses_per_cell * self.models * self.conditions

    def row(self) -> dict:
        return {
            "allocation": self.name,
            "units_per_model": self.units_per_model,
            "ratings_per_unit": round(self.ratings_per_unit, 2),
            "participants_per_cell": self.participants_per_cell,
            "trials_per_participant": self.trials_per_participant,
            "paid_responses": self.paid_responses,
            "half_width_pp": 100 * self.half_width,
            "slope_se_pp": 100 * self.slope_se,
            "cost": self.cost,
        }


@dataclass(frozen=True)
class MachineAssist:
    """A machine observer scoring ``scored_units`` units per model, ``correlation`` with their true accuracy
    (from a study with people: its machine-human r over the noise ceiling, analysis.machine.noise_ceiling)."""

    correlation: float
    scored_units: int

    def __post_init__(self) -> None:
        if not 0 <= self.correlation < 1:
            raise ValueError(f"the machine's correlation must lie in [0, 1), not {self.correlation}")
        if self.scored_units < 1:
            raise ValueError(f"the machine must score at least one unit per model, not {self.scored_units}")


@dataclass(frozen=True)
class Problem:
    """What the planner is given: the models, the components, the prices and the trials per participant."""

    log10_params: np.ndarray
    components: VarianceComponents
    costs: Costs
    trials: int
    conditions: int = 1
    max_units_per_model: int | None = None
    machine: MachineAssist | None = None
    min_ratings_per_unit: int = 1  # e.g. several, for per-unit accuracies (the microscope, the noise ceiling)

    def __post_init__(self) -> None:
        if self.machine is not None:  # people rate some of the scored units
            cap = min(self.max_units_per_model or self.machine.scored_units, self.machine.scored_units)
            object.__setattr__(self, "max_units_per_model", cap)
        if len(self.log10_params) < 1:
            raise ValueError("no models to plan for")
        if self.min_ratings_per_unit < 1:
            raise ValueError(f"ratings per unit must be at least 1, not {self.min_ratings_per_unit}")
        if self.trials < 1 or self.conditions < 1:
            raise ValueError(f"trials per participant ({self.trials}) and conditions ({self.conditions}) must be >= 1")
        if self.max_units_per_model is not None and self.max_units_per_model < self.trials:
            raise ValueError(
                f"at most {self.max_units_per_model} units per model cannot fill {self.trials} trials per participant "
                "with distinct units: allow more units or fewer trials"
            )

    @property
    def models(self) -> int:
        return len(self.log10_params)

    @property
    def unit_term(self) -> float:
        """The units' spread that rated units must average out (what the machine does not explain)."""
        rho = self.machine.correlation if self.machine else 0.0
        return self.components.unit_sd**2 * (1 - rho**2)

    @property
    def variance_floor(self) -> float:
        """The part of a cell's variance that no rating removes: the spread the machine explains, over all
        the units it scores."""
        if self.machine is None:
            return 0.0
        return self.components.unit_sd**2 * self.machine.correlation**2 / self.machine.scored_units

    @property
    def rated_unit_cost(self) -> float:
        """What rating one more unit adds beyond its ratings: its stimuli, unless the machine's are built anyway."""
        return 0.0 if self.machine else self.costs.per_unit

    @property
    def fixed_cost_per_model(self) -> float:
        return self.costs.per_unit * self.machine.scored_units if self.machine else 0.0

    def without_machine(self) -> Problem:
        return dataclasses.replace(self, machine=None, max_units_per_model=None) if self.machine else self

    @property
    def response_term(self) -> float:
        c = self.components
        binomial = max(c.base * (1 - c.base) - c.unit_sd**2 - c.participant_sd**2, 0.0)
        return self.trials * c.participant_sd**2 + binomial

    @property
    def sxx(self) -> float:
        x = np.asarray(self.log10_params, float)
        return float(((x - x.mean()) ** 2).sum())

    def cell_variance(self, units: float, responses: float) -> float:
        return self.unit_term / units + self.variance_floor + self.response_term / responses

    def model_cost(self, units: float, responses: float) -> float:
        return (
            self.fixed_cost_per_model
            + self.rated_unit_cost * units
            + self.conditions * self.costs.per_trial * responses
        )

    def allocation(self, name: str, units: int, participants: int) -> Allocation:
        responses = participants * self.trials
        variance = self.cell_variance(units, responses)
        slope_se = math.sqrt((self.components.model_sd**2 + variance) / self.sxx) if self.sxx > 0 else math.nan
        return Allocation(
            name,
            self.models,
            self.conditions,
            units,
            participants,
            self.trials,
            Z95 * math.sqrt(variance),
            slope_se,
            self.models * self.model_cost(units, responses),
        )


def _integer(problem: Problem, name: str, units: float, responses: float) -> Allocation:
    """Whole units and participants: at least one rating per unit and T distinct units per participant."""
    units = max(int(round(units)), problem.trials)
    if problem.max_units_per_model is not None:
        units = min(units, problem.max_units_per_model)
    participants = max(math.ceil(max(responses, problem.min_ratings_per_unit * units) / problem.trials), 1)
    return problem.allocation(name, units, participants)


def _best_for_budget(problem: Problem, budget: float) -> tuple[float, float]:
    """The continuous optimum (units, responses per cell) for a total budget."""
    per_model = budget / problem.models - problem.fixed_cost_per_model
    unit_cost = problem.rated_unit_cost
    unit_weight = math.sqrt(problem.unit_term * unit_cost)
    response_weight = math.sqrt(problem.response_term * problem.conditions * problem.costs.per_trial)
    scale = per_model / (unit_weight + response_weight)
    units = math.sqrt(problem.unit_term / unit_cost) * scale if unit_cost > 0 else math.inf
    cap = problem.max_units_per_model
    if (cap is not None and units > cap) or not math.isfinite(units):
        # Free or capped units: as many as allowed (or as the budget buys at one rating each).
        units = min(cap or math.inf, per_model / (unit_cost + problem.conditions * problem.costs.per_trial))
    responses = (per_model - unit_cost * units) / (problem.conditions * problem.costs.per_trial)
    ratings = problem.min_ratings_per_unit
    if responses < ratings * units:  # fewer ratings per unit than asked: spend on exactly that many each
        units = per_model / (unit_cost + ratings * problem.conditions * problem.costs.per_trial)
        responses = ratings * units
    return units, responses


def planned(problem: Problem, budget: float) -> Allocation:
    """The most precise allocation within ``budget`` (the whole study's)."""
    floor = problem.allocation("minimum", problem.trials, 1).cost
    if budget < floor:
        raise ValueError(
            f"budget {budget:g} is below one participant per cell with {problem.trials} units per model "
            f"({floor:.4g}): raise the budget or lower the trials per participant"
        )
    units, responses = _best_for_budget(problem, budget)
    best = _integer(problem, "planner", units, responses)
    while best.cost > budget and best.participants_per_cell > 1:  # rounding up went over budget
        participants = best.participants_per_cell - 1
        units = min(best.units_per_model, participants * problem.trials // problem.min_ratings_per_unit)
        best = problem.allocation("planner", max(units, problem.trials), participants)
    return best


def cheapest_for(problem: Problem, half_width: float | None = None, slope_se: float | None = None) -> Allocation:
    """The cheapest allocation whose expected precision reaches the target (half-width or slope SE)."""
    variance = _target_variance(problem, half_width, slope_se)
    room = variance - problem.variance_floor
    if room <= 0:
        raise ValueError(
            f"with the machine scoring {problem.machine.scored_units} units per model, the spread it explains "
            f"alone gives a half-width of {100 * Z95 * math.sqrt(problem.variance_floor):.2f} pp: score more units"
        )
    unit_weight = math.sqrt(problem.unit_term * problem.rated_unit_cost)
    response_weight = math.sqrt(problem.response_term * problem.conditions * problem.costs.per_trial)
    budget = problem.models * ((unit_weight + response_weight) ** 2 / room + problem.fixed_cost_per_model)
    # The continuous optimum, then the smallest budget whose whole-number allocation reaches it.
    for _ in range(200):
        allocation = planned(problem, max(budget, problem.allocation("minimum", problem.trials, 1).cost))
        if _variance(allocation) <= variance * (1 + 1e-9):
            return allocation
        budget *= 1.02
    raise ValueError("no allocation reaches the target (the planner did not converge)")


def fixed_units(problem: Problem, units: int, name: str, budget: float | None = None, **target) -> Allocation:
    """The 2023 allocation: ``units`` per model, and as many ratings as the budget (or the target) needs."""
    if budget is not None:
        per_model = budget / problem.models - problem.fixed_cost_per_model
        responses = (per_model - problem.rated_unit_cost * units) / (problem.conditions * problem.costs.per_trial)
        return problem.allocation(name, units, max(math.floor(responses / problem.trials), 1))
    variance = _target_variance(problem, **target)
    room = variance - problem.unit_term / units - problem.variance_floor
    if room <= 0:
        raise ValueError(
            f"{name}: with {units} units per model the unit spread alone gives a half-width of "
            f"{100 * Z95 * math.sqrt(problem.unit_term / units):.1f} pp; no number of participants reaches the target"
        )
    return problem.allocation(name, units, math.ceil(problem.response_term / room / problem.trials))


def _variance(allocation: Allocation) -> float:
    return (allocation.half_width / Z95) ** 2


def _target_variance(problem: Problem, half_width: float | None = None, slope_se: float | None = None) -> float:
    """The cell variance a target asks for; a slope target below what the models' spread allows is an error."""
    if (half_width is None) == (slope_se is None):
        raise ValueError("give one target: the half-width of each cell's interval, or the slope's SE")
    if half_width is not None:
        if not half_width > 0:
            raise ValueError(f"the half-width target must be positive, not {half_width}")
        return (half_width / Z95) ** 2
    if not slope_se > 0:
        raise ValueError(f"the slope SE target must be positive, not {slope_se}")
    room = slope_se**2 * problem.sxx - problem.components.model_sd**2
    if room <= 0:
        floor = math.sqrt(problem.components.model_sd**2 / problem.sxx) if problem.sxx > 0 else math.inf
        needed = math.ceil(problem.models * problem.components.model_sd**2 / (slope_se**2 * problem.sxx)) + 1
        raise ValueError(
            f"the slope's SE cannot go below {100 * floor:.2f} pp per decade with these {problem.models} models: "
            f"the models' own spread (model SD {problem.components.model_sd:.3f}) bounds it, whatever the number of "
            f"participants; {slope_se * 100:.2f} pp needs about {needed} models spread like these"
        )
    return room


def compare(problem: Problem, budget: float, half_width: float | None = None, slope_se: float | None = None):
    """The planner's allocation beside the 2023 one, at the same budget and at the same precision.

    With a target, the planner's row is the cheapest allocation that reaches it (an error if that
    costs more than the budget); without one, the most precise within the budget.
    """
    if half_width is None and slope_se is None:
        plan = planned(problem, budget)
        target = {"half_width": plan.half_width}
    else:
        plan = cheapest_for(problem, half_width, slope_se)
        if plan.cost > budget:
            raise ValueError(
                f"the target needs a budget of {plan.cost:.4g} ({plan.paid_responses} responses, "
                f"{plan.units_per_model} units per model); {budget:g} is not enough: raise the budget or relax "
                "the target"
            )
        target = {"half_width": half_width} if half_width is not None else {"slope_se": slope_se}
    people_only = problem.without_machine()
    rows = [plan, fixed_units(people_only, UNITS_PER_MODEL_2023, "2023, same budget", budget=budget)]
    try:
        rows.append(fixed_units(people_only, UNITS_PER_MODEL_2023, "2023, same precision", **target))
    except ValueError:
        pass  # the 2023 allocation cannot reach it
    if problem.machine is not None:  # what the planner would do without the machine, at the same budget
        rows.append(dataclasses.replace(planned(people_only, budget), name="planner, people only"))
    return pd.DataFrame([r.row() for r in rows])


def precision_curve(problem: Problem, budgets: np.ndarray) -> pd.DataFrame:
    """Half-width against budget for the planner and the 2023 allocation (for the figure)."""
    rows = []
    for budget in budgets:
        rows.append(
            {"budget": budget, "allocation": "planner", "half_width_pp": 100 * planned(problem, budget).half_width}
        )
        fixed = fixed_units(problem.without_machine(), UNITS_PER_MODEL_2023, "2023", budget=budget)
        if fixed.cost <= budget * 1.001:
            rows.append({"budget": budget, "allocation": "2023", "half_width_pp": 100 * fixed.half_width})
    return pd.DataFrame(rows)


def design_figure(curve: pd.DataFrame, chosen: float | None = None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for name, group in curve.groupby("allocation", sort=False):
        label = "planner" if name == "planner" else f"2023: {UNITS_PER_MODEL_2023} units per model"
        ax.plot(group["budget"], group["half_width_pp"], marker="o", markersize=3, label=label)
    if chosen is not None:
        ax.axvline(chosen, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("budget")
    ax.set_ylabel("95% half-width per cell (pp)")
    ax.set_title("precision against budget", fontsize="medium")
    ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    return fig
