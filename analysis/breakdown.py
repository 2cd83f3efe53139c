"""Accuracy broken down the way the published studies report it (pure functions on tidy frames).

Borowski et al. (2021) report the mean over participants of each participant's proportion
correct, with two standard errors of that mean; :func:`participant_means` gives it for any
grouping. :func:`repeat_agreement` scores repeated trials against the first showing, and
:func:`rating_summary` summarises intuitiveness ratings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.estimate import main_trials

# Columns that split a study into reported conditions, when a table has them (docs/responses.md).
BREAKDOWN_COLUMNS = {
    "instr_type": "block of the condition (Borowski et al.: none_pre / none_post are the none condition's two blocks)",
    "condition_name": "instruction condition (Borowski et al. Exp. II: which references and how many)",
    "expert_level": "participants' expertise (Borowski et al. Exp. II)",
    "unit_selection": "how the unit was chosen (Borowski et al. Exp. I: random or hand-picked)",
    "queries": "query difficulty (Zimmermann et al. 2023: easy, hard85, hard95, hard99)",
}
# What each Experiment II instruction condition is made of, shown beside it.
CONDITION_PARTS = ("instruction_grid_mode", "n_instruction_patches")


def _mean_and_sem(values: pd.Series) -> dict[str, float]:
    n = int(values.count())
    mean = float(values.mean())
    sem = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan
    return {"mean": mean, "sem": sem, "low_2sem": mean - 2 * sem, "high_2sem": mean + 2 * sem, "n_participants": n}


def participant_means(responses: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per group: the mean over participants of their accuracy on main trials, ± 2 SEM.

    ``accuracy`` is that mean; ``pooled_accuracy`` pools the group's responses; each participant
    counts once per group however many trials they saw.
    """
    frame = main_trials(responses)
    by = [c for c in by if c in frame]
    extra = [c for c in CONDITION_PARTS if c in frame and "condition_name" in by]
    per_participant = frame.groupby([*by, *extra, "participant_id"], sort=True, dropna=False)["correct"].agg(
        ["mean", "sum", "count"]
    )
    rows = []
    for key, group in per_participant.groupby(level=list(range(len(by) + len(extra))), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        summary = _mean_and_sem(group["mean"])
        rows.append(
            {
                **dict(zip([*by, *extra], key, strict=True)),
                "accuracy": summary["mean"],
                "sem": summary["sem"],
                "low_2sem": summary["low_2sem"],
                "high_2sem": summary["high_2sem"],
                "pooled_accuracy": group["sum"].sum() / group["count"].sum(),
                "n_participants": summary["n_participants"],
                "n_responses": int(group["count"].sum()),
            }
        )
    return pd.DataFrame(rows)


def breakdowns(responses: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One table per breakdown column that splits this study, plus all of them crossed when several do."""
    main = main_trials(responses)
    # A column splits the study when it takes several values within one model and condition.
    present = [
        c for c in BREAKDOWN_COLUMNS if c in main and main.groupby(["model_id", "condition"])[c].nunique().max() > 1
    ]
    tables = {column: participant_means(responses, ["model_id", "condition", column]) for column in present}
    if len(present) > 1:
        tables["+".join(present)] = participant_means(responses, ["model_id", "condition", *present])
    return tables


def repeat_agreement(responses: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """Repeated trials against their first showing: how often the same query was chosen again.

    Choosing the same image twice means being right (or wrong) twice, so agreement is
    ``correct == correct at the first showing``. Needs ``trial_kind`` "repeated" rows with
    ``first_trial_index`` (the first showing's ``trial_index``).
    """
    by = [c for c in (by or ["model_id", "condition", "instr_type"]) if c in responses]
    if "first_trial_index" not in responses or not (responses["trial_kind"] == "repeated").any():
        return pd.DataFrame()
    repeats = responses[responses["trial_kind"] == "repeated"]
    first = responses[responses["trial_kind"] != "repeated"].set_index(["participant_id", "trial_index"])["correct"]
    keys = pd.MultiIndex.from_arrays([repeats["participant_id"], repeats["first_trial_index"].astype(int)])
    paired = repeats.assign(first_correct=first.reindex(keys).to_numpy())
    paired = paired.assign(agree=(paired["correct"] == paired["first_correct"]).astype(float))
    rows = []
    for key, group in paired.groupby(by, sort=True) if by else [((), paired)]:
        key = key if isinstance(key, tuple) else (key,)
        summary = _mean_and_sem(group.groupby("participant_id")["agree"].mean())
        rows.append(
            {
                **dict(zip(by, key, strict=True)),
                "agreement": float(group["agree"].mean()),
                "participant_mean_agreement": summary["mean"],
                "low_2sem": summary["low_2sem"],
                "high_2sem": summary["high_2sem"],
                "first_accuracy": float(group["first_correct"].mean()),
                "repeat_accuracy": float(group["correct"].mean()),
                "n_repeats": len(group),
                "n_participants": summary["n_participants"],
            }
        )
    return pd.DataFrame(rows)


def rating_summary(ratings: pd.DataFrame) -> pd.DataFrame:
    """Mean rating per trial name and participant group (and phase, when known), with a 95% t interval."""
    by = [c for c in ("phase", "expert_level") if c in ratings]
    rows = []
    groups = [*by, "trial_name"]
    for key, group in ratings.groupby(groups, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        values = group["rating"].astype(float)
        n = len(values)
        sd = float(values.std(ddof=1)) if n > 1 else np.nan
        half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else np.nan
        rows.append(
            {
                **dict(zip(groups, key, strict=True)),
                "mean_rating": float(values.mean()),
                "sd": sd,
                "ci_low": float(values.mean()) - half,
                "ci_high": float(values.mean()) + half,
                "n_participants": group["participant_id"].nunique(),
            }
        )
    return pd.DataFrame(rows)
