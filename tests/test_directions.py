"""Directions and dictionary latents as units: the readouts, the dictionaries, and a study that mixes kinds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from contracts.bundle import load_bundle
from contracts.errors import ConfigError, PsychinterpError
from contracts.units import DirectionSelector, LatentSelector, UnitRef, channel
from stimuli import registry
from stimuli.dictionaries import (
    FIT_METHODS,
    Fitted,
    LoadedDictionary,
    bind,
    describe,
    read_dictionary_file,
    sample_positions,
)
from stimuli.exemplars import ImageTreeDataset, model_inputs, scan_dataset, select_exemplars
from stimuli.fv import FVRequest, FVSettings, visualise_units
from stimuli.selectors import BoundUnit, LatentReadout, LinearReadout, readout_activations, readout_positions
from stimuli.study import DictionaryConfig, DictionarySampleConfig, SAEConfig
from tests.conftest import TINY_MODEL, write_tiny_study

LAYER = "layer1.1"


def tiny_model():
    from stimuli.specs import ModelSpec

    spec = ModelSpec.model_validate(TINY_MODEL)
    torch.manual_seed(0)
    return registry.LoadedModel(spec=spec, module=registry.build_architecture(spec))


def one_hot(index: int, size: int) -> np.ndarray:
    vector = np.zeros(size, dtype=np.float32)
    vector[index] = 1.0
    return vector


def test_a_one_hot_direction_is_exactly_its_channel(tmp_path):
    from stimuli.demo.images import write_demo_dataset

    mapped = torch.randn(4, 64, 5, 5)
    direction = LinearReadout(one_hot(7, 64))
    assert torch.equal(readout_activations(mapped, [direction]), readout_activations(mapped, [channel(7)]))
    assert torch.equal(readout_positions(mapped, direction), readout_positions(mapped, channel(7)))

    model = tiny_model()
    write_demo_dataset(tmp_path / "images", images_per_class=12)
    dataset = ImageTreeDataset(tmp_path / "images")
    units = [BoundUnit(LAYER, channel(7)), BoundUnit(LAYER, direction)]
    scan = np.asarray(scan_dataset(model, units, dataset, tmp_path / "acts.npy", batch_size=16).activations)
    assert np.array_equal(scan[:, 0], scan[:, 1])
    assert select_exemplars(scan[:, 0], 2, 9, seed=3) == select_exemplars(scan[:, 1], 2, 9, seed=3)

    settings = FVSettings(image_size=32, padding=4, max_steps=24, min_steps=8, window=8, diverse_images=2)
    targets = float(scan[:, 0].max()), float(scan[:, 0].min())
    (as_channel,), _ = visualise_units(model, [FVRequest(LAYER, channel(7), *targets)], settings, seed=5)
    (as_direction,), _ = visualise_units(model, [FVRequest(LAYER, direction, *targets)], settings, seed=5)
    for a, b in zip(as_channel, as_direction, strict=True):
        assert np.array_equal(a.pixels, b.pixels) and a.activation == b.activation and a.diversity == b.diversity


def test_a_latent_activation_is_the_mean_over_positions_of_its_rectified_encoding():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 4, 5)).astype(np.float32)
    weights = rng.normal(size=(4, 6)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    readouts = [LatentReadout(weights[i], float(bias[i])) for i in range(4)]
    fast = readout_activations(torch.from_numpy(x), readouts).numpy()
    brute = np.zeros((3, 4))
    for n in range(3):
        for i in range(4):
            values = [
                max(0.0, sum(float(weights[i, c]) * float(x[n, c, h, w]) for c in range(6)) + float(bias[i]))
                for h in range(4)
                for w in range(5)
            ]
            brute[n, i] = np.mean(values)
    np.testing.assert_allclose(fast, brute, rtol=1e-5, atol=1e-6)
    per_position = readout_positions(torch.from_numpy(x), readouts[1]).numpy()
    assert per_position.shape == (3, 4, 5) and per_position.min() >= 0

    # Through a real network's hook: the same as computing it on the captured layer output by hand.
    model = tiny_model()
    images = torch.rand(2, 3, 64, 64)
    w = rng.normal(size=(2, 64)).astype(np.float32)
    units = [LatentReadout(w[0], 0.1), LatentReadout(w[1], -0.2)]
    acts = registry.unit_activations(model, images, {LAYER: units})[LAYER].numpy()
    with registry.capture_outputs(model.module, [LAYER]) as captured, torch.no_grad():
        model.module(model.normalize(images))
    out = captured[LAYER].numpy()
    by_hand = np.maximum(np.einsum("nchw,kc->nkhw", out, w) + np.array([0.1, -0.2])[None, :, None, None], 0)
    np.testing.assert_allclose(acts, by_hand.mean(axis=(2, 3)), rtol=1e-4, atol=1e-5)


def _clustered_positions(seed: int = 0, n: int = 600, channels: int = 12) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.normal(size=(4, channels))) * 3
    return (centres[rng.integers(4, size=n)] + np.abs(rng.normal(scale=0.3, size=(n, channels)))).astype(np.float32)


@pytest.mark.parametrize("method", sorted(FIT_METHODS))
def test_computed_dictionaries_are_reproducible_for_a_seed(method):
    x = _clustered_positions()
    config = DictionaryConfig(
        name="d", method=method, size=6, units_per_model=1, sae=SAEConfig(steps=300, batch_size=128, l1=0.02)
    )
    first, again, other = (FIT_METHODS[method](x, config, seed) for seed in (0, 0, 1))
    assert first.weights.shape == (6, 12) and first.weights.dtype == np.float32
    assert np.array_equal(first.weights, again.weights) and first.fit == again.fit
    if first.bias is not None:
        assert np.array_equal(first.bias, again.bias)
    if method != "pca":  # PCA has no randomness to speak of on a dense sample
        assert not np.array_equal(first.weights, other.weights)
    assert 0 <= first.fit["reconstruction_error"] < 1
    if method == "sae":
        assert first.form == "latent" and 0 < first.fit["mean_l0"] < 6
    else:
        np.testing.assert_allclose(np.linalg.norm(first.weights, axis=1), 1, rtol=1e-5)


def test_dead_rows_are_not_live():
    x = _clustered_positions()
    weights = np.stack([one_hot(0, 12), np.zeros(12, np.float32), one_hot(3, 12)])
    dead_latent = Fitted("latent", weights, np.array([0.0, 0.0, -1e6], np.float32))
    assert dead_latent.live_rows(x) == [0]
    assert Fitted("direction", weights).live_rows(x) == [0, 2]


def test_dictionary_files_in_every_format_are_read_and_checked(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    directions = rng.normal(size=(5, 8)).astype(np.float32)
    np.save(tmp_path / "d.npy", directions)
    read = read_dictionary_file(tmp_path / "d.npy", 8)
    assert read.form == "direction" and np.array_equal(read.weights, directions) and read.bias is None

    # SAELens' layout: W_enc is channels x latents, and the encoder sees x - b_dec.
    w_enc, b_enc, b_dec = (rng.normal(size=s).astype(np.float32) for s in ((8, 5), (5,), (8,)))
    save_file(
        {"W_enc": w_enc, "b_enc": b_enc, "b_dec": b_dec, "W_dec": w_enc.T.copy()}, str(tmp_path / "sae.safetensors")
    )
    sae = read_dictionary_file(tmp_path / "sae.safetensors", 8)
    x = rng.normal(size=(10, 8)).astype(np.float32)
    np.testing.assert_allclose(sae.responses(x), np.maximum((x - b_dec) @ w_enc + b_enc, 0), rtol=1e-5, atol=1e-5)
    torch.save(
        {"encoder.weight": torch.from_numpy(w_enc.T.copy()), "encoder.bias": torch.from_numpy(b_enc)},
        tmp_path / "sae.pt",
    )
    assert read_dictionary_file(tmp_path / "sae.pt", 8).form == "latent"
    np.savez(tmp_path / "d.npz", directions=directions)
    assert np.array_equal(read_dictionary_file(tmp_path / "d.npz", 8).weights, directions)

    bad = [
        ("d.npy", 9, "has shape (5, 8); expected (size, channels) with channels = 9"),
        ("sae.safetensors", 7, "W_enc has shape (8, 5); expected (channels, size)"),
    ]
    for name, channels, message in bad:
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read_dictionary_file(tmp_path / name, channels)
    np.save(tmp_path / "nan.npy", np.full((2, 8), np.nan, np.float32))
    torch.save({"encoder.weight": torch.zeros(3, 8)}, tmp_path / "nobias.pt")
    np.savez(tmp_path / "two.npz", a=directions, b=directions)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    for name, message in (
        ("nan.npy", "NaN or infinite"),
        ("nobias.pt", "no encoder bias"),
        ("two.npz", "holds \\['a', 'b'\\]"),
        ("junk.safetensors", "cannot be read as .safetensors"),
        ("missing.npy", "not found"),
    ):
        with pytest.raises(ConfigError, match=message) as err:
            read_dictionary_file(tmp_path / name, 8)
        assert name in str(err.value)


def test_the_position_sample_is_bounded_and_seeded(tmp_path):
    from stimuli.demo.images import write_demo_dataset

    write_demo_dataset(tmp_path / "images", images_per_class=12)
    dataset = ImageTreeDataset(tmp_path / "images")
    model = tiny_model()
    sample = DictionarySampleConfig(images=10, positions_per_image=7)
    a = sample_positions(model, [LAYER, "layer2.0"], dataset, sample, seed=4, batch_size=3)
    b = sample_positions(model, [LAYER, "layer2.0"], dataset, sample, seed=4, batch_size=8)
    assert a[LAYER].shape == (70, 64) and a["layer2.0"].shape == (70, 128)
    np.testing.assert_allclose(a[LAYER], b[LAYER], rtol=1e-5, atol=1e-6)  # the batch size changes nothing
    c = sample_positions(model, [LAYER], dataset, sample, seed=5, batch_size=3)
    assert not np.allclose(a[LAYER], c[LAYER])


def test_binding_a_selector_needs_its_dictionary():
    weights = np.eye(3, 64, dtype=np.float32)
    info = describe(
        Fitted("direction", weights), name="km", model_id="m", layer=LAYER, method="kmeans", source="t", live=[0, 1, 2]
    )
    table = {(LAYER, "km"): LoadedDictionary(info, weights, None)}
    bound = bind(UnitRef(model_id="m", layer=LAYER, selector=DirectionSelector(dictionary="km", index=2)), table)
    assert np.array_equal(bound.readout.vector, weights[2])
    assert bind(UnitRef(model_id="m", layer=LAYER, selector=channel(4)), table).readout == channel(4)
    with pytest.raises(PsychinterpError, match="no dictionary 'sae'"):
        bind(UnitRef(model_id="m", layer=LAYER, selector=LatentSelector(dictionary="sae", index=0)), table)


def _mixed_study(root, dictionaries, units=2):
    path = write_tiny_study(root, units=units)
    study = yaml.safe_load(path.read_text())
    study["dictionaries"] = dictionaries
    study["dictionary_sample"] = {"images": 30, "positions_per_image": 8}
    path.write_text(yaml.safe_dump(study))
    return path


def test_a_study_mixes_channels_with_kmeans_directions_and_sae_latents(tmp_path):
    from experiment_server.export import unit_columns
    from stimuli.build import build_study
    from stimuli.study import load_study_config

    config = load_study_config(
        _mixed_study(
            tmp_path,
            [
                {"name": "kmeans", "method": "kmeans", "size": 6, "units_per_model": 2, "layers": [LAYER]},
                {"name": "sae", "method": "sae", "size": 32, "units_per_model": 2, "sae": {"steps": 200}},
            ],
        )
    )
    bundle = build_study(config, tmp_path / "b")
    bundle = load_bundle(tmp_path / "b", verify_hashes=True)
    manifest = bundle.manifest
    kinds = sorted(u.unit_kind for u in manifest.units)
    assert kinds == ["channel", "channel", "kmeans", "kmeans", "sae", "sae"]
    assert {(d.name, d.layer) for d in manifest.dictionaries} >= {("kmeans", LAYER), ("sae", LAYER)}
    sae_layers = {d.layer for d in manifest.dictionaries if d.name == "sae"}
    assert sae_layers == {"layer1.0", "layer1.1", "layer2.0", "layer2.1"}  # every eligible layer by default
    for unit in manifest.units:
        if unit.unit_kind != "channel":
            dictionary = manifest.dictionary(unit.model_id, unit.layer, unit.selector.dictionary)
            assert unit.selector.index in dictionary.live
            assert unit.unit_id.endswith(f"__{dictionary.name}-{unit.selector.index}")
            columns = unit_columns(manifest, unit)
            assert columns["unit_kind"] == dictionary.name and columns["dictionary_method"] == dictionary.method
            assert columns["channel"] is None and columns["dictionary_row"] == unit.selector.index
    sae = next(d for d in manifest.dictionaries if d.name == "sae")
    assert sae.form == "latent" and {"reconstruction_error", "mean_l0", "dead_latents"} <= set(sae.fit)

    # Each recorded exemplar activation is the unit's response to that image, computed afresh.
    from stimuli.dictionaries import load_dictionary
    from stimuli.images import decode_stored_view

    unit = next(u for u in manifest.units if u.unit_kind == "sae")
    table = {(d.layer, d.name): load_dictionary(bundle.root, d) for d in manifest.dictionaries}
    bound = bind(UnitRef(model_id=unit.model_id, layer=unit.layer, selector=unit.selector), table)
    model = registry.load_model(_tiny_spec(), tmp_path / "tiny.pt")
    natural = [r for r in manifest.reference_images if r.unit_id == unit.unit_id and r.kind == "natural"][:3]
    dataset_root = config.dataset.path
    pixels = np.stack([decode_stored_view(dataset_root / r.source) for r in natural])
    images = model_inputs(model, torch.from_numpy(pixels).permute(0, 3, 1, 2))
    fresh = registry.unit_activations(model, images, {unit.layer: [bound.readout]})[unit.layer][:, 0].numpy()
    np.testing.assert_allclose(fresh, [r.activation for r in natural], rtol=1e-4, atol=1e-5)
    assert any(r.kind == "synthetic" for r in manifest.reference_images if r.unit_id == unit.unit_id)

    # A rebuild reuses the plan and its dictionaries.
    plan = json.loads((tmp_path / "b" / ".work" / "plan.json").read_text())
    assert [d["sha256"] for d in plan["dictionaries"]] == [d.sha256 for d in manifest.dictionaries]


def _tiny_spec():
    from stimuli.specs import ModelSpec

    return ModelSpec.model_validate(TINY_MODEL)


def test_dictionary_config_errors_name_the_problem(tmp_path):
    from stimuli.study import load_study_config

    cases = [
        ({"name": "channel", "method": "kmeans", "size": 4, "units_per_model": 1}, "is the kind of channel units"),
        ({"name": "k", "method": "kmeans", "units_per_model": 1}, "needs a size"),
        ({"name": "f", "method": "file", "units_per_model": 1}, "needs files"),
        ({"name": "bad-name", "method": "pca", "size": 2, "units_per_model": 1}, "name"),
        ({"name": "k", "method": "kmeans", "size": 4, "units_per_model": 1, "models": ["nope"]}, "not in models"),
    ]
    for dictionary, message in cases:
        path = _mixed_study(tmp_path, [dictionary])
        with pytest.raises(ConfigError, match=message):
            load_study_config(path)


def test_a_file_dictionary_of_the_wrong_width_is_refused_at_planning(tmp_path):
    from stimuli.build import build_study
    from stimuli.study import load_study_config

    np.save(tmp_path / "narrow.npy", np.eye(4, 32, dtype=np.float32))
    path = _mixed_study(
        tmp_path,
        [{"name": "mine", "method": "file", "units_per_model": 1, "files": {"tiny_resnet18": {LAYER: "narrow.npy"}}}],
    )
    with pytest.raises(ConfigError, match=r"narrow.npy: the array has shape \(4, 32\); expected .* channels = 64"):
        build_study(load_study_config(path), tmp_path / "b")


def test_shards_with_dictionaries_merge_only_when_they_share_the_dictionaries(tmp_path):
    from stimuli.build import Shard, build_study, merge_shards
    from stimuli.study import load_study_config

    config = load_study_config(
        _mixed_study(
            tmp_path,
            [{"name": "pca", "method": "pca", "size": 4, "units_per_model": 2, "layers": [LAYER]}],
        )
    )
    config = config.model_copy(update={"conditions": ["natural"]})
    for i in (1, 2):
        build_study(config, tmp_path / f"shard{i}", shard=Shard(i, 2))
    merged = merge_shards(config, tmp_path / "merged", [tmp_path / "shard1", tmp_path / "shard2"])
    assert [u.unit_kind for u in merged.manifest.units].count("pca") == 2
    assert (tmp_path / "merged" / merged.manifest.dictionaries[0].file).is_file()

    plan_path = tmp_path / "shard2" / ".work" / "plan.json"
    plan = json.loads(plan_path.read_text())
    plan["dictionaries"][0]["sha256"] = "0" * 64
    plan_path.write_text(json.dumps(plan))
    with pytest.raises(PsychinterpError, match="fitted other dictionaries"):
        merge_shards(config, tmp_path / "merged-again", [tmp_path / "shard1", tmp_path / "shard2"])
