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

from dataclasses import dataclass, replace

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


def model_sd_draws(responses: pd.DataFrame, n_draws: int = 4000, seed: int = 0) -> np.ndarray:
    """Draws of the model SD from its confidence distribution, given a pilot.

    The model means' variance S rests on models - 1 degrees of freedom (8 for 9 models); under the
    simulation's model, S * df / E[S] is chi-square on df, so E[S] = S * df / chi2 is drawn (the
    confidence distribution of the pilot's expected spread), and the model variance solved from it
    with the lower levels at their estimates (they rest on hundreds of units and participants). A
    draw below the lower levels' noise gives 0 for that draw only: a pilot whose own estimate was
    clipped to 0 still gets positive draws, in the share that its spread allows.
    """
    frame = main_trials(responses)
    system, observed, base = _moment_system(frame)
    if np.isnan(observed[2]):
        return np.zeros(n_draws)
    df = frame["model_id"].nunique() - 1
    g_e = 1 - system[2, 0]  # the model row's binomial share: observed[2] = S_m - g_e B
    spread = observed[2] + g_e * base * (1 - base)
    expected = spread * df / np.random.default_rng(seed).chisquare(df, n_draws)
    bounded = np.tile(observed, (n_draws, 1))
    bounded[:, 2] = expected - g_e * base * (1 - base)
    variances = np.linalg.solve(system, bounded.T).T[:, 0]
    return np.sqrt(np.clip(variances, 0.0, None))


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
    """A planned (or pilot) study: its models' sizes, and units, participants and trials per model.

    ``balanced``: every unit is rated equally often (as a task builder deals them out: shuffled
    rounds through the units); otherwise each trial shows a unit drawn at random.
    """

    log10_params: np.ndarray
    units: int
    participants: int
    trials: int
    balanced: bool = False


def _balanced_units(rng: np.random.Generator, shape: tuple[int, int], units: int, participants: int, trials: int):
    """Shuffled rounds through the units, dealt to participants in turn: each unit rated equally often."""
    needed = participants * trials
    rounds = -(-needed // units)
    deck = rng.permuted(np.broadcast_to(np.arange(units), (*shape, rounds, units)), axis=-1)
    return deck.reshape(*shape, rounds * units)[..., :needed].reshape(*shape, participants, trials)


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
    if design.balanced:
        chosen = _balanced_units(rng, (n_studies, n_models), units, participants, trials)
    else:
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
    family_size: int = 1,
) -> pd.DataFrame:
    """Power for each (participants per model, units per model), with its Monte Carlo 95% interval.

    ``chance`` is the paradigm's guessing accuracy (:attr:`contracts.paradigms.Paradigm.chance`);
    the test is at alpha / ``family_size``, as Holm tests a slope whose family's others are null.
    """
    if not chance < components.base <= 1:
        raise ValueError(f"mean accuracy {components.base} must lie above chance ({chance:g}) and at most 1")
    rng = np.random.default_rng(seed)
    rows = []
    for n_units in units:
        for n_participants in participants:
            design = Design(np.asarray(log10_params, float), n_units, n_participants, trials)
            means = simulate_model_means(design, slope, components, n_studies, rng, chance)
            _, significant = two_stage_test(np.asarray(log10_params, float), means, alpha / family_size)
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


def analytic_power(
    log10_params: np.ndarray,
    slope: float,
    components: VarianceComponents,
    units: int,
    participants: int,
    trials: int,
    alpha: float = 0.05,
    family_size: int = 1,
    model_sd: np.ndarray | float | None = None,
    chance: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """Power of the two-stage slope test, in closed form in the model SD: the noncentral t on models - 2 df.

    The model means scatter around the line with variance (a s_m)^2 + v, where v is what units,
    participants and binomial answers add to one model's mean of unit accuracies in the planned design,
    measured once by simulating 400 studies with no model effect; a is the share of the spread around
    a model's mean that lies between chance and 1 (the derivative of the clipped mean, which also
    scales the slope). The slope's SE is sqrt(((a s_m)^2 + v) / Sxx). It keeps within a few points of
    the full simulation (tests/test_power.py), and an array ``model_sd`` costs no more simulation. The
    test is at alpha / ``family_size``: the level at which Holm tests a slope when the family's other
    slopes are null.
    """
    from analysis.claims import detection_power

    x = np.asarray(log10_params, float)
    sxx = float(((x - x.mean()) ** 2).sum())
    s_m = np.asarray(components.model_sd if model_sd is None else model_sd, float)
    design = Design(x, units, participants, trials)
    no_model = replace(components, model_sd=0.0)
    means = simulate_model_means(design, 0.0, no_model, 400, np.random.default_rng(seed), chance)
    noise = float(means.var(axis=0, ddof=1).mean())
    within = np.hypot(components.unit_sd, components.participant_sd)
    base = components.base
    inside = stats.norm.cdf((1 - base) / within) - stats.norm.cdf((chance - base) / within) if within > 0 else 1.0
    shift = inside * slope / np.sqrt(((inside * s_m) ** 2 + noise) / sxx)
    return np.asarray([detection_power(v, 1.0, len(x) - 2, alpha / family_size) for v in np.atleast_1d(shift)]).reshape(
        np.shape(shift)
    )


POWER_QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)


@dataclass(frozen=True)
class PilotPower:
    """Power for one planned design given a pilot: its distribution over the model SD's uncertainty."""

    point: float  # at the pilot's point estimates
    expected: float  # the distribution's mean (the expected power, "assurance"): the best single number
    cautious: float  # the distribution's (1 - level) quantile: at least this, with confidence ``level``
    level: float
    quantiles: dict[float, float]  # power's quantiles (POWER_QUANTILES)


def pilot_power(
    responses: pd.DataFrame,
    log10_params: np.ndarray,
    slope: float,
    units: int,
    participants: int,
    trials: int,
    alpha: float = 0.05,
    family_size: int = 1,
    level: float = 0.9,
    chance: float = 0.5,
    n_draws: int = 4000,
    seed: int = 0,
) -> PilotPower:
    """Power of the verdict's test (Holm over ``family_size`` slopes) for a planned design, from a pilot.

    Power falls as the model SD grows, so its q quantile is the power at the model SD's 1 - q
    quantile (:func:`model_sd_draws`); the cautious number is at the SD's ``level`` quantile, and
    never above the point estimate's power. The expected power averages power over 200 evenly
    spaced quantiles of the SD. Over 40 simulated 9-model pilots its median error against brute
    force was smaller than the distribution's median's or the point estimate's
    (benchmarks/bench_power_pilot.py).
    """
    components = variance_components(responses)
    draws = model_sd_draws(responses, n_draws, seed)
    grid = (np.arange(200) + 0.5) / 200
    at = np.quantile(draws, np.concatenate([grid, [1 - q for q in POWER_QUANTILES], [level]]))
    design = (units, participants, trials)
    powers = analytic_power(
        log10_params, slope, components, *design, alpha, family_size, np.append(at, components.model_sd), chance, seed
    )
    expected = float(powers[: len(grid)].mean())
    quantiles = dict(zip(POWER_QUANTILES, map(float, powers[len(grid) : -2]), strict=True))
    point, cautious = float(powers[-1]), float(powers[-2])
    return PilotPower(point, expected, min(cautious, point), level, quantiles)
