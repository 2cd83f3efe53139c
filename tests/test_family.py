"""The project's own model family: shapes-world data, ShapesNet through the registry, cached training."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from contracts.errors import PsychinterpError
from stimuli.demo.family import (
    FAMILY,
    FamilyData,
    FamilyMember,
    TrainingRecipe,
    accuracy,
    create_model,
    load_image_folder,
    prepare_family,
    train_model,
)
from stimuli.demo.shapes_world import CLASSES, render, write_shapes_world

TINY = (FamilyMember("tiny_a", (4, 8, 8), 1), FamilyMember("tiny_b", (8, 8, 16), 1))


def _saturated(pixels: np.ndarray, channel: int) -> float:
    """Share of pixels where one channel is high and the other two low (a pure object colour)."""
    rgb = pixels.astype(float) / 255
    others = np.delete(rgb, channel, axis=2)
    return float(((rgb[..., channel] > 0.55) & (others.max(axis=2) < 0.4)).mean())


def test_shapes_world_classes_show_their_colour_and_the_tree_is_an_image_folder(tmp_path):
    for k, name in enumerate(CLASSES):
        pixels = render(np.random.default_rng([7, k]), name, size=64)
        channel = {"red": 0, "green": 1, "blue": 2}[name.split("_")[0]]
        # The object (at least ~5% of the image, half of it when striped) is in its class colour; the muted
        # background never is.
        assert _saturated(pixels, channel) > 0.02, name
        assert all(_saturated(pixels, other) < 0.01 for other in {0, 1, 2} - {channel}), name
    assert np.array_equal(render(np.random.default_rng(1), CLASSES[0]), render(np.random.default_rng(1), CLASSES[0]))

    root = write_shapes_world(tmp_path / "tree", 2, seed=3, size=48)
    images, labels, classes = load_image_folder(root, size=32)
    assert classes == sorted(CLASSES) and images.shape == (24, 3, 32, 32)
    assert np.bincount(labels.numpy()).tolist() == [2] * 12
    first = next(root.rglob("*.jpg"))
    stamp = first.stat().st_mtime_ns
    write_shapes_world(tmp_path / "tree", 3, seed=3, size=48)  # adds the third image per class only
    assert first.stat().st_mtime_ns == stamp and len(list(root.rglob("*.jpg"))) == 36
    assert not list(root.rglob("*.tmp"))


def test_family_grows_in_size_and_loads_through_models_yaml(tmp_path):
    import torch

    from stimuli.registry import build_architecture, eligible_layers, load_model, parameter_count
    from stimuli.specs import ModelSpec, load_model_specs

    entries = [m.spec_entry(tmp_path / f"{m.id}.pt", 100) for m in FAMILY]
    for member in FAMILY:
        architecture = build_architecture(ModelSpec.model_validate(member.spec_entry(None, 100)))
        torch.save(architecture.state_dict(), tmp_path / f"{member.id}.pt")
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"models": entries}))
    specs = load_model_specs(tmp_path / "models.yaml")
    counts = [parameter_count(specs[m.id]) for m in FAMILY]
    assert counts == sorted(counts) and counts[-1] > 10 * counts[0]  # more than a decade of scale
    model = load_model(specs["shapesnet_m"])
    layers = eligible_layers(model)
    assert [layer.name for layer in layers] == [f"stages.{i}.{j}.norm" for i in range(3) for j in range(2)]
    assert [layer.channels for layer in layers] == [16, 16, 32, 32, 64, 64]


def test_family_source_names_bad_constructors_and_has_no_hub(monkeypatch):
    from stimuli.registry import WeightsUnavailableError, load_model
    from stimuli.specs import ModelSpec

    with pytest.raises(PsychinterpError, match="no constructor 'resnet'"):
        create_model("resnet")
    with pytest.raises(PsychinterpError, match="bad constructor_kwargs"):
        create_model("shapesnet", depth=3)
    spec = ModelSpec.model_validate(FAMILY[0].spec_entry(None, 1))
    monkeypatch.delenv("PSYCHINTERP_OFFLINE", raising=False)
    with pytest.raises(WeightsUnavailableError, match="has no hub.*train them with `psychinterp train-family`"):
        load_model(spec)


def test_training_learns_the_classes_well_above_chance(tmp_path):
    train = load_image_folder(write_shapes_world(tmp_path / "train", 30, seed=1, size=64))
    val = load_image_folder(write_shapes_world(tmp_path / "val", 10, seed=2, size=64))
    model, losses = train_model(FamilyMember("t", (8, 16, 32), 1), train[0], train[1], TrainingRecipe(epochs=3))
    assert losses[-1] < losses[0]
    assert accuracy(model, val[0], val[1]) > 2 * (1 / len(CLASSES))


def test_prepare_family_caches_weights_and_retrains_only_what_changed(tmp_path):
    from contracts.units import channel
    from stimuli.registry import load_model, unit_activations
    from stimuli.specs import load_model_specs

    data = FamilyData(train=3, val=1, pool=2)
    recipe = TrainingRecipe(epochs=1, batch_size=16)
    log: list[str] = []
    models_file = prepare_family(tmp_path, data, recipe, members=TINY, log=log.append)
    assert [line.split()[1] for line in log] == ["tiny_a", "tiny_b"]
    assert {p.name for p in (tmp_path / "shapes").iterdir()} == {"train", "val", "pool"}
    weights = tmp_path / "weights" / "tiny_a.pt"
    stamp = weights.stat().st_mtime_ns

    log.clear()
    assert prepare_family(tmp_path, data, recipe, members=TINY, log=log.append) == models_file
    assert log == [] and weights.stat().st_mtime_ns == stamp
    prepare_family(tmp_path, data, TrainingRecipe(epochs=2, batch_size=16), members=TINY[:1], log=log.append)
    assert [line.split()[1] for line in log] == ["tiny_a"]

    specs = load_model_specs(models_file)
    assert list(specs) == ["tiny_a"] and specs["tiny_a"].weights_file == weights
    model = load_model(specs["tiny_a"])
    import torch

    acts = unit_activations(model, torch.rand(2, 3, 64, 64), {"stages.2.0.norm": [channel(0), channel(1)]})
    assert acts["stages.2.0.norm"].shape == (2, 2)


def test_matching_shipped_weights_are_copied_and_retrain_trains(tmp_path):
    from stimuli.demo.family import train_family
    from stimuli.demo.shapes_world import write_shapes_world

    write_shapes_world(tmp_path / "train", 3, seed=1)
    write_shapes_world(tmp_path / "val", 1, seed=2)
    recipe = TrainingRecipe(epochs=1, batch_size=16)
    log: list[str] = []
    # A folder of weights with sidecars, as the package ships them.
    train_family(tmp_path / "train", tmp_path / "val", tmp_path / "shipped", TINY, recipe, log=log.append)
    shipped = tmp_path / "shipped"

    log.clear()
    train_family(tmp_path / "train", tmp_path / "val", tmp_path / "w1", TINY, recipe, log=log.append, shipped=shipped)
    assert all("the shipped weights" in line for line in log) and len(log) == 2
    assert (tmp_path / "w1" / "tiny_a.pt").read_bytes() == (shipped / "tiny_a.pt").read_bytes()

    log.clear()  # another recipe does not match what was shipped: it trains
    other = TrainingRecipe(epochs=2, batch_size=16)
    train_family(tmp_path / "train", tmp_path / "val", tmp_path / "w2", TINY, other, log=log.append, shipped=shipped)
    assert [line.split()[0] for line in log] == ["trained", "trained"]

    log.clear()  # no shipped weights (--retrain): it trains
    train_family(tmp_path / "train", tmp_path / "val", tmp_path / "w3", TINY, recipe, log=log.append, shipped=None)
    assert [line.split()[0] for line in log] == ["trained", "trained"]


@pytest.mark.slow
def test_the_shipped_weights_are_the_family_trained_on_the_default_data(tmp_path):
    """The package's weights match their sidecars: the default recipe, this architecture, and the
    fingerprint of the default training data as this machine generates it; their recorded held-out
    accuracy is what they score."""
    import json
    from dataclasses import asdict

    import torch

    from stimuli.demo.family import (
        ARCHITECTURE_VERSION,
        DEFAULT_DATA,
        DEFAULT_RECIPE,
        SHIPPED_WEIGHTS,
        ShapesNet,
        _tree_fingerprint,
    )
    from stimuli.demo.shapes_world import write_shapes_world

    write_shapes_world(tmp_path / "train", DEFAULT_DATA.train, seed=1)
    write_shapes_world(tmp_path / "val", DEFAULT_DATA.val, seed=2)
    fingerprint = _tree_fingerprint(tmp_path / "train")
    val_x, val_y, classes = load_image_folder(tmp_path / "val")
    for member in FAMILY:
        record = json.loads((SHIPPED_WEIGHTS / f"{member.id}.json").read_text())
        assert record["architecture"] == ARCHITECTURE_VERSION and record["member"] == json.loads(
            json.dumps(asdict(member))
        )
        assert record["recipe"] == asdict(DEFAULT_RECIPE) and record["train_data"] == fingerprint
        assert record["classes"] == classes
        model = ShapesNet(member.widths, member.blocks, num_classes=len(classes))
        model.load_state_dict(torch.load(SHIPPED_WEIGHTS / f"{member.id}.pt", weights_only=True))
        assert accuracy(model.eval(), val_x, val_y) == pytest.approx(record["val_accuracy"], abs=1e-9)
    total = sum((SHIPPED_WEIGHTS / f"{m.id}.pt").stat().st_size for m in FAMILY)
    assert total < 1.5e6  # about 1 MB in the package
