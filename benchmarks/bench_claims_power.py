"""Does the printed verdict's MDE have the power the sentence claims? And does the unit-kind
difference's interval cover? (analysis.claims, analysis.unit_kinds)

**MDE.** A study has two conditions (one Holm family of 2 slopes on log10 parameters, as the report
tests them). Its studies are simulated as in bench_mixed_model_coverage.py (9 models over 2.5 decades,
logit-scale model, unit and participant effects, 25 participants x 40 trials per model). For each
design and model SD:

1. STUDIES null studies: each prints "with the Holm correction over 2 slopes, this design detects
   ±X with 80 % power" for the first condition (``analysis.claims.verdict_mde``); take the median X;
2. STUDIES studies with that true slope in the first condition and none in the second: the share in
   which the printed verdict (Holm over both) says "rises" is the power at the printed MDE.

Target: 75-85 % in every cell. Baseline, same run: the MDE printed before issue 33 (the plug-in
noncentral t at the raw alpha with the study's own SE), measured for the same Holm verdict.

**Unit kinds** (analysis.unit_kinds): studies where the same participants rate channels and SAE
latents of one model; the coverage of the paired difference's 95 % interval and its bootstrap SE
over the empirical SD of the difference across studies (targets 93-97 % and 0.9-1.1).

Run: .venv/bin/python benchmarks/bench_claims_power.py [--quick]
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats
from scipy.special import expit

sys.path.insert(0, str(Path(__file__).parent))
from bench_mixed_model_coverage import DESIGNS, X, primary, simulate, true_slope  # noqa: E402

STUDIES = 400
MODEL_SDS = (0.0, 0.25)
FAMILY = 2


def study_slopes(rng, logit_slopes: tuple[float, float], model_sd: float, design: dict) -> list[tuple]:
    """The two conditions' two-stage fits (slope, se, df) of one simulated study."""
    fits = []
    for logit_slope in logit_slopes:
        unit_model, _, unit_acc, _ = simulate(rng, logit_slope, model_sd, design)
        fits.append(primary(unit_model, unit_acc))
    return fits


def holm_rises(fits: list[tuple]) -> bool:
    """Whether the report's verdict for the first condition is "rises" (Holm over the family)."""
    from analysis.claims import holm

    p = [2 * stats.t.sf(abs(slope / se), df) for slope, se, df in fits]
    return bool(holm(p)[0] < 0.05 and fits[0][0] > 0)


def logit_slope_for(proportion_slope: float, model_sd: float, design: dict) -> float:
    """The planted logit slope whose population-averaged slope (the estimand) is ``proportion_slope``."""
    return optimize.brentq(lambda s: true_slope(s, model_sd, design) - proportion_slope, 0.0, 3.0)


def mde_cell(args: tuple) -> dict:
    from analysis.claims import minimum_detectable_slope, verdict_mde

    design_name, model_sd, n_studies, seed = args
    design = DESIGNS[design_name]
    rng = np.random.default_rng(seed)
    printed, plug_in, ses = [], [], []
    for _ in range(n_studies):
        (slope, se, df), _ = study_slopes(rng, (0.0, 0.0), model_sd, design)
        printed.append(verdict_mde(se, df, 0.05, 0.8, FAMILY))
        plug_in.append(minimum_detectable_slope(se, df))
        ses.append(se)
    row = {"design": design_name, "model_sd": model_sd, "studies": n_studies}
    for name, values in (("printed", printed), ("before", plug_in)):
        target = float(np.median(values))
        planted = logit_slope_for(target, model_sd, design)
        rises = [holm_rises(study_slopes(rng, (planted, 0.0), model_sd, design)) for _ in range(n_studies)]
        row[f"{name}_mde_pp"] = target * 100
        row[f"{name}_mde_spread"] = float(np.subtract(*np.percentile(values, [90, 10])) / 2 / target)
        row[f"{name}_power"] = float(np.mean(rises))
    row["mean_se_pp"] = float(np.mean(ses)) * 100
    return row


KIND_STUDIES = 500
KIND_DESIGNS = {  # logit SDs; every participant rates `seen` of each kind's units (None: all of them)
    "units dominate": {"participants": 30, "units": 20, "sd_participant": 0.5, "sd_unit": 0.8, "seen": None},
    "participants dominate": {"participants": 30, "units": 20, "sd_participant": 1.0, "sd_unit": 0.3, "seen": None},
    "many units": {"participants": 40, "units": 60, "sd_participant": 0.5, "sd_unit": 0.3, "seen": None},
    "sparse": {"participants": 60, "units": 40, "sd_participant": 0.6, "sd_unit": 0.6, "seen": 10},
}
KIND_EFFECTS = (0.0, 0.3)  # logit shift of the sae units
AT_MARGIN = ("many units", 0.2786, 800)  # the shift that puts the sae units 5.0 pp (the margin) above


def kind_study(rng, design: dict, effect: float) -> pd.DataFrame:
    """One study: the same participants rate channels and SAE latents of one model."""
    ability = rng.normal(0, design["sd_participant"], design["participants"])
    frames = []
    for kind, shift in (("channel", 0.0), ("sae", effect)):
        easiness = rng.normal(1.0 + shift, design["sd_unit"], design["units"])
        seen = design["seen"] or design["units"]
        units = np.argsort(rng.random((design["participants"], design["units"])), axis=1)[:, :seen]
        p = 1 / (1 + np.exp(-(ability[:, None] + easiness[units])))
        frames.append(
            pd.DataFrame(
                {
                    "participant_id": np.repeat(np.arange(design["participants"]), seen).astype(str),
                    "model_id": "m",
                    "condition": "natural",
                    "unit_id": [f"{kind}-{u}" for u in units.ravel()],
                    "unit_kind": kind,
                    "trial_kind": "main",
                    "correct": (rng.random(p.shape) < p).ravel().astype(int),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def kind_truth(design: dict, effect: float) -> float:
    """The population difference in accuracy (Gauss-Hermite over participants and units)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    weights = weights / weights.sum()
    sd = np.hypot(design["sd_participant"], design["sd_unit"])
    return float((weights * (expit(1.0 + effect + sd * nodes) - expit(1.0 + sd * nodes))).sum())


def kind_cell(args: tuple) -> dict:
    from analysis.unit_kinds import difference_rows

    design_name, effect, n_studies, seed = args
    design = KIND_DESIGNS[design_name]
    truth = kind_truth(design, effect)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_studies):
        frame = kind_study(rng, design, effect)
        row = difference_rows(frame, 0.05, n_resamples=500, seed=int(rng.integers(1 << 31))).iloc[0]
        joint_se = _joint_se(frame)
        rows.append((row.difference, row.se, row.ci_low <= truth <= row.ci_high, joint_se, row.p, row.tost_p))
    d, se, covered, joint, p, tost = map(np.asarray, zip(*rows, strict=True))
    z = stats.norm.ppf(0.975)
    return {
        "design": design_name,
        "effect_pp": truth * 100,
        "coverage": float(covered.mean()),
        "se_over_sd": float(np.sqrt(np.mean(se**2)) / d.std(ddof=1)),
        "before_coverage": float(np.mean(np.abs(d - truth) <= z * joint)),
        "before_se_over_sd": float(np.sqrt(np.mean(joint**2)) / d.std(ddof=1)),
        "said_differ": float(np.mean(p < 0.05)),
        "said_equivalent": float(np.mean(tost < 0.05)),
        "studies": n_studies,
    }


def _joint_se(frame: pd.DataFrame) -> float:
    """The SE before issue 33: participants and units resampled together."""
    from analysis.estimate import cell_counts
    from analysis.unit_kinds import paired_difference_variance

    k, n = cell_counts(frame)
    kind_of = frame.groupby("unit_id")["unit_kind"].first().sort_index().to_numpy()
    columns = {name: np.flatnonzero(kind_of == name) for name in ("channel", "sae")}
    return float(np.sqrt(paired_difference_variance(k, n, columns, "sae", "channel", 500, 0).joint))


def main(quick: bool = False) -> int:
    n = int(STUDIES * (0.25 if quick else 1))
    cells = [(d, sd, n, 500 + i) for i, (d, sd) in enumerate(product(DESIGNS, MODEL_SDS))]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        kinds = pd.DataFrame(
            list(
                pool.map(
                    kind_cell,
                    [
                        (d, e, int(KIND_STUDIES * (0.2 if quick else 1)), 900 + i)
                        for i, (d, e) in enumerate(product(KIND_DESIGNS, KIND_EFFECTS))
                    ]
                    + [(AT_MARGIN[0], AT_MARGIN[1], int(AT_MARGIN[2] * (0.2 if quick else 1)), 5)],
                )
            )
        )
        table = pd.DataFrame(list(pool.map(mde_cell, cells)))
    pd.set_option("display.width", 250)
    print(f"x = {np.round(X, 2).tolist()}; Holm family of {FAMILY} slopes; {n} studies per step")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    low, high = table["printed_power"].min(), table["printed_power"].max()
    before = f"{table['before_power'].min() * 100:.1f}-{table['before_power'].max() * 100:.1f} %"
    seconds = time.perf_counter() - start
    print(f"{len(cells)} cells in {seconds:.0f} s; before issue 33: power at the printed MDE {before}")
    ok = 0.75 <= low and high <= 0.85
    print(f"RESULT mde_power {low * 100:.1f}-{high * 100:.1f} % target 75-85 {'PASS' if ok else 'FAIL'}")
    print()
    print("unit kinds: sae - channel, 95 % interval (the same participants rate both kinds)")
    print(kinds.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    cover = (kinds["coverage"].min(), kinds["coverage"].max())
    ratio = (kinds["se_over_sd"].min(), kinds["se_over_sd"].max())
    before = f"{kinds['before_se_over_sd'].min():.2f}-{kinds['before_se_over_sd'].max():.2f}"
    print(f"before issue 33: SE / empirical SD {before}")
    null = kinds[kinds["effect_pp"] == 0]
    margin = kinds.iloc[-1]
    print(
        f"'higher'/'lower' with no difference: at most {null['said_differ'].max():.1%}; 'equivalent' at the "
        f"{margin.effect_pp:.2f} pp margin: {margin.said_equivalent:.1%} (UNIT_KIND_FALSE_POSITIVE_RATES)"
    )
    ok = 0.93 <= cover[0] and cover[1] <= 0.97 and 0.9 <= ratio[0] and ratio[1] <= 1.1
    print(
        f"RESULT unit_kind_difference coverage {cover[0] * 100:.1f}-{cover[1] * 100:.1f} % "
        f"SE/SD {ratio[0]:.2f}-{ratio[1]:.2f} target 93-97 % and 0.9-1.1 {'PASS' if ok else 'FAIL'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(quick="--quick" in sys.argv))
