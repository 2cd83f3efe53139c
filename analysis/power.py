"""Power to detect a scaling slope, by simulating whole studies and refitting the analysis' model.

A simulated study has the planned models (their log10 parameter counts), units per model and
participants per model, each participant answering ``trials`` main trials on random units of
one model. Accuracy is

    p = base + slope * (log10 params - mean) + model effect + unit effect + participant effect

with normal effects whose standard deviations come from pilot data (:func:`variance_components`)
or are stated. A participant's accuracy on a unit is bounded below by the paradigm's chance level:
an observer can guess, but not do systematically worse than guessing. Each study is analysed with
the primary scaling estimate of :mod:`analysis.scaling` (two stages: unit accuracies, model means,
OLS across models with a t test on models - 2 degrees of freedom), computed here in closed form
for all simulated studies at once; a test checks it against :func:`analysis.scaling.scaling_trends`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from analysis.estimate import main_trials


@dataclass(frozen=True)
class VarianceComponents:
    """Standard deviations on the proportion-correct scale, and the mean accuracy."""

    base: float = 0.8
    model_sd: float = 0.02
    unit_sd: float = 0.08
    participant_sd: float = 0.05


def variance_components(responses: pd.DataFrame) -> VarianceComponents:
    """Method-of-moments estimates from pilot responses (main trials), binomial noise removed."""
    frame = main_trials(responses)
    base = float(frame["correct"].mean())

    def spread(key: str) -> float:
        groups = frame.groupby(key)["correct"].agg(["mean", "count"])
        binomial = float((groups["mean"] * (1 - groups["mean"]) / groups["count"]).mean())
        return float(np.sqrt(max(groups["mean"].var(ddof=1) - binomial, 0.0))) if len(groups) > 1 else 0.0

    unit_sd, participant_sd = spread("unit_id"), spread("participant_id")
    model_means = frame.groupby("model_id")["correct"].mean()
    model_sd = float(model_means.std(ddof=1)) if len(model_means) > 2 else 0.0
    return VarianceComponents(base, model_sd, unit_sd, participant_sd)


def simulate_model_means(
    log10_params: np.ndarray,
    slope: float,
    components: VarianceComponents,
    units: int,
    participants: int,
    trials: int,
    n_studies: int,
    rng: np.random.Generator,
    chance: float = 0.5,
) -> np.ndarray:
    """Per study and model, the mean of the unit accuracies that the analysis computes (n_studies x models)."""
    n_models = len(log10_params)
    x = log10_params - log10_params.mean()
    model = components.base + slope * x + rng.normal(0, components.model_sd, (n_studies, n_models))
    unit_p = model[..., None] + rng.normal(0, components.unit_sd, (n_studies, n_models, units))
    ability = rng.normal(0, components.participant_sd, (n_studies, n_models, participants))
    chosen = rng.integers(0, units, (n_studies, n_models, participants, trials))
    p = np.clip(np.take_along_axis(unit_p[..., None, :], chosen, axis=-1) + ability[..., None], chance, 1.0)
    correct = rng.random(p.shape) < p
    # Unit accuracy over the answers it got; units nobody saw drop out, as in a real study.
    flat = chosen.reshape(n_studies, n_models, -1)
    hits = correct.reshape(n_studies, n_models, -1)
    n = np.zeros((n_studies, n_models, units))
    k = np.zeros((n_studies, n_models, units))
    for s in range(n_studies):  # bincount per study and model keeps memory at one study's size
        for m in range(n_models):
            n[s, m] = np.bincount(flat[s, m], minlength=units)
            k[s, m] = np.bincount(flat[s, m], weights=hits[s, m], minlength=units)
    with np.errstate(invalid="ignore"):
        unit_accuracy = k / n
    return np.nanmean(unit_accuracy, axis=-1)


def two_stage_test(
    log10_params: np.ndarray, model_means: np.ndarray, alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """OLS slope of model means on log10 parameters and its two-sided t-test, for many studies at once."""
    x = log10_params - log10_params.mean()
    slope = model_means @ x / (x @ x)
    fitted = model_means.mean(axis=1, keepdims=True) + slope[:, None] * x
    df = len(x) - 2
    se = np.sqrt(((model_means - fitted) ** 2).sum(axis=1) / df / (x @ x))
    p = 2 * stats.t.sf(np.abs(slope / se), df)
    return slope, p < alpha


def power_grid(
    log10_params: np.ndarray,
    slope: float,
    components: VarianceComponents,
    participants: list[int],
    units: list[int],
    trials: int = 40,
    n_studies: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    chance: float = 0.5,
) -> pd.DataFrame:
    """Power for each (participants per model, units per model), with its Monte Carlo 95% interval.

    ``chance`` is the paradigm's guessing accuracy (:attr:`contracts.paradigms.Paradigm.chance`).
    """
    if not chance < components.base <= 1:
        raise ValueError(f"mean accuracy {components.base} must lie above chance ({chance:g}) and at most 1")
    rng = np.random.default_rng(seed)
    rows = []
    for n_units in units:
        for n_participants in participants:
            means = simulate_model_means(
                np.asarray(log10_params, float),
                slope,
                components,
                n_units,
                n_participants,
                trials,
                n_studies,
                rng,
                chance,
            )
            _, significant = two_stage_test(np.asarray(log10_params, float), means, alpha)
            power = float(significant.mean())
            half = 1.96 * np.sqrt(power * (1 - power) / n_studies)
            rows.append(
                {
                    "units_per_model": n_units,
                    "participants_per_model": n_participants,
                    "power": power,
                    "power_low": max(0.0, power - half),
                    "power_high": min(1.0, power + half),
                    "studies": n_studies,
                }
            )
    return pd.DataFrame(rows)


def power_figure(table: pd.DataFrame, slope: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for n_units, group in table.groupby("units_per_model", sort=True):
        ax.errorbar(
            group["participants_per_model"],
            group["power"],
            yerr=[group["power"] - group["power_low"], group["power_high"] - group["power"]],
            marker="o",
            capsize=3,
            label=f"{n_units} units per model",
        )
    ax.axhline(0.8, color="grey", linestyle="--", linewidth=1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("participants per model")
    ax.set_ylabel("power")
    ax.set_title(f"power to detect {slope * 100:+.1f} pp per decade", fontsize="medium")
    ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    return fig
