"""The budgeted design planner: its closed form against simulated studies, its optimum, its errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from analysis.design import UNITS_PER_MODEL_2023, Z95, Costs, Problem, cheapest_for, compare, fixed_units, planned
from analysis.power import Design, VarianceComponents, simulate_model_means
from psychinterp.cli import app

X = np.linspace(6.5, 9.0, 9)
UNITS_DOMINATE = VarianceComponents(base=0.75, model_sd=0.03, unit_sd=0.12, participant_sd=0.04)


def problem(components=UNITS_DOMINATE, trials=20, **kw) -> Problem:
    return Problem(X, components, Costs(per_trial=0.02, per_unit=0.05), trials, conditions=2, **kw)


def test_the_closed_form_matches_simulated_studies_within_ten_percent():
    rng = np.random.default_rng(0)
    plan = problem()
    no_model = replace(UNITS_DOMINATE, model_sd=0.0)
    for units, participants in [(300, 40), (85, 60), (40, 8)]:
        allocation = plan.allocation("x", units, participants)
        design = Design(X, units, participants, plan.trials, balanced=True)  # as a task builder deals units
        means = simulate_model_means(design, 0.0, no_model, 300, rng)
        simulated = means.var(axis=0, ddof=1).mean()
        assert simulated == pytest.approx((allocation.half_width / Z95) ** 2, rel=0.10), (units, participants)


def test_the_planner_is_the_optimum_and_beats_the_2023_allocation():
    plan = problem()
    best = planned(plan, 3000)
    assert best.cost <= 3000
    # No other whole number of units with the same budget does better (grid over units).
    for units in np.unique(np.geomspace(plan.trials, 5000, 60).astype(int)):
        per_model = 3000 / plan.models - plan.costs.per_unit * units
        participants = int(per_model / (plan.conditions * plan.costs.per_trial) // plan.trials)
        if participants >= 1:
            assert plan.allocation("grid", units, participants).half_width >= best.half_width * 0.99
    old = fixed_units(plan, UNITS_PER_MODEL_2023, "2023", budget=3000)
    assert best.half_width < 0.6 * old.half_width and old.cost <= 3000
    # The cheapest way to a 3 pp half-width reaches it, and costs less than the 2023 way.
    target = cheapest_for(plan, half_width=0.03)
    assert target.half_width <= 0.03 and target.cost < fixed_units(plan, 85, "2023", half_width=0.03).cost / 1.5
    table = compare(plan, 3000, half_width=0.03)
    assert list(table["allocation"]) == ["planner", "2023, same budget", "2023, same precision"]


def test_targets_that_cannot_be_reached_say_why_and_what_would():
    plan = problem()
    with pytest.raises(ValueError, match=r"cannot go below .* pp per decade .* needs about \d+ models"):
        cheapest_for(plan, slope_se=0.001)
    with pytest.raises(ValueError, match="needs a budget of .* is not enough"):
        compare(plan, 200, half_width=0.01)
    with pytest.raises(ValueError, match="below one participant per cell"):
        planned(plan, 1.0)
    with pytest.raises(ValueError, match="unit spread alone"):
        fixed_units(plan, 85, "2023", half_width=0.005)
    with pytest.raises(ValueError, match="price of a trial must be positive"):
        Costs(0.0, 1.0)
    with pytest.raises(ValueError, match="distinct units"):
        problem(max_units_per_model=10)


def test_design_command_writes_the_comparison_and_refuses_bad_pilots(tmp_path):
    runner = CliRunner()
    params = ",".join(str(v) for v in X)
    args = ["design", "--budget", "3000", "--log10-params", params, "--price-per-minute", "0.15"]
    result = runner.invoke(
        app, [*args, "--seconds-per-trial", "8", "--half-width-pp", "3", "--out", str(tmp_path / "d")]
    )
    assert result.exit_code == 0, result.output
    assert "planner:" in result.output and "for the same precision" in result.output
    table = pd.read_csv(tmp_path / "d" / "design.csv")
    assert table.loc[0, "half_width_pp"] <= 3 and (tmp_path / "d" / "design.png").exists()
    missing = runner.invoke(app, args + ["--out", str(tmp_path / "e")])
    assert missing.exit_code != 0 and "--seconds-per-trial" in missing.output + str(missing.exception)
    one_model = pd.DataFrame(
        {"participant_id": ["p1", "p2"] * 4, "model_id": "m", "unit_id": ["u1", "u2", "u3", "u4"] * 2,
         "condition": "natural", "trial_kind": "main", "correct": [1, 0, 1, 1, 0, 1, 1, 1], "confidence": 2}
    )  # fmt: skip
    one_model.to_csv(tmp_path / "pilot.csv", index=False)
    refused = runner.invoke(
        app,
        ["design", "--budget", "3000", "--log10-params", params, "--price-per-trial", "0.02"]
        + ["--pilot", str(tmp_path / "pilot.csv"), "--out", str(tmp_path / "f")],
    )
    assert refused.exit_code != 0 and "has 1 model" in str(refused.exception)


def test_a_machine_pays_only_where_people_cannot_rate_every_unit_it_scores():
    from analysis.design import MachineAssist

    assisted = problem(machine=MachineAssist(correlation=0.8, scored_units=400))
    # V = s_u^2 / U (1 - (1 - U / S) rho^2) + responses' term / N: the PPI variance of analysis.ppi.
    s_u2 = UNITS_DOMINATE.unit_sd**2
    expected = s_u2 / 50 * (1 - (1 - 50 / 400) * 0.64) + assisted.response_term / 1000
    assert assisted.cell_variance(50, 1000) == pytest.approx(expected)
    # Rating a unit costs only its ratings: with responses for every scored unit, people rate them all, and
    # the machine adds nothing over the people-only planner (which builds and rates as many units itself).
    rich = compare(assisted, 3000).set_index("allocation")
    assert rich.loc["planner", "units_per_model"] == 400
    assert rich.loc["planner", "half_width_pp"] >= rich.loc["planner, people only", "half_width_pp"] - 1e-9
    # Each rated unit rated 20 times (per-unit accuracies): people rate few units, the machine averages over many.
    strict = problem(machine=MachineAssist(correlation=0.8, scored_units=400), min_ratings_per_unit=20)
    table = compare(strict, 600).set_index("allocation")
    assert table.loc["planner", "units_per_model"] < 400 and table.loc["planner", "cost"] <= 600
    assert (
        table.loc["planner", "ratings_per_unit"] >= 20 and table.loc["planner, people only", "ratings_per_unit"] >= 20
    )
    assert table.loc["planner", "half_width_pp"] < table.loc["planner, people only", "half_width_pp"]
    with pytest.raises(ValueError, match="the spread it explains alone gives a half-width"):
        cheapest_for(problem(machine=MachineAssist(0.9, 20)), half_width=0.005)
    with pytest.raises(ValueError, match=r"correlation must lie in \[0, 1\)"):
        MachineAssist(1.2, 10)


def test_design_cli_plans_with_a_machine(tmp_path):
    args = ["design", "--budget", "600", "--log10-params", "6.5,7,7.5,8,8.5,9", "--price-per-trial", "0.02"]
    machine = ["--machine-r", "0.9", "--scored-units", "300", "--min-ratings-per-unit", "20", "--unit-sd", "0.15"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path), *machine])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "design.csv").set_index("allocation")
    assert table.loc["planner", "half_width_pp"] < table.loc["planner, people only", "half_width_pp"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path), "--machine-r", "0.8"])
    assert "a machine needs both --machine-r and --scored-units" in str(result.exception)
