"""Coverage of the three accuracy intervals that the report prints for one model and condition.

``analysis.estimate.accuracy_table`` gives a primary interval (participants and units resampled
together) and two alternatives: participants only, and the 2023 study's BCa interval of the mean
unit accuracy (units only). Each simulated cell has 25 participants answering 40 trials each on 60
units, correct with probability ``expit(1.4 + unit + participant)`` (about 80 % correct), in
three designs:

- units dominate: unit SD 1.0, participant SD 0.2 (logit);
- participants dominate: unit SD 0.2, participant SD 1.0;
- balanced: both 0.6.

The truth is the population accuracy, a Gauss-Hermite integral over both effects. The measured
coverages are the numbers the report prints beside each alternative
(``analysis.estimate.INTERVAL_COVERAGE``), copied from a run's benchmarks/out/interval_coverage.csv
and recorded in docs/performance.md.

Target: the primary interval covers at least 93 % in every design (it resamples both sources, so
it may be conservative: at most 99.5 %).

Run: .venv/bin/python benchmarks/bench_interval_coverage.py [--quick]
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit

BASE_LOGIT = 1.4
PARTICIPANTS = 25
TRIALS = 40
UNITS = 60
DESIGNS = {
    "units dominate": {"unit_sd": 1.0, "participant_sd": 0.2},
    "participants dominate": {"unit_sd": 0.2, "participant_sd": 1.0},
    "balanced": {"unit_sd": 0.6, "participant_sd": 0.6},
}
STUDIES = 2000
RESAMPLES = 1000
INTERVALS = {"primary": "ci", "participants only": "participant_ci", "units only (BCa)": "unit_bca"}


def true_accuracy(design: dict) -> float:
    sd = np.hypot(design["unit_sd"], design["participant_sd"])
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    return float((weights / weights.sum() * expit(BASE_LOGIT + sd * nodes)).sum())


def simulate(rng: np.random.Generator, design: dict) -> pd.DataFrame:
    unit_effect = rng.normal(0, design["unit_sd"], UNITS)
    ability = rng.normal(0, design["participant_sd"], PARTICIPANTS)
    units = rng.integers(0, UNITS, size=(PARTICIPANTS, TRIALS))
    correct = rng.random(units.shape) < expit(BASE_LOGIT + unit_effect[units] + ability[:, None])
    return pd.DataFrame(
        {
            "participant_id": np.repeat(np.arange(PARTICIPANTS), TRIALS),
            "model_id": "m",
            "unit_id": units.ravel(),
            "condition": "natural",
            "trial_kind": "main",
            "correct": correct.ravel().astype(int),
        }
    )


def run_design(args: tuple) -> dict:
    from analysis.estimate import accuracy_table

    name, studies, seed = args
    design = DESIGNS[name]
    truth = true_accuracy(design)
    rng = np.random.default_rng(seed)
    hits = {label: [] for label in INTERVALS}
    for study in range(studies):
        row = accuracy_table(simulate(rng, design), n_resamples=RESAMPLES, seed=study).iloc[0]
        for label, prefix in INTERVALS.items():
            hits[label].append(row[f"{prefix}_low"] <= truth <= row[f"{prefix}_high"])
    return {"design": name, "true_accuracy": truth, "studies": studies} | {
        label: float(np.mean(values)) for label, values in hits.items()
    }


def main(quick: bool = False) -> int:
    studies = STUDIES // 10 if quick else STUDIES
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        table = pd.DataFrame(list(pool.map(run_design, [(n, studies, 7 + i) for i, n in enumerate(DESIGNS)])))
    seconds = time.perf_counter() - start
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    table.to_csv(out / "interval_coverage.csv", index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    low, high = table["primary"].min(), table["primary"].max()
    ok = low >= 0.93 and high <= 0.995
    print(f"{len(DESIGNS)} designs x {studies} studies in {seconds:.0f} s")
    print(
        f"RESULT interval_coverage {low * 100:.1f}-{high * 100:.1f} % target primary >= 93 (<= 99.5) "
        f"{'PASS' if ok else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(quick="--quick" in sys.argv))
