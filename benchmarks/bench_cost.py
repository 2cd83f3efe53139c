"""What a trustworthy per-cell accuracy costs: the 2023 allocation against the planner, with and without
precision-based stopping (analysis.design, experiment_server.allocation).

The variance components come from real data: Borowski et al.'s (ICLR 2021) Experiment I release, per
condition (natural, synthetic), through ``analysis.power.variance_components``: its unit and participant
spread and base accuracy. The study is the 2023 design as its paper describes it: 9 models (a model SD of
0.03 around the condition's base), 85 units per model, about 80 responses per unit and condition, each
participant's 40 main trials in one model x condition cell. Simulated studies follow
``analysis.power``'s model (additive effects on the proportion scale, clipped at chance and 1; units
dealt in shuffled rounds as the task builder does).

For each of

- (a) the 2023 allocation at its fixed N (85 units x 80 ratings per cell),
- (b) the planner's allocation (``analysis.design.cheapest_for``: the fewest paid responses, units
  costing what ``psychinterp design`` assumes by default) at its fixed N, and
- (c) the planner's units with precision-based stopping: participants arrive one at a time and a cell
  takes no more once the server's estimate of its half-width (``experiment_server.allocation.
  cell_precision``) is <= 3 pp after at least MIN_PARTICIPANTS,

it reports the paid main responses, how many cells end with a half-width <= 3 pp, and the coverage of
the final 95 % intervals (the server's estimate, normal) of every cell's true accuracy, and for (c) the
coverage of the scaling slope's t interval (two stages on the stopped cells; 9 models, 7 df).

Needs the real file: PSYCHINTERP_REAL_DATA=DIR with DIR/borowski/experiment_I_main_practice_catch_repeated_
trials_preprocessed.csv (DEVELOPERS.md says where it comes from).

Run: PSYCHINTERP_REAL_DATA=DIR .venv/bin/python benchmarks/bench_cost.py [--quick]
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

MODELS = 9
X = np.linspace(6.5, 9.0, MODELS)
MODEL_SD = 0.03
UNITS_2023, RATINGS_2023 = 85, 80
TRIALS = 40
TARGET = 0.03
MIN_PARTICIPANTS = 5
STUDIES = 500
CHANCE = 0.5
EXP1 = "borowski/experiment_I_main_practice_catch_repeated_trials_preprocessed.csv"


def components_from_borowski(root: Path) -> dict:
    from analysis.estimate import main_trials
    from analysis.load import load_responses
    from analysis.power import variance_components

    frame = main_trials(load_responses(root / EXP1))
    return {c: variance_components(frame[frame["condition"] == c]) for c in ("natural", "synthetic")}


def true_accuracy(mean: float, components, nodes=60) -> float:
    """The model's population accuracy: E[clip(mean + unit + participant, chance, 1)] (Gauss-Hermite)."""
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    sd = np.hypot(components.unit_sd, components.participant_sd)
    return float((w * np.clip(mean + sd * z, CHANCE, 1.0)).sum())


def simulate_cell(rng, mean: float, components, units: int, participants: int):
    """Per participant, in arrival order: the units shown and whether each answer was right."""
    easiness = mean + rng.normal(0, components.unit_sd, units)
    ability = rng.normal(0, components.participant_sd, participants)
    rounds = -(-participants * TRIALS // units)
    deck = np.concatenate([rng.permutation(units) for _ in range(rounds)])[: participants * TRIALS]
    shown = deck.reshape(participants, TRIALS)
    correct = rng.random(shown.shape) < np.clip(easiness[shown] + ability[:, None], CHANCE, 1.0)
    return shown, correct


def estimate(shown: np.ndarray, correct: np.ndarray, units: int):
    """The cell's accuracy (mean of unit accuracies) and the server's precision estimate."""
    from experiment_server.allocation import cell_precision

    n = np.bincount(shown.ravel(), minlength=units)
    k = np.bincount(shown.ravel(), weights=correct.ravel(), minlength=units).astype(int)
    seen = n > 0
    precision = cell_precision(
        list(zip(n[seen].tolist(), k[seen].tolist(), strict=True)),
        [(shown.shape[1], int(r.sum())) for r in correct],
    )
    return float(np.mean(k[seen] / n[seen])), precision


def stopped_at(shown, correct, units: int) -> int:
    """How many participants a cell takes under the stopping rule (checked after each arrival)."""
    for p in range(MIN_PARTICIPANTS, len(shown) + 1):
        _, precision = estimate(shown[:p], correct[:p], units)
        if precision is not None and precision.half_width <= TARGET:
            return p
    return len(shown)


def run(components: dict, studies: int, seed: int) -> pd.DataFrame:
    from analysis.design import Costs, Problem, cheapest_for
    from analysis.power import VarianceComponents

    rng = np.random.default_rng(seed)
    plans = {}
    for condition, c in components.items():
        problem = Problem(X, replace(c, model_sd=MODEL_SD), Costs(0.02, 2.5 * 2.5 / 60), TRIALS, conditions=2)
        plans[condition] = cheapest_for(problem, half_width=TARGET)
    rows = []
    for study in range(studies):
        for condition, c in components.items():
            model_means = c.base + rng.normal(0, MODEL_SD, MODELS)
            truths = [true_accuracy(m, c) for m in model_means]
            plan = plans[condition]
            estimates_c = []
            for m, (mean, truth) in enumerate(zip(model_means, truths, strict=True)):
                designs = {
                    "a": (UNITS_2023, -(-UNITS_2023 * RATINGS_2023 // TRIALS)),
                    "b": (plan.units_per_model, plan.participants_per_cell),
                }
                for name, (units, participants) in designs.items():
                    shown, correct = simulate_cell(rng, mean, c, units, participants)
                    value, precision = estimate(shown, correct, units)
                    rows.append(_row(study, condition, m, name, value, precision, truth, participants))
                # (c): the planner's units, participants until the rule stops the cell (at most (a)'s number).
                units, most = plan.units_per_model, designs["a"][1] * 4
                shown, correct = simulate_cell(rng, mean, c, units, most)
                taken = stopped_at(shown, correct, units)
                value, precision = estimate(shown[:taken], correct[:taken], units)
                rows.append(_row(study, condition, m, "c", value, precision, truth, taken))
                estimates_c.append(value)
            slope, se, df = _two_stage(np.asarray(estimates_c))
            true_slope = 0.0  # the population slope: model means scatter around one base, whatever their size
            half = stats.t.ppf(0.975, df) * se
            rows.append(
                {
                    "study": study,
                    "condition": condition,
                    "allocation": "c slope",
                    "covered": abs(slope - true_slope) <= half,
                }
            )
    del VarianceComponents
    return pd.DataFrame(rows)


def _two_stage(means: np.ndarray):
    from analysis.power import two_stage_fit

    slope, se, df = two_stage_fit(X, means)
    return float(slope[0]), float(se[0]), df


def _row(study, condition, model, name, value, precision, truth, participants) -> dict:
    half = precision.half_width if precision is not None else np.inf
    return {
        "study": study,
        "condition": condition,
        "model": model,
        "allocation": name,
        "responses": participants * TRIALS,
        "half_width": half,
        "covered": abs(value - truth) <= half,
    }


def main(quick: bool = False) -> int:
    root = os.environ.get("PSYCHINTERP_REAL_DATA")
    if not root or not (Path(root) / EXP1).exists():
        print(f"needs PSYCHINTERP_REAL_DATA=DIR holding {EXP1} (DEVELOPERS.md: the real published files)")
        return 2
    components = components_from_borowski(Path(root))
    for condition, c in components.items():
        print(f"{condition}: {c} (Borowski et al. Experiment I)")
    start = time.perf_counter()
    studies = 20 if quick else STUDIES
    table = run(components, studies, seed=1)
    cells = table[table["allocation"].isin(["a", "b", "c"])]
    summary = cells.groupby("allocation").agg(
        paid_per_study=("responses", lambda r: r.sum() / studies),
        cells_within_3pp=("half_width", lambda h: float((h <= TARGET).mean())),
        median_half_width_pp=("half_width", lambda h: 100 * float(np.median(h))),
        coverage=("covered", "mean"),
    )
    slope = table[table["allocation"] == "c slope"]["covered"].mean()
    names = {
        "a": "(a) 2023: 85 units x 80 ratings",
        "b": "(b) planner, fixed N",
        "c": "(c) planner + precision stopping",
    }
    summary.index = [names[i] for i in summary.index]
    pd.set_option("display.width", 200)
    print(summary.to_string(float_format=lambda v: f"{v:.3f}"))
    print(
        f"(c): coverage of the scaling slope's 95% t interval over {len(table[table['allocation'] == 'c slope'])} "
        f"slopes: {slope:.3f}"
    )
    ratio = summary.iloc[0]["paid_per_study"] / summary.iloc[2]["paid_per_study"]
    coverage = summary["coverage"].min()
    print(f"{studies} studies x 9 models x 2 conditions in {time.perf_counter() - start:.0f} s")
    ok = ratio >= 3 and coverage >= 0.93
    print(
        f"RESULT cost_ratio_vs_2023 {ratio:.2f} x target >=3 (coverage >= 93 % for a, b and c: "
        f"lowest {coverage * 100:.1f} %) {'PASS' if ok else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(quick="--quick" in sys.argv))
