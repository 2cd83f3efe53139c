import pytest
import yaml

from contracts.errors import ConfigError
from stimuli.specs import load_model_specs
from stimuli.study import load_study_config

STUDY_MODELS = [
    "googlenet",
    "densenet201",
    "resnet50",
    "resnet50_l2_eps3",
    "clip_resnet50",
    "wide_resnet50_2",
    "vit_b32",
    "clip_vit_b32",
    "convnext_base",
]


def test_models_yaml_holds_the_nine_models_of_the_2023_study():
    specs = load_model_specs()
    assert list(specs) == STUDY_MODELS
    assert {s.source for s in specs.values()} == {"torchvision", "timm", "open_clip", "lucent"}
    for spec in specs.values():
        assert spec.weights or spec.weights_url, spec.id
        assert spec.metadata.train_images > 0
    assert specs["clip_vit_b32"].metadata.train_images > specs["clip_resnet50"].metadata.train_images


def test_bad_models_file_names_file_model_and_field(tmp_path):
    path = tmp_path / "models.yaml"
    path.write_text(
        yaml.safe_dump(
            {"models": [{"id": "mine", "display_name": "x", "source": "keras", "constructor": "x", "metadata": {}}]}
        )
    )
    with pytest.raises(ConfigError) as err:
        load_model_specs(path)
    message = str(err.value)
    assert str(path) in message
    assert "models[0](id=mine).source" in message
    assert "models[0](id=mine).layers" in message
    assert "models[0](id=mine).metadata.train_images" in message


def test_duplicate_model_ids_and_bad_yaml(tmp_path):
    entry = {
        "id": "a",
        "display_name": "a",
        "source": "timm",
        "constructor": "resnet18",
        "layers": {"include": ["layer1"]},
        "metadata": {"train_images": 1},
    }
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [entry, entry]}))
    with pytest.raises(ConfigError, match="appears twice"):
        load_model_specs(path)
    path.write_text("models: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_model_specs(path)


def test_relative_paths_resolve_against_the_config(tmp_path):
    (tmp_path / "sub").mkdir()
    study = tmp_path / "sub" / "study.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "study_id": "s",
                "models": ["m"],
                "models_file": "models.yaml",
                "units_per_model": 1,
                "dataset": {"path": "imgs"},
                "tasks": {"trials_per_task": 1, "catch_trials_per_task": 0},
            }
        )
    )
    config = load_study_config(study)
    assert config.dataset.path == tmp_path / "sub" / "imgs"
    assert config.models_file == tmp_path / "sub" / "models.yaml"


def test_bad_study_config_names_the_field(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(
        yaml.safe_dump({"study_id": "s", "models": [], "units_per_model": -1, "tasks": {"repetitions": 0}})
    )
    with pytest.raises(ConfigError) as err:
        load_study_config(study)
    for field in ("models:", "units_per_model:", "dataset:", "tasks.repetitions:"):
        assert field in str(err.value)


def test_a_main_trial_never_repeats_a_practice_trial(tmp_path):
    """The audit: with repetitions >= exemplars.batches, a main trial repeated a practice trial's query pair."""
    from stimuli.tasks import plan_study

    base = {"study_id": "s", "models": ["m"], "units_per_model": 4, "dataset": {"path": "d"}}
    study = tmp_path / "study.yaml"
    tasks = {"repetitions": 3, "trials_per_task": 2}  # 4 units: the default 40 trials are refused too
    study.write_text(yaml.safe_dump({**base, "exemplars": {"batches": 3}, "tasks": tasks}))
    with pytest.raises(ConfigError, match=r"tasks.repetitions \(3\) must be below exemplars.batches \(3\)"):
        load_study_config(study)
    study.write_text(yaml.safe_dump({**base, "exemplars": {"batches": 3}, "tasks": {**tasks, "practice_trials": 0}}))
    load_study_config(study)  # without practice nothing can repeat it

    units = {"m": ["u0", "u1", "u2", "u3"]}
    for repetitions in (1, 2):
        plan = plan_study(
            units,
            ["natural"],
            repetitions=repetitions,
            trials_per_task=2,
            catch_trials_per_task=0,
            batches=3,
            practice_units=["u0", "u1"],
        )
        main = {(t.unit_id, t.batch) for task in plan.tasks for t in task.trials}
        practice = {(t.unit_id, t.batch) for trials in plan.practice.values() for t in trials}
        assert main and practice and not main & practice
