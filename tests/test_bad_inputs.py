"""Inputs that do not belong together, or do not exist, are refused with a message that names what,
where, and the fix (issue 31's first-contact list)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from contracts.bundle import ANSWER_KEY, MANIFEST, StudyMismatchError, load_bundle
from contracts.errors import ConfigError, PsychinterpError
from psychinterp.scripted import run_session
from tests.conftest import TINY_MODEL
from tests.server_helpers import SCRIPTED_CRITERIA


def _copy_bundle(source: Path, target: Path, **manifest_changes) -> Path:
    """Another bundle: the tiny one with its manifest (and answer key) changed, e.g. another study id."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".work"))
    for name in (MANIFEST, ANSWER_KEY):
        raw = json.loads((target / name).read_text())
        changes = manifest_changes if name == MANIFEST else {"study_id": manifest_changes.get("study_id")}
        raw.update({k: v for k, v in changes.items() if v is not None})
        (target / name).write_text(json.dumps(raw))
    return target


@pytest.fixture
def served(tiny_bundle_dir, tmp_path):
    """A database in which two scripted participants took the tiny study."""
    from experiment_server import create_app

    url = f"sqlite:///{tmp_path / 'served.db'}"
    app = create_app({"bundle_dir": tiny_bundle_dir, "database_url": url, "criteria": SCRIPTED_CRITERIA})
    for _ in range(2):
        run_session(app.test_client(), lambda trial: (0, 3))
    return url


def test_export_and_analyze_refuse_another_study_naming_both(tiny_bundle_dir, served, tmp_path):
    from analysis.load import check_responses_study
    from experiment_server.db import make_session_factory
    from experiment_server.export import export_csv

    other = load_bundle(_copy_bundle(tiny_bundle_dir, tmp_path / "other", study_id="nu_small"))
    with pytest.raises(StudyMismatchError, match="never served study 'nu_small'.*it holds study 'tiny'"):
        export_csv(other, make_session_factory(served), tmp_path / "nothing.csv")
    assert not (tmp_path / "nothing.csv").exists()  # nothing half-written, no "wrote 0 responses"

    responses = tmp_path / "responses.csv"
    assert export_csv(load_bundle(tiny_bundle_dir), make_session_factory(served), responses) > 0
    with pytest.raises(StudyMismatchError, match="is of study 'tiny', but the bundle .* is of study 'nu_small'"):
        check_responses_study(responses, other)
    check_responses_study(responses, load_bundle(tiny_bundle_dir))  # its own bundle: fine


def test_a_rebuilt_bundle_is_refused_by_serve_export_and_analyze_unless_allowed(tiny_bundle_dir, served, tmp_path):
    from analysis.load import check_responses_study
    from experiment_server import create_app
    from experiment_server.db import make_session_factory
    from experiment_server.export import export_csv

    responses = tmp_path / "responses.csv"
    export_csv(load_bundle(tiny_bundle_dir), make_session_factory(served), responses)
    rebuilt_dir = _copy_bundle(tiny_bundle_dir, tmp_path / "rebuilt", title="the same study, built again")
    rebuilt = load_bundle(rebuilt_dir)
    assert rebuilt.manifest.study_id == "tiny" and rebuilt.fingerprint != load_bundle(tiny_bundle_dir).fingerprint
    config = {"bundle_dir": rebuilt_dir, "database_url": served, "criteria": SCRIPTED_CRITERIA}
    with pytest.raises(StudyMismatchError, match=r"\(2 sessions\) was collected with build .* --allow-rebuilt-bundle"):
        create_app(config)
    with pytest.raises(StudyMismatchError, match="collected with build"):
        export_csv(rebuilt, make_session_factory(served), tmp_path / "r.csv")
    with pytest.raises(StudyMismatchError, match="collected with build"):
        check_responses_study(responses, rebuilt)
    check_responses_study(responses, rebuilt, allow_rebuilt_bundle=True)
    assert export_csv(rebuilt, make_session_factory(served), tmp_path / "r.csv", allow_rebuilt_bundle=True) > 0
    create_app({**config, "allow_rebuilt_bundle": True})


def test_the_analyze_command_refuses_responses_of_another_study(tiny_bundle_dir, served, tmp_path):
    from typer.testing import CliRunner

    from psychinterp.cli import app

    runner = CliRunner()
    responses = tmp_path / "responses.csv"
    exported = runner.invoke(app, ["export", str(tiny_bundle_dir), "--out", str(responses), "--db", served])
    assert exported.exit_code == 0, exported.output
    other = _copy_bundle(tiny_bundle_dir, tmp_path / "other", study_id="nu_small")
    result = runner.invoke(app, ["analyze", str(responses), "--bundle", str(other), "--out", str(tmp_path / "r")])
    assert isinstance(result.exception, StudyMismatchError)  # main() prints it, without a traceback
    assert "of study 'tiny'" in str(result.exception) and "'nu_small'" in str(result.exception)
    assert not (tmp_path / "r" / "index.html").exists()
    refused = runner.invoke(app, ["export", str(other), "--out", str(tmp_path / "o.csv"), "--db", served])
    assert "never served study 'nu_small'" in str(refused.exception)


def test_a_relative_bundle_path_serves_the_unit_pages_images(tiny_bundle_dir, tmp_path, monkeypatch):
    """`psychinterp serve .demo/bundle` broke every image of the live unit pages (Flask resolved the path
    against the package)."""
    from experiment_server import create_app
    from experiment_server.admin import set_admin_password
    from tests.test_admin import PASSWORD, login

    monkeypatch.chdir(tiny_bundle_dir.parent)
    app = create_app({"bundle_dir": Path(tiny_bundle_dir.name), "database_url": f"sqlite:///{tmp_path / 'r.db'}"})
    set_admin_password(app.extensions["psychinterp_db"], "ada", PASSWORD)
    sha = load_bundle(tiny_bundle_dir).manifest.reference_images[0].sha256
    client = login(app.test_client())
    monkeypatch.chdir(tmp_path)  # a later change of directory does not matter either
    image = client.get(f"/admin/images/{sha}.png")
    assert image.status_code == 200 and image.data.startswith(b"\x89PNG")


def _study(tmp_path: Path, **changes) -> Path:
    study = {"study_id": "s", "models_file": "models.yaml", "models": ["m"], "units_per_model": 2}
    study |= {"dataset": {"path": "images"}, **changes}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_config_typos_are_all_listed_with_the_nearest_setting(tmp_path):
    from stimuli.study import load_study_config

    path = _study(
        tmp_path,
        units_per_modle=2,
        tasks={"trials_per_taks": 2},
        feature_visualization={"method": "calibrated", "max_step": 8},
    )
    with pytest.raises(ConfigError) as raised:
        load_study_config(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: 3 invalid field(s)")
    for typo, meant in (("units_per_modle", "units_per_model"), ("trials_per_taks", "trials_per_task")):
        assert f"{typo}: Extra inputs are not permitted; did you mean '{meant}'?" in message
    assert "max_step: Extra inputs are not permitted; did you mean 'max_steps'?" in message


def test_settings_that_do_not_go_together_are_listed_at_once_before_any_work(tmp_path):
    from stimuli.study import load_study_config

    path = _study(
        tmp_path,
        tasks={"trials_per_task": 4, "repetitions": 2, "practice_trials": 1},
        exemplars={"batches": 2},
    )
    with pytest.raises(ConfigError) as raised:
        load_study_config(path)  # the config alone: no model is loaded, no image read
    message = str(raised.value)
    assert "2 setting(s) that do not go together" in message
    assert "tasks.trials_per_task (4) exceeds the 2 units of model 'm'" in message
    assert "tasks.repetitions (2) must be below exemplars.batches (2)" in message


def test_a_layer_the_model_lacks_names_the_models_file_and_the_layers_it_has(tmp_path):
    from stimuli.registry import LoadedModel, build_architecture, eligible_layers
    from stimuli.specs import load_model_specs

    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"models": [{**TINY_MODEL, "layers": {"include": ["layer2.10.conv"]}}]}))
    spec = load_model_specs(models)["tiny_resnet18"]
    with pytest.raises(PsychinterpError) as raised:
        eligible_layers(LoadedModel(spec, build_architecture(spec)))
    message = str(raised.value)
    assert f"model 'tiny_resnet18' (in {models})" in message and "no module matches" in message
    assert "did you mean layer2.1.conv" in message and "the model's modules: conv1, bn1" in message


def test_missing_weights_name_their_model_and_the_fix(tmp_path):
    from stimuli.registry import load_model
    from stimuli.specs import load_model_specs

    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"models": [{**TINY_MODEL, "weights_file": "gone.pt"}]}))
    with pytest.raises(PsychinterpError) as raised:
        load_model(load_model_specs(models)["tiny_resnet18"])
    message = str(raised.value)
    assert f"model 'tiny_resnet18' (in {models}): weights file not found: {tmp_path / 'gone.pt'}" in message
    assert "--weights tiny_resnet18=PATH" in message


def test_the_build_warns_when_a_default_criterion_is_off_for_its_tasks(tiny_bundle_dir, caplog):
    """The tiny study's tasks have 3 main trials: too few for the query-position rule (it needs 4)."""
    from stimuli.build import assemble_bundle, plan_units
    from stimuli.exemplars import ImageTreeDataset
    from stimuli.study import load_study_config

    config = load_study_config(tiny_bundle_dir.parent / "study.yaml")
    dataset = ImageTreeDataset(config.dataset.path)
    with caplog.at_level("WARNING", logger="stimuli.build"):
        assemble_bundle(config, tiny_bundle_dir, plan_units(config, tiny_bundle_dir, dataset), dataset)
    assert "the query-position rule is off: 3 main trials are too few for 2 positions" in caplog.text
