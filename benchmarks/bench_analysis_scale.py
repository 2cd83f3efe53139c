"""Analysis at the 2023 study's size, end to end: 130,000 responses, 767 units, 9 models, ~2,000 participants.

Timed: writing and loading the CSV, exclusions, accuracy with three bootstraps of 10,000
resamples each (participants x units crossed, participants only, unit-mean BCa), the 2023
statistics (Kruskal-Wallis, Conover/Holm, Spearman), the scaling mixed models and the
trial-level robustness checks, and the figures and HTML (`analysis.report.write_report`).
Baseline, in the same run: the 2023 study's interval, `scipy.stats.bootstrap` (BCa) of the unit
means with a per-resample Python statistic, looped over models and conditions.
Target: the whole analysis in under 120 s on 2 cores.

Run: .venv/bin/python benchmarks/bench_analysis_scale.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_RESPONSES = 130_000
N_UNITS = 767
N_MODELS = 9
N_PARTICIPANTS = 2_000
TARGET_S = 120.0


def synthetic_study(rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    models = {
        f"model{m}": {
            "parameter_count": int(10 ** (6.5 + 0.3 * m)),
            "train_images": int(10 ** (6 + 0.35 * m)),
            "imagenet_top1": 70 + m,
        }
        for m in range(N_MODELS)
    }
    unit_model = np.arange(N_UNITS) % N_MODELS
    unit_layer = rng.integers(0, 12, N_UNITS)
    unit_p = np.clip(0.8 + 0.01 * unit_model + rng.normal(0, 0.08, N_UNITS), 0.05, 0.99)
    per_participant = N_RESPONSES // N_PARTICIPANTS  # 65 responses: 45 main-phase trials + 20 practice
    rows_participant = np.repeat(np.arange(N_PARTICIPANTS), per_participant)
    participant_model = rng.integers(0, N_MODELS, N_PARTICIPANTS)
    participant_condition = rng.integers(0, 2, N_PARTICIPANTS)
    model_units = [np.flatnonzero(unit_model == m) for m in range(N_MODELS)]
    units = np.array([rng.choice(model_units[participant_model[p]]) for p in rows_participant])
    position = np.tile(np.arange(per_participant), N_PARTICIPANTS)
    kind = np.where(position < 20, "practice", np.where(position >= per_participant - 5, "catch", "main"))
    p_correct = np.where(kind == "catch", 0.97, unit_p[units])
    frame = pd.DataFrame(
        {
            "participant_id": [f"p{p}" for p in rows_participant],
            "model_id": [f"model{m}" for m in unit_model[units]],
            "unit_id": [f"u{u}" for u in units],
            "layer_index": unit_layer[units],
            "n_layers": 12,
            "condition": np.where(participant_condition[rows_participant] == 0, "natural", "synthetic"),
            "trial_kind": kind,
            "trial_index": position,
            "chosen_query": rng.integers(0, 2, len(units)),
            "correct": (rng.random(len(units)) < p_correct).astype(int),
            "confidence": rng.integers(1, 4, len(units)),
            "rt_ms": rng.uniform(800, 9000, len(units)).round(1),
            "instruction_s": np.repeat(rng.uniform(5, 120, N_PARTICIPANTS), per_participant).round(1),
            "session_s": np.repeat(rng.uniform(300, 2000, N_PARTICIPANTS), per_participant).round(1),
            "practice_blocks": np.repeat(rng.integers(1, 4, N_PARTICIPANTS), per_participant),
        }
    )
    return frame, models


def baseline_2023(frame: pd.DataFrame) -> float:
    """The 2023 study's loop: scipy.stats.bootstrap (BCa) of unit means, one call per model and condition."""
    from scipy import stats

    main = frame[frame["trial_kind"] == "main"]
    start = time.perf_counter()
    for _, group in main.groupby(["model_id", "condition"]):
        units = group.groupby("unit_id")["correct"].mean().to_numpy()
        stats.bootstrap((units,), np.mean, vectorized=False, n_resamples=10_000, method="BCa")
    return time.perf_counter() - start


def main() -> int:
    from analysis.report import write_report

    frame, models = synthetic_study(np.random.default_rng(0))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "responses.csv"
        start = time.perf_counter()
        frame.to_csv(path, index=False)
        written = time.perf_counter() - start
        start = time.perf_counter()
        write_report(path, Path(tmp) / "report", n_resamples=10_000, models=models)
        analysed = time.perf_counter() - start
        produced = sorted(p.name for p in (Path(tmp) / "report").iterdir())
    baseline = baseline_2023(frame)
    total = written + analysed
    print(
        f"analysis at the 2023 study's size: {len(frame):,} responses, {N_UNITS} units, {N_MODELS} models, "
        f"{frame['participant_id'].nunique():,} participants; 10,000 resamples per bootstrap; 2 cores"
    )
    print(f"{'step':<64}{'seconds':>10}")
    print(f"{'write the CSV':<64}{written:>10.1f}")
    print(f"{'psychinterp analyze (load, exclusions, 3 bootstraps, tests, models, figures)':<64}{analysed:>10.1f}")
    print(f"{'2023 baseline: scipy.stats.bootstrap loop over unit means only':<64}{baseline:>10.1f}")
    print(f"ratio, whole analysis / 2023 bootstrap loop: {analysed / baseline:.2f}")
    print(f"report files: {', '.join(produced)}")
    verdict = "PASS" if total < TARGET_S else "FAIL"
    print(f"RESULT analysis_end_to_end {total:.1f} s target <{TARGET_S:.0f} {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
