"""Power analysis: the closed-form refit equals the analysis' model; power behaves at the extremes."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from analysis.power import Design, VarianceComponents, power_grid, two_stage_test, variance_components
from analysis.scaling import scaling_trends, unit_table
from tests.test_scaling import simulate

LOG10_PARAMS = np.linspace(6.5, 9.0, 9)


def test_closed_form_refit_equals_the_reported_scaling_model():
    frame = simulate(0.04, seed=5)
    reported = scaling_trends(frame, ["log10_parameters"]).iloc[0]
    units = unit_table(frame, ["log10_parameters"])
    means = units.groupby("model_id").agg(acc=("accuracy", "mean"), x=("log10_parameters", "first"))
    slope, significant = two_stage_test(means["x"].to_numpy(), means["acc"].to_numpy()[None, :])
    assert np.isclose(slope[0], reported["slope"]) and significant[0] == (reported["p"] < 0.05)


def test_variance_components_from_pilot_data():
    components = variance_components(simulate(0.0, seed=6))
    assert 0.75 < components.base < 0.85
    assert 0.04 < components.unit_sd < 0.13  # simulated: 0.08
    assert components.participant_sd < 0.06  # simulated: none beyond binomial noise


@pytest.mark.slow
def test_power_near_one_for_a_large_effect_and_near_alpha_for_none():
    components = VarianceComponents(base=0.8, model_sd=0.02, unit_sd=0.08, participant_sd=0.05)
    large = power_grid(LOG10_PARAMS, 0.06, components, participants=[30], units=[60], n_studies=200, seed=1)
    assert large["power"].item() > 0.95
    none = power_grid(LOG10_PARAMS, 0.0, components, participants=[30], units=[60], n_studies=600, seed=2)
    assert 0.025 < none["power"].item() < 0.08  # alpha = 0.05, Monte Carlo se about 0.009
    grid = power_grid(LOG10_PARAMS, 0.02, components, participants=[10, 40], units=[20, 80], n_studies=100, seed=3)
    assert len(grid) == 4 and grid["power"].between(0, 1).all()


def test_power_command_with_a_pilot_file(tmp_path):
    from typer.testing import CliRunner

    from psychinterp.cli import app

    pilot = tmp_path / "pilot.csv"
    simulate(0.0, seed=7).drop(columns=["log10_parameters", "log10_train_images", "imagenet_top1"]).to_csv(
        pilot, index=False
    )
    out = tmp_path / "power"
    args = ["power", "--slope", "3", "--log10-params", "6.5,7,7.5,8,8.5", "--pilot", str(pilot), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--participants", "10,20", "--units", "20", "--studies", "50"])
    assert result.exit_code == 0, result.output
    table = (out / "power.csv").read_text().splitlines()
    assert len(table) == 3 and (out / "power.png").exists() and "unit_sd" in result.output
    bad = CliRunner().invoke(app, ["power", "--slope", "3", "--log10-params", "7,8"])
    assert bad.exit_code != 0 and "three models" in str(bad.exception)
    bad = CliRunner().invoke(app, ["power", "--slope", "3", "--log10-params", "7,eight"])
    assert bad.exit_code == 2 and "'7,eight'" in bad.output


def test_simulated_accuracy_never_falls_below_the_paradigms_chance_level():
    from analysis.power import simulate_model_means

    # A wide participant spread around a mean near chance: without the floor, model means fall below it.
    noisy = VarianceComponents(base=0.55, model_sd=0.0, unit_sd=0.2, participant_sd=0.3)
    rng = np.random.default_rng(0)
    design = Design(LOG10_PARAMS, 20, 10, 40)
    floored = simulate_model_means(design, 0.0, noisy, 50, rng, chance=0.5)
    assert floored.min() >= 0.5
    unfloored = simulate_model_means(design, 0.0, noisy, 50, np.random.default_rng(0), chance=0.0)
    assert unfloored.mean() < floored.mean()
    with pytest.raises(ValueError, match=r"above chance \(0.5\)"):
        power_grid(LOG10_PARAMS, 0.0, VarianceComponents(base=0.45), participants=[5], units=[5], n_studies=2)


def test_power_workflow_refuses_designs_it_cannot_simulate(tmp_path):
    from contracts.errors import ConfigError
    from psychinterp.workflows import plan_power

    grid = {"participants": [5], "units": [5], "studies": 2}
    with pytest.raises(ConfigError, match="three models"):
        plan_power(0.03, tmp_path, log10_params=[7, 8], **grid)
    with pytest.raises(ConfigError, match="unknown paradigm 'odd'"):
        plan_power(0.03, tmp_path, log10_params=[7, 8, 9], paradigm="odd", **grid)
    with pytest.raises(ConfigError, match=r"power \(2afc\): mean accuracy 0.4 must lie above chance"):
        plan_power(0.03, tmp_path, log10_params=[7, 8, 9], components={"base": 0.4}, **grid)
    # Odd-one-out of five guesses at 1/5: a mean accuracy of 0.4 is above its chance.
    run = plan_power(0.03, tmp_path, log10_params=[7, 8, 9], paradigm="odd_one_out_5", components={"base": 0.4}, **grid)
    assert run.paradigm == "odd_one_out_5" and (tmp_path / "power.csv").exists()


def test_variance_component_estimates_are_unbiased_on_simulated_pilots():
    """On 40 pilots simulated from known components, the mean estimates lie within 15 % of the truth
    (the old per-level method of moments folded the model variance into the participants' and the
    units' noise into the models')."""
    from analysis.power import simulate_pilot

    truth = VarianceComponents(base=0.78, model_sd=0.04, unit_sd=0.1, participant_sd=0.06)
    rng = np.random.default_rng(3)
    pilot = Design(LOG10_PARAMS, units=40, participants=15, trials=40)
    estimates = [variance_components(simulate_pilot(pilot, truth, rng)) for _ in range(40)]
    for field in ("base", "model_sd", "unit_sd", "participant_sd"):
        mean = np.mean([getattr(e, field) for e in estimates])
        assert mean == pytest.approx(getattr(truth, field), rel=0.15), field


def test_pilot_power_is_a_distribution_whose_cautious_end_never_rises_above_the_point(tmp_path):
    from analysis.power import analytic_power, model_sd_draws, pilot_power, simulate_pilot
    from psychinterp.workflows import plan_power

    truth = VarianceComponents(base=0.78, model_sd=0.04, unit_sd=0.1, participant_sd=0.06)
    design = Design(LOG10_PARAMS, 30, 10, 40)
    pilot = simulate_pilot(design, truth, np.random.default_rng(1))
    assert np.median(model_sd_draws(pilot)) > variance_components(pilot).model_sd  # chi2's median < df
    result = pilot_power(pilot, LOG10_PARAMS, 0.03, 30, 20, 40, family_size=2)
    assert result.cautious <= result.point
    assert result.quantiles[0.1] <= result.quantiles[0.5] <= result.quantiles[0.9]
    assert result.cautious == pytest.approx(result.quantiles[0.1], abs=0.02)  # level 0.9
    assert pilot_power(pilot, LOG10_PARAMS, 0.03, 30, 20, 40, family_size=4).expected < result.expected
    # A pilot whose model means vary less than their noise: its estimate is clipped to 0, its draws are not,
    # and the cautious power lies well below the point estimate's.
    null_models = replace(truth, model_sd=0.0)
    pilots = (simulate_pilot(design, null_models, np.random.default_rng(seed)) for seed in range(30))
    clipped = next(p for p in pilots if variance_components(p).model_sd == 0)
    assert (model_sd_draws(clipped) > 0).mean() > 0.2
    at_zero = pilot_power(clipped, LOG10_PARAMS, 0.03, 30, 20, 40)
    point = float(analytic_power(LOG10_PARAMS, 0.03, variance_components(clipped), 30, 20, 40))
    assert at_zero.point == pytest.approx(point) and at_zero.cautious < at_zero.point - 0.05
    pilot.assign(confidence=2).to_csv(tmp_path / "pilot.csv", index=False)
    run = plan_power(
        0.03,
        tmp_path / "out",
        participants=[20],
        units=[30],
        log10_params=list(LOG10_PARAMS),
        pilot=tmp_path / "pilot.csv",
        studies=200,
        family_size=2,
    )
    row = run.table.iloc[0]
    assert run.family_size == 2 and run.level == 0.9
    assert row["cautious_power"] <= row["expected_power"] and row["cautious_power"] == pytest.approx(result.cautious)


def test_the_closed_form_power_follows_the_simulation():
    from analysis.power import analytic_power

    for components, (units, participants, trials) in [
        (VarianceComponents(0.78, 0.03, 0.1, 0.06), (40, 25, 40)),
        (VarianceComponents(0.8, 0.0, 0.08, 0.05), (20, 10, 40)),
        (VarianceComponents(0.7, 0.02, 0.15, 0.1), (80, 40, 20)),
    ]:
        closed = float(analytic_power(LOG10_PARAMS, 0.03, components, units, participants, trials, family_size=2))
        grid = power_grid(LOG10_PARAMS, 0.03, components, [participants], [units], trials, 1500, family_size=2)
        assert closed == pytest.approx(grid["power"].iloc[0], abs=0.045)  # Monte Carlo SE about 0.013
