"""Does power computed from a pilot match the power of the true design? (analysis.power)

A planned study (9 models, 40 units and 25 participants per model, 40 trials each, a slope of
3 percentage points per decade) has a true power, simulated here from the true variance
components with many studies. A researcher instead has a pilot and estimates the components from
it (``variance_components``), then computes power from the estimates. Two pilots:

- a large one (60 models, 60 participants each): it measures the estimator itself. Over PILOTS
  pilots the mean pilot-based power must match the true power within twice its Monte Carlo error
  (the RESULT line);
- a realistic one (the study's 9 models, 15 participants each): printed, not a target. Its model
  variance rests on 9 model means (8 df), so the plug-in power scatters widely and its mean lies
  above the truth (power is not linear in the variance); ``psychinterp power`` therefore also
  prints the power at the model SD's upper 80 % confidence bound.

Baseline, measured in the same run: the per-level method of moments that ``variance_components``
used before (each level's spread minus its binomial noise only), which folds the model variance
into the participants' and the lower levels' noise into the models'.

Run: .venv/bin/python benchmarks/bench_power_pilot.py
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd

LOG10_PARAMS = np.linspace(6.5, 9.0, 9)
SLOPE = 0.03
UNITS, PARTICIPANTS, TRIALS = 40, 25, 40
PILOTS = 12
PILOT_DESIGNS = {"large pilot": (60, 60), "9-model pilot": (9, 15)}  # (models, participants per model)
TRUE_STUDIES = 4000
STUDIES_PER_PILOT = 400


def per_level_moments(responses: pd.DataFrame):
    """The estimator before issue 14: each level's spread minus its binomial noise, nothing else."""
    from analysis.power import VarianceComponents

    base = float(responses["correct"].mean())

    def spread(key: str) -> float:
        groups = responses.groupby(key)["correct"].agg(["mean", "count"])
        binomial = float((groups["mean"] * (1 - groups["mean"]) / groups["count"]).mean())
        return float(np.sqrt(max(groups["mean"].var(ddof=1) - binomial, 0.0)))

    model_sd = float(responses.groupby("model_id")["correct"].mean().std(ddof=1))
    return VarianceComponents(base, model_sd, spread("unit_id"), spread("participant_id"))


def power_of(components, n_studies: int, seed: int) -> float:
    from analysis.power import power_grid

    grid = power_grid(
        LOG10_PARAMS, SLOPE, components, [PARTICIPANTS], [UNITS], trials=TRIALS, n_studies=n_studies, seed=seed
    )
    return float(grid["power"].iloc[0])


def main() -> int:
    from analysis.power import Design, VarianceComponents, model_sd_upper_bound, simulate_pilot, variance_components

    truth = VarianceComponents(base=0.78, model_sd=0.03, unit_sd=0.1, participant_sd=0.06)
    start = time.perf_counter()
    true_power = power_of(truth, TRUE_STUDIES, seed=1)
    print(f"true design: {len(LOG10_PARAMS)} models x {UNITS} units x {PARTICIPANTS} participants x {TRIALS} trials")
    print(f"true components {truth}; {PILOTS} pilots of each kind")
    print(f"{'power':<58}{'mean':>8}{'sd over pilots':>16}")
    print(f"{'simulated from the true components':<58}{true_power:>8.3f}")
    gaps = {}
    for name, (n_models, n_participants) in PILOT_DESIGNS.items():
        rng = np.random.default_rng(7)
        ours, baseline, bounded = [], [], []
        for k in range(PILOTS):
            design = Design(np.linspace(6.5, 9.0, n_models), UNITS, n_participants, TRIALS)
            pilot = simulate_pilot(design, truth, rng)
            estimate = variance_components(pilot)
            ours.append(power_of(estimate, STUDIES_PER_PILOT, seed=100 + k))
            cautious = replace(estimate, model_sd=model_sd_upper_bound(pilot))
            bounded.append(power_of(cautious, STUDIES_PER_PILOT, seed=100 + k))
            baseline.append(power_of(per_level_moments(pilot), STUDIES_PER_PILOT, seed=100 + k))
        ours, baseline = np.asarray(ours), np.asarray(baseline)
        # Monte Carlo error of the difference: the true power's and the mean over pilots' own.
        mc = np.sqrt(
            true_power * (1 - true_power) / TRUE_STUDIES
            + np.mean(ours * (1 - ours) / STUDIES_PER_PILOT) / PILOTS
            + ours.var(ddof=1) / PILOTS
        )
        gaps[name] = (abs(ours.mean() - true_power), abs(baseline.mean() - true_power), mc)
        print(f"{name + ', variance_components':<58}{ours.mean():>8.3f}{ours.std(ddof=1):>16.3f}")
        print(f"{name + ', per-level moments (baseline)':<58}{baseline.mean():>8.3f}{baseline.std(ddof=1):>16.3f}")
        label = name + ", at the upper 80% bound of the model SD"
        print(f"{label:<58}{np.mean(bounded):>8.3f}{np.std(bounded, ddof=1):>16.3f}")
    for name, (gap, baseline_gap, mc) in gaps.items():
        print(
            f"{name}: gap {gap * 100:.1f} pp (baseline {baseline_gap * 100:.1f} pp); "
            f"2 x Monte Carlo error {2 * mc * 100:.1f} pp"
        )
    print(f"{time.perf_counter() - start:.0f} s")
    gap, baseline_gap, mc = gaps["large pilot"]
    verdict = "PASS" if gap <= 2 * mc else "FAIL"
    print(f"large pilot: gap against the baseline's, ratio {gap / baseline_gap:.2f}")
    print(f"RESULT power_pilot_gap {gap * 100:.2f} pp target <= {2 * mc * 100:.2f} {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
