"""Coverage of the scaling slope's 95% interval (analysis.scaling) on simulated studies.

Each simulated study has 9 models spread over 2.5 decades of parameters, a true slope of
3 percentage points per decade, and variance at three levels: models (a random intercept),
units (per-unit difficulty) and participants (per-person ability), with trial-level binomial
noise. Participants answer 40 trials each on random units of one model, as in the 2023 study.
The primary scaling estimate (analysis.scaling: the random-intercept model fitted in two stages,
units then models, with a t interval) is fitted to each study; the fraction of intervals that cover the true
slope must lie in 93-97%. Also printed: the bias and the mean interval width, and a figure
(benchmarks/out/coverage.png) of the intervals.

Run: .venv/bin/python benchmarks/bench_mixed_model_coverage.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

STUDIES = 400
TRUE_SLOPE = 0.03  # proportion correct per decade of parameters
MODELS = 9
UNITS_PER_MODEL = 80
PARTICIPANTS_PER_MODEL = 25
TRIALS = 40
SD = {"model": 0.02, "unit": 0.08, "participant": 0.05}


def simulate_study(rng: np.random.Generator) -> pd.DataFrame:
    decades = np.linspace(6.5, 9.0, MODELS)
    frames = []
    for m, log_params in enumerate(decades):
        base = 0.78 + TRUE_SLOPE * (log_params - decades.mean()) + rng.normal(0, SD["model"])
        unit_p = base + rng.normal(0, SD["unit"], UNITS_PER_MODEL)
        ability = rng.normal(0, SD["participant"], PARTICIPANTS_PER_MODEL)
        units = rng.integers(0, UNITS_PER_MODEL, size=(PARTICIPANTS_PER_MODEL, TRIALS))
        p = np.clip(unit_p[units] + ability[:, None], 0.02, 0.99)
        correct = rng.random(p.shape) < p
        frames.append(
            pd.DataFrame(
                {
                    "participant_id": np.repeat([f"m{m}-p{i}" for i in range(PARTICIPANTS_PER_MODEL)], TRIALS),
                    "model_id": f"m{m}",
                    "unit_id": [f"m{m}-u{u}" for u in units.ravel()],
                    "condition": "natural",
                    "trial_kind": "main",
                    "correct": correct.ravel().astype(int),
                    "log10_parameters": log_params,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def main() -> int:
    from analysis.scaling import scaling_trends

    rng = np.random.default_rng(2023)
    rows = []
    start = time.perf_counter()
    for _ in range(STUDIES):
        fit = scaling_trends(simulate_study(rng), ["log10_parameters"]).iloc[0]
        rows.append((fit["slope"], fit["ci_low"], fit["ci_high"]))
    seconds = time.perf_counter() - start
    fits = pd.DataFrame(rows, columns=["slope", "low", "high"])
    covered = ((fits["low"] <= TRUE_SLOPE) & (TRUE_SLOPE <= fits["high"])).mean()
    se = np.sqrt(covered * (1 - covered) / STUDIES)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    order = fits.sort_values("slope").reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    hit = (order["low"] <= TRUE_SLOPE) & (TRUE_SLOPE <= order["high"])
    ax.vlines(order.index, order["low"] * 100, order["high"] * 100, colors=np.where(hit, "tab:blue", "tab:red"), lw=0.8)
    ax.axhline(TRUE_SLOPE * 100, color="black", lw=1)
    ax.set_xlabel("simulated study (sorted by estimate)")
    ax.set_ylabel("slope, pp per decade")
    ax.set_title(f"95% intervals: {covered:.1%} cover the true slope (red: miss)")
    fig.tight_layout()
    fig.savefig(out / "coverage.png", dpi=120)

    print(
        f"mixed-model coverage: {STUDIES} simulated studies, {MODELS} models x {UNITS_PER_MODEL} units, "
        f"{PARTICIPANTS_PER_MODEL} participants x {TRIALS} trials per model; "
        f"true slope {TRUE_SLOPE * 100:.1f} pp/decade"
    )
    print(f"variance: model sd {SD['model']}, unit sd {SD['unit']}, participant sd {SD['participant']} (proportions)")
    print(f"{'measurement':<40}{'value':>12}")
    print(f"{'coverage of the 95% interval':<40}{covered:>11.1%}  (Monte Carlo se {se:.1%})")
    print(f"{'mean estimate, pp/decade':<40}{fits['slope'].mean() * 100:>12.2f}")
    print(f"{'bias, pp/decade':<40}{(fits['slope'].mean() - TRUE_SLOPE) * 100:>12.3f}")
    print(f"{'mean interval width, pp/decade':<40}{(fits['high'] - fits['low']).mean() * 100:>12.2f}")
    print(f"{'seconds per fit':<40}{seconds / STUDIES:>12.3f}")
    print(f"figure: {out / 'coverage.png'}")
    verdict = "PASS" if 0.93 <= covered <= 0.97 else "FAIL"
    print(f"RESULT mixed_model_coverage {covered * 100:.1f} % target 93-97 {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
