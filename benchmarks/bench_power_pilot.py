"""Does power computed from one pilot survive the pilot's own noise? (analysis.power.pilot_power)

A planned study (9 models over 2.5 decades, 40 units and 25 participants per model, 40 trials
each, a slope of 3 percentage points per decade in one of two conditions) has a true power for the
verdict the report prints: the slope's test, Holm-corrected over the two conditions' slopes. It is
measured here by brute force: TRUE_STUDIES whole studies simulated from the true variance
components, each analysed as the report does.

A researcher has one pilot instead (the study's 9 models, 15 participants each) and asks
``pilot_power`` for the power of that verdict: its expected value over the model SD's confidence
distribution, and a cautious quantile (at least this much power with 90 % confidence). Over
PILOTS pilots, per set of true components:

- the median absolute error of the pilot's expected power against the truth (target <= 10 points);
- the share of pilots whose cautious quantile lies at or below the truth (target >= 80 %).

Baseline, same run: what ``psychinterp power`` gave before issue 33, the power at the pilot's point
estimates for the raw alpha = 0.05 test (simulated, STUDIES_PER_PILOT studies).

Run: .venv/bin/python benchmarks/bench_power_pilot.py [--quick]
"""

from __future__ import annotations

import sys
import time

import numpy as np
from scipy import stats

LOG10_PARAMS = np.linspace(6.5, 9.0, 9)
SLOPE = 0.03
UNITS, PARTICIPANTS, TRIALS = 40, 25, 40
PILOT_PARTICIPANTS = 15
FAMILY = 2
PILOTS = 80
TRUE_STUDIES = 4000
STUDIES_PER_PILOT = 400
LEVEL = 0.9
TRUTHS = {  # (base, model SD, unit SD, participant SD): power well inside (0, 1) for the planned design
    "model SD 0.03": (0.78, 0.03, 0.1, 0.06),
    "model SD 0.015": (0.78, 0.015, 0.1, 0.06),
}


def brute_force_power(components, n_studies: int, seed: int) -> float:
    """Share of simulated studies whose Holm-corrected verdict (over both conditions) says "rises"."""
    from analysis.power import Design, simulate_model_means, two_stage_fit

    rng = np.random.default_rng(seed)
    design = Design(LOG10_PARAMS, UNITS, PARTICIPANTS, TRIALS)
    p = []
    for slope in (SLOPE, 0.0):  # the planted condition, then the null one
        fitted, se, df = two_stage_fit(LOG10_PARAMS, simulate_model_means(design, slope, components, n_studies, rng))
        p.append(2 * stats.t.sf(np.abs(fitted / se), df))
        if slope:
            positive = fitted > 0
    planted, null = p
    # Holm over two: the smaller p at alpha / 2, the larger at alpha once the smaller rejected.
    holm_planted = np.where(planted <= null, 2 * planted, np.maximum(2 * null, planted))
    return float(np.mean((np.minimum(holm_planted, 1) < 0.05) & positive))


def main(quick: bool = False) -> int:
    from analysis.power import Design, VarianceComponents, pilot_power, power_grid, simulate_pilot, variance_components

    pilots = 10 if quick else PILOTS
    start = time.perf_counter()
    results = {}
    print(f"planned: {len(LOG10_PARAMS)} models x {UNITS} units x {PARTICIPANTS} participants x {TRIALS} trials, ")
    print(f"slope {SLOPE * 100:.0f} pp per decade, Holm over {FAMILY}; pilots of {PILOT_PARTICIPANTS} participants")
    header = f"{'truth':<16}{'true':>7}{'median |err|':>14}{'baseline |err|':>16}{'cautious <= true':>18}"
    print(header + f"{'pilots clipped to SD 0':>24}")
    for name, values in TRUTHS.items():
        truth = VarianceComponents(*values)
        true_power = brute_force_power(truth, TRUE_STUDIES, seed=1)
        rng = np.random.default_rng(7)
        errors, baseline_errors, cautious_ok, clipped, spread = [], [], [], 0, []
        for k in range(pilots):
            pilot = simulate_pilot(Design(LOG10_PARAMS, UNITS, PILOT_PARTICIPANTS, TRIALS), truth, rng)
            ours = pilot_power(pilot, LOG10_PARAMS, SLOPE, UNITS, PARTICIPANTS, TRIALS, family_size=FAMILY, level=LEVEL)
            estimate = variance_components(pilot)
            clipped += estimate.model_sd == 0
            grid = power_grid(
                LOG10_PARAMS, SLOPE, estimate, [PARTICIPANTS], [UNITS], TRIALS, STUDIES_PER_PILOT, seed=100 + k
            )
            errors.append(abs(ours.expected - true_power))
            spread.append((ours.expected, ours.cautious, float(grid["power"].iloc[0])))
            baseline_errors.append(abs(float(grid["power"].iloc[0]) - true_power))
            cautious_ok.append(ours.cautious <= true_power)
        results[name] = (float(np.median(errors)), float(np.median(baseline_errors)), float(np.mean(cautious_ok)))
        error, baseline, share = results[name]
        print(
            f"{name:<16}{true_power:>7.3f}{error * 100:>13.1f}p{baseline * 100:>15.1f}p{share:>18.0%}"
            f"{clipped:>17} of {pilots}"
        )
        low, high = np.percentile(np.asarray(spread), [5, 95], axis=0)
        print(
            f"{'':<16}5-95 % over pilots: expected {low[0]:.2f}-{high[0]:.2f}, cautious {low[1]:.2f}-{high[1]:.2f}, "
            f"baseline {low[2]:.2f}-{high[2]:.2f}"
        )
    print(f"{time.perf_counter() - start:.0f} s; Monte Carlo SE of the truth about 0.8 points")
    worst_error = max(r[0] for r in results.values())
    worst_share = min(r[2] for r in results.values())
    ok = worst_error <= 0.10 and worst_share >= 0.8
    print(f"cautious quantile at or below the truth in {worst_share:.0%} of pilots at worst (target >= 80 %)")
    print(
        f"RESULT pilot_power_error {worst_error * 100:.1f} points target <= 10 "
        f"(cautious below truth {worst_share:.0%} >= 80 %) {'PASS' if ok else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(quick="--quick" in sys.argv))
