"""``source: python``: any importable callable that returns an nn.Module, and one table of sources."""

from __future__ import annotations

import csv
import typing

import pytest
import torch
import yaml
from typer.testing import CliRunner

from contracts.errors import ConfigError, PsychinterpError
from contracts.units import channel
from stimuli import registry
from stimuli.specs import ModelSource, ModelSpec, load_model_specs

TINY = {
    "id": "tiny_python",
    "display_name": "TinyConvNet (tests/model_zoo.py)",
    "source": "python",
    "constructor": "tests.model_zoo:TinyConvNet",
    "constructor_kwargs": {"width": 6},
    "layers": {"include": ["block?"]},
    "metadata": {"train_images": 1000},
}
PYTORCHCV = {
    "id": "pytorchcv_resnet10",
    "display_name": "ResNet-10 (pytorchcv, a pip package)",
    "source": "python",
    "constructor": "pytorchcv.model_provider:get_model",
    "constructor_kwargs": {"name": "resnet10", "pretrained": False},
    "layers": {"include": ["features.stage?"]},
    "metadata": {"train_images": 1281167},
}


def _saved(spec: ModelSpec, path) -> ModelSpec:
    torch.manual_seed(0)
    torch.save(registry.build_architecture(spec).state_dict(), path)
    return spec.model_copy(update={"weights_file": path})


def test_every_source_has_one_builder():
    assert set(registry.SOURCES) == set(typing.get_args(ModelSource))


def test_a_model_class_from_a_test_module(tmp_path):
    spec = _saved(ModelSpec.model_validate(TINY), tmp_path / "tiny.pt")
    model = registry.load_model(spec)
    assert type(model.module).__name__ == "TinyConvNet" and model.module.block1[0].out_channels == 6
    reference = torch.load(tmp_path / "tiny.pt")
    assert torch.equal(model.module.state_dict()["block2.0.weight"], reference["block2.0.weight"])
    layers = registry.eligible_layers(model)
    assert [(layer.name, layer.channels, layer.layout) for layer in layers] == [
        ("block1", 6, "conv"),
        ("block2", 12, "conv"),
    ]
    images = torch.rand(2, 3, 224, 224)
    acts = registry.unit_activations(model, images, {"block2": [channel(0), channel(11)]})
    with torch.no_grad():
        expected = model.module.block2(model.module.block1(model.normalize(images))).mean(dim=(2, 3))[:, [0, 11]]
    assert torch.allclose(acts["block2"], expected, atol=1e-6)
    assert registry.parameter_count(spec) == sum(p.numel() for p in model.module.parameters())


def test_a_model_from_a_pip_package(tmp_path):
    spec = _saved(ModelSpec.model_validate(PYTORCHCV), tmp_path / "resnet10.pt")
    model = registry.load_model(spec)
    assert type(model.module).__module__ == "pytorchcv.models.resnet"
    assert [layer.name for layer in registry.eligible_layers(model)] == [f"features.stage{k}" for k in range(1, 5)]
    assert registry.parameter_count(spec) == 5_418_792


def test_a_model_from_a_repository_folder_that_is_not_installed(tmp_path):
    repo = tmp_path / "paper_code"
    repo.mkdir()
    (repo / "cornet_mini.py").write_text(
        "from torch import nn\n"
        "def cornet_mini(channels=4):\n"
        "    return nn.Sequential(nn.Conv2d(3, channels, 3), nn.ReLU(), nn.Conv2d(channels, channels, 3))\n"
    )
    entry = {**TINY, "constructor": "cornet_mini:cornet_mini", "constructor_kwargs": {"channels": 5}}
    entry |= {"import_path": ["paper_code"], "layers": {"include": ["[02]"]}, "weights_file": "mini.pt"}
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"models": [entry]}))
    spec = load_model_specs(tmp_path / "models.yaml")["tiny_python"]
    assert spec.import_path == [tmp_path / "paper_code"]
    torch.save(registry.build_architecture(spec).state_dict(), tmp_path / "mini.pt")
    layers = registry.eligible_layers(registry.load_model(spec))
    assert [(layer.name, layer.channels) for layer in layers] == [("0", 5), ("2", 5)]


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"constructor": "no_such_package.models:build"},
            "model 'tiny_python': cannot import 'no_such_package.models'",
        ),
        ({"constructor": "tests.model_zoo:Missing"}, "'tests.model_zoo' has no attribute 'Missing'"),
        ({"constructor": "tests.model_zoo:NOT_CALLABLE"}, "'tests.model_zoo:NOT_CALLABLE' is a int, not callable"),
        ({"constructor": "tests.model_zoo:not_a_module"}, "returned str, not a torch.nn.Module"),
        ({"constructor": "tests.model_zoo:broken"}, "raised RuntimeError: checkpoint layout unknown"),
        ({"constructor_kwargs": {"depth": 3}}, "raised TypeError: .*unexpected keyword argument 'depth'"),
        ({"import_path": ["/nonexistent/folder"]}, r"import_path folder\(s\) \['/nonexistent/folder'\] do not exist"),
    ],
)
def test_an_entry_that_cannot_be_built_gets_one_clear_error(change, message):
    with pytest.raises(PsychinterpError, match=message):
        registry.build_architecture(ModelSpec.model_validate({**TINY, **change}))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"constructor": "TinyConvNet"}, "source python needs 'package.module:callable'"),
        ({"weights": "IMAGENET1K_V1"}, "source python has no hub, so no weights tag"),
        ({"source": "timm", "import_path": ["x"]}, "import_path is only for source python"),
    ],
)
def test_bad_python_entries_are_refused_when_the_models_file_is_read(tmp_path, change, message):
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [{**TINY, **change}]}))
    with pytest.raises(
        ConfigError, match=f"models.yaml: 1 invalid field.*\n.*models\\[0\\]\\(id=tiny_python\\).*{message}"
    ):
        load_model_specs(path)


def test_without_a_weights_file_python_models_say_they_have_no_hub(monkeypatch):
    monkeypatch.delenv("PSYCHINTERP_OFFLINE", raising=False)
    with pytest.raises(registry.WeightsUnavailableError, match="'python' has no hub, and no weights file is given"):
        registry.load_model(ModelSpec.model_validate(TINY))


@pytest.mark.slow
def test_build_serve_analyze_with_a_python_model(tmp_path):
    """End to end: a study of a source-python model, built, taken by scripted participants, exported, analysed."""
    from contracts.bundle import load_bundle
    from experiment_server import create_app
    from psychinterp.cli import app
    from psychinterp.scripted import run_session
    from tests.conftest import write_tiny_study
    from tests.server_helpers import correct_choice

    study = write_tiny_study(tmp_path, units=3)
    _saved(ModelSpec.model_validate(TINY), tmp_path / "python.pt")
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"models": [{**TINY, "weights_file": "python.pt"}]}))
    config = yaml.safe_load(study.read_text())
    config |= {
        "models": ["tiny_python"],
        "tasks": {"trials_per_task": 3, "catch_trials_per_task": 1, "practice_trials": 1},
    }
    study.write_text(yaml.safe_dump(config))
    runner = CliRunner()
    out = tmp_path / "bundle"
    result = runner.invoke(app, ["build", str(study), "--out", str(out)])
    assert result.exit_code == 0, result.output
    bundle = load_bundle(out)
    assert {u.model_id for u in bundle.manifest.units} == {"tiny_python"}
    assert {u.layer for u in bundle.manifest.units} <= {"block1", "block2"}
    assert {r.kind for r in bundle.manifest.reference_images} == {"natural", "synthetic"}

    db = f"sqlite:///{tmp_path / 'study.db'}"
    client = create_app({"bundle_dir": out, "database_url": db}).test_client()
    for _ in range(6):
        run_session(client, lambda trial: (correct_choice(bundle, trial, client), 3))
    csv_path = tmp_path / "responses.csv"
    assert runner.invoke(app, ["export", str(out), "--db", db, "--out", str(csv_path)]).exit_code == 0
    rows = [r for r in csv.DictReader(csv_path.open()) if r["trial_kind"] == "main"]
    assert rows and {r["model_id"] for r in rows} == {"tiny_python"} and {r["correct"] for r in rows} == {"1"}
    report = tmp_path / "report"
    args = ["analyze", str(csv_path), "--bundle", str(out), "--out", str(report), "--resamples", "100"]
    result = runner.invoke(app, [*args, "--exclusions", "none"])
    assert result.exit_code == 0, result.output
    accuracy = list(csv.DictReader((report / "accuracy.csv").open()))
    assert {a["model_id"] for a in accuracy} == {"tiny_python"} and {float(a["accuracy"]) for a in accuracy} == {1.0}


def test_the_readmes_python_source_example_builds():
    """README's `source: python` entry is a valid models.yaml entry that builds (docs kept equal to code)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "source: python" in b)
    spec = ModelSpec.model_validate(yaml.safe_load(block)[0])
    layers = registry.matching_module_names(registry.build_architecture(spec), spec.layers.include)
    assert spec.source == "python" and layers == [f"features.stage{k}" for k in (1, 2, 3)]
