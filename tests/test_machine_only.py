"""Machine-only units: sampled and scanned by the build, scored by the study's observer, never shown to people;
the prediction-powered analysis averages over them."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from contracts.bundle import load_bundle
from tests.conftest import write_tiny_study


@pytest.fixture(scope="module")
def machine_bundle(tmp_path_factory):
    from psychinterp.workflows import build_bundle

    root = tmp_path_factory.mktemp("machine_only")
    study = write_tiny_study(
        root, units=3, machine_scoring={"observer": "pixel", "machine_only_units_per_model": 4, "lapse": 0.1}
    )
    return build_bundle(study, root / "bundle"), study


def test_the_build_keeps_machine_only_units_out_of_every_task_and_scores_them_all(machine_bundle):
    bundle, _ = machine_bundle
    manifest = bundle.manifest
    shown = {u.unit_id for u in manifest.units}
    machine = {u.unit_id for u in manifest.machine_only_units}
    assert len(shown) == 3 and len(machine) == 4 and not shown & machine
    served = {t.unit_id for t in manifest.all_trials()}
    assert served <= shown  # no task or practice trial shows a machine-only unit
    assert {t.unit_id for t in manifest.machine_trials} == machine
    assert {t.condition for t in manifest.machine_trials} == {"natural", "synthetic"}
    assert all(t.trial_id.startswith("machine__") for t in manifest.machine_trials)
    assert all(t.trial_id in bundle.answer_key.answers for t in manifest.machine_trials)
    scores = pd.read_csv(bundle.root / "machine_scores.csv")
    assert set(scores["unit_id"]) == shown | machine and len(scores) == 14  # 7 units x 2 conditions
    assert (scores.set_index("unit_id").loc[list(machine), "shown_to_people"] == "no").all()
    assert (scores["lapse"] == 0.1).all() and (scores["bundle_fingerprint"] == bundle.fingerprint).all()
    assert load_bundle(bundle.root).manifest.machine_only_units == manifest.machine_only_units


def test_a_rerun_keeps_the_scores_and_new_settings_rescore(machine_bundle):
    import yaml

    from psychinterp.workflows import build_bundle

    bundle, study = machine_bundle
    scores = bundle.root / "machine_scores.csv"
    before = scores.stat().st_mtime_ns
    build_bundle(study, bundle.root)
    assert scores.stat().st_mtime_ns == before
    config = yaml.safe_load(study.read_text())
    config["machine_scoring"]["lapse"] = 0.2
    study.write_text(yaml.safe_dump(config))
    rebuilt = build_bundle(study, bundle.root)
    assert rebuilt.fingerprint == bundle.fingerprint  # the observer's settings do not change the bundle
    assert (pd.read_csv(scores)["lapse"] == 0.2).all()


def test_the_analysis_averages_over_machine_only_units(machine_bundle, tmp_path):
    from typer.testing import CliRunner

    from psychinterp.cli import app

    bundle, _ = machine_bundle
    responses = tmp_path / "responses.csv"
    args = ["simulate", str(bundle.root), "--participants", "8", "--db", f"sqlite:///{tmp_path / 's.db'}"]
    assert CliRunner().invoke(app, [*args, "--out", str(responses)]).exit_code == 0
    report = tmp_path / "report"
    args = ["analyze", str(responses), "--bundle", str(bundle.root), "--out", str(report), "--resamples", "100"]
    result = CliRunner().invoke(
        app, [*args, "--exclusions", "none", "--machine-scores", str(bundle.root / "machine_scores.csv")]
    )
    assert result.exit_code == 0, result.output
    text = (report / "index.html").read_text()
    assert "Prediction-powered estimates" in text
    assert re.search(r"expected accuracy of pixel \(temperature 10, lapse 0\.[12]\)", text)  # the rerun test sets 0.2
    # Three rated units are too few for an interval: the page says which estimate was withheld and why.
    assert "PPI and human-only intervals withheld (3 rated unit(s), fewer than 5" in text


def test_natural_only_machine_units_need_no_visualisations(tmp_path):
    from psychinterp.workflows import build_bundle
    from stimuli.workdir import WorkDir

    scoring = {"observer": "pixel", "machine_only_units_per_model": 3, "conditions": ["natural"]}
    bundle = build_bundle(write_tiny_study(tmp_path, units=3, machine_scoring=scoring), tmp_path / "bundle")
    machine = {u.unit_id for u in bundle.manifest.machine_only_units}
    assert len(machine) == 3
    work = WorkDir(bundle.root)
    assert not any(work.fv_path(u).exists() for u in machine)  # only the scan: no optimisation was run
    assert all(work.fv_path(u.unit_id).exists() for u in bundle.manifest.units)
    assert {t.condition for t in bundle.manifest.machine_trials} == {"natural"}
    scores = pd.read_csv(bundle.root / "machine_scores.csv")
    assert set(scores.loc[scores["shown_to_people"] == "no", "condition"]) == {"natural"}


def test_machine_scoring_conditions_are_checked():
    from pydantic import ValidationError

    from stimuli.study import StudyConfig

    config = {"study_id": "s", "models": ["m"], "units_per_model": 2, "dataset": {"path": "x"}}
    config["tasks"] = {"trials_per_task": 2}
    with pytest.raises(ValidationError, match="machine_scoring.conditions: condition 'none' has no images"):
        StudyConfig.model_validate(
            {**config, "conditions": ["natural", "none"], "machine_scoring": {"conditions": ["none"]}}
        )
    with pytest.raises(ValidationError, match=r"machine_scoring.conditions: \['synthetic'\] not among"):
        StudyConfig.model_validate(
            {**config, "conditions": ["natural"], "machine_scoring": {"conditions": ["synthetic"]}}
        )


def test_people_and_machine_places_never_share_a_reserve_and_the_peoples_units_do_not_move():
    from types import SimpleNamespace

    from stimuli.build import _Places
    from stimuli.units import sample_units

    layers = [("a", 12), ("b", 20)]
    people = sample_units("m", layers, 6, seed=0)
    machine = sample_units("m", layers, 8, seed=0, taken=people, stream="machine-only")
    assert people == sample_units("m", layers, 6, seed=0)  # the machine's draw leaves the people's alone
    assert not {(u.layer, u.selector.row) for u in people} & {(u.layer, u.selector.row) for u in machine}
    config = SimpleNamespace(seed=0, acceptance=SimpleNamespace(replacements=3))
    sizes = dict(layers)
    places = _Places(
        config,
        None,
        people + machine,
        lambda unit: list(range(sizes[unit.layer])),
        machine_only=frozenset(u.unit_id for u in machine),
    )
    people_reserves = {(r.layer, r.selector.row) for u in people for r in places.reserves(u)}
    machine_reserves = {(r.layer, r.selector.row) for u in machine for r in places.reserves(u)}
    planned = {(u.layer, u.selector.row) for u in people + machine}
    assert people_reserves and machine_reserves
    assert not people_reserves & machine_reserves and not (people_reserves | machine_reserves) & planned
