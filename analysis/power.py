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


def _squared_shares(frame: pd.DataFrame, group: str, by: str) -> pd.Series:
    """Per ``group``: the sum over ``by`` of (trials of that ``by`` / trials of the group) squared."""
    counts = frame.groupby([group, by]).size()
    totals = counts.groupby(level=0).transform("sum")
    return ((counts / totals) ** 2).groupby(level=0).sum()


def _moment_system(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, float]:
    """The linear system of :func:`variance_components` (unknowns s_m^2, s_u^2, s_p^2), and the base."""
    base = float(frame["correct"].mean())
    B = base * (1 - base)

    def within_model_variance(key: str) -> float:
        means = frame.groupby(["model_id", key])["correct"].mean()
        per_model = means.groupby(level=0).var(ddof=1).dropna()
        return float(per_model.mean()) if len(per_model) else 0.0

    h_u = float(_squared_shares(frame, "unit_id", "participant_id").mean())
    h_p = float(_squared_shares(frame, "participant_id", "unit_id").mean())
    g_u = float(_squared_shares(frame, "model_id", "unit_id").mean())
    g_p = float(_squared_shares(frame, "model_id", "participant_id").mean())
    e_u, e_p, g_e = (float((1 / frame.groupby(key).size()).mean()) for key in ("unit_id", "participant_id", "model_id"))
    model_means = frame.groupby("model_id")["correct"].mean()
    S_m = float(model_means.var(ddof=1)) if len(model_means) > 1 else np.nan
    # b, the binomial variance, is B - s_m^2 - s_u^2 - s_p^2.
    system = np.array(
        [
            [-e_u, 1 - e_u, h_u - e_u],
            [-e_p, h_p - e_p, 1 - e_p],
            [1 - g_e, g_u - g_e, g_p - g_e],
        ]
    )
    observed = np.array(
        [within_model_variance("unit_id") - e_u * B, within_model_variance("participant_id") - e_p * B, S_m - g_e * B]
    )
    return system, observed, base


def _solve(system: np.ndarray, observed: np.ndarray) -> tuple[float, float, float]:
    """SDs (model, unit, participant) from the system; without a model variance (one model), it is 0."""
    if np.isnan(observed[2]):
        variances = np.concatenate([[0.0], np.linalg.solve(system[:2, 1:], observed[:2])])
    else:
        variances = np.linalg.solve(system, observed)
    return tuple(float(v) for v in np.sqrt(np.clip(variances, 0.0, None)))


def model_sd_upper_bound(responses: pd.DataFrame, level: float = 0.8) -> float:
    """The model SD at the upper ``level`` confidence bound of the variance of the pilot's model means.

    The model means' variance rests on models - 1 degrees of freedom (8 for 9 models), so a pilot's
    model SD is uncertain, and power computed from the estimate scatters and runs high on average
    (benchmarks/bench_power_pilot.py). The bound: that variance times df / chi2(1 - level, df).
    """
    frame = main_trials(responses)
    system, observed, base = _moment_system(frame)
    if np.isnan(observed[2]):
        return 0.0
    df = frame["model_id"].nunique() - 1
    B = base * (1 - base)
    g_e = 1 - system[2, 0]  # the model row's binomial share: observed[2] = S_m - g_e B
    upper = (observed[2] + g_e * B) * df / stats.chi2.ppf(1 - level, df)
    bounded = observed.copy()
    bounded[2] = upper - g_e * B
    return _solve(system, bounded)[0]


def variance_components(responses: pd.DataFrame) -> VarianceComponents:
    """Moment estimates of the model, unit and participant SDs from pilot responses (main trials).

    Each level's observed spread also holds the noise of the levels below it: a unit's accuracy
    averages a few participants and trials, a participant's a few units, a model's mean all of
    them. Under the simulation's own model (additive effects on the proportion scale, Bernoulli
    answers, participants and units nested in models) the expected spreads are linear in the three
    variances, with the binomial variance b = p(1 - p) - s_m^2 - s_u^2 - s_p^2; this solves

        S_unit        = s_u^2 + h_u s_p^2 + e_u b
        S_participant = s_p^2 + h_p s_u^2 + e_p b
        S_model       = s_m^2 + g_u s_u^2 + g_p s_p^2 + g_e b

    exactly for the pilot's own counts. S: the within-model variance of unit and of participant
    accuracies, and the variance of the model means; h_u: the mean over units of the sum of squared
    shares of a unit's trials per participant (h_p the reverse), g the same shares within a model,
    e the mean of 1 / trials per unit, participant or model. Negative solutions are set to 0. A
    test checks the estimates' bias on simulated pilots (tests/test_power.py). The model SD includes
    any real scaling effect among the pilot's models, so power computed from it is conservative.
    """
    system, observed, base = _moment_system(main_trials(responses))
    model_sd, unit_sd, participant_sd = _solve(system, observed)
    return VarianceComponents(base, float(model_sd), float(unit_sd), float(participant_sd))


@dataclass(frozen=True)
class Design:
    """A planned (or pilot) study: its models' sizes, and units, participants and trials per model."""

    log10_params: np.ndarray
    units: int
    participants: int
    trials: int


def _draw_trials(
    design: Design,
    slope: float,
    components: VarianceComponents,
    n_studies: int,
    rng: np.random.Generator,
    chance: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Which unit each trial shows and whether it was answered correctly: (studies, models, participants, trials)."""
    log10_params, units, participants, trials = (
        np.asarray(design.log10_params, float),
        design.units,
        design.participants,
        design.trials,
    )
    n_models = len(log10_params)
    x = log10_params - log10_params.mean()
    model = components.base + slope * x + rng.normal(0, components.model_sd, (n_studies, n_models))
    unit_p = model[..., None] + rng.normal(0, components.unit_sd, (n_studies, n_models, units))
    ability = rng.normal(0, components.participant_sd, (n_studies, n_models, participants))
    chosen = rng.integers(0, units, (n_studies, n_models, participants, trials))
    p = np.clip(np.take_along_axis(unit_p[..., None, :], chosen, axis=-1) + ability[..., None], chance, 1.0)
    return chosen, rng.random(p.shape) < p


def simulate_pilot(
    design: Design, components: VarianceComponents, rng: np.random.Generator, slope: float = 0.0, chance: float = 0.5
) -> pd.DataFrame:
    """One simulated study as a response table (main trials), from the same model as the power grid."""
    chosen, correct = _draw_trials(design, slope, components, 1, rng, chance)
    n_models = len(design.log10_params)
    m, j, _ = np.meshgrid(np.arange(n_models), np.arange(design.participants), np.arange(design.trials), indexing="ij")
    return pd.DataFrame(
        {
            "participant_id": [f"m{a}-p{b}" for a, b in zip(m.ravel(), j.ravel(), strict=True)],
            "model_id": [f"m{a}" for a in m.ravel()],
            "unit_id": [f"m{a}-u{u}" for a, u in zip(m.ravel(), chosen[0].ravel(), strict=True)],
            "condition": "natural",
            "trial_kind": "main",
            "correct": correct[0].ravel().astype(int),
        }
    )


def simulate_model_means(
    design: Design,
    slope: float,
    components: VarianceComponents,
    n_studies: int,
    rng: np.random.Generator,
    chance: float = 0.5,
) -> np.ndarray:
    """Per study and model, the mean of the unit accuracies that the analysis computes (n_studies x models)."""
    chosen, correct = _draw_trials(design, slope, components, n_studies, rng, chance)
    n_models, units = len(design.log10_params), design.units
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


def two_stage_fit(log10_params: np.ndarray, model_means: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """OLS slope of model means on log10 parameters, its standard error and df, for many studies at once."""
    x = log10_params - log10_params.mean()
    model_means = np.atleast_2d(model_means)
    slope = model_means @ x / (x @ x)
    fitted = model_means.mean(axis=1, keepdims=True) + slope[:, None] * x
    df = len(x) - 2
    se = np.sqrt(((model_means - fitted) ** 2).sum(axis=1) / df / (x @ x))
    return slope, se, df


def two_stage_test(
    log10_params: np.ndarray, model_means: np.ndarray, alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """The two-stage slope and whether its two-sided t test rejects zero, for many studies at once."""
    slope, se, df = two_stage_fit(log10_params, model_means)
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
            design = Design(np.asarray(log10_params, float), n_units, n_participants, trials)
            means = simulate_model_means(design, slope, components, n_studies, rng, chance)
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
