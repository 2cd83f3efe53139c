import pytest
import torch

from contracts.units import channel
from stimuli import registry
from stimuli.registry import WeightsError, WeightsUnavailableError
from stimuli.specs import ModelSpec, load_model_specs
from tests.conftest import TINY_MODEL

TINY_VIT = {
    "id": "tiny_vit",
    "display_name": "tiny ViT",
    "source": "timm",
    "constructor": "vit_tiny_patch16_224",
    "constructor_kwargs": {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 24, "num_heads": 2},
    "preprocessing": {"resize": 36, "crop": 32, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    "layers": {"include": ["blocks.*"]},
    "prefix_tokens": 1,
    "fixed_input_size": True,
    "metadata": {"train_images": 1},
}


@pytest.fixture
def resnet(tmp_path):
    spec = ModelSpec.model_validate(TINY_MODEL)
    torch.manual_seed(0)
    module = registry.build_architecture(spec)
    path = tmp_path / "w.pt"
    torch.save(module.state_dict(), path)
    return spec, module, path


def test_weights_file_round_trip_and_layers(resnet):
    spec, module, path = resnet
    loaded = registry.load_model(spec, path)
    for name, tensor in module.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[name], tensor), name
    layers = registry.eligible_layers(loaded)
    assert [(l.name, l.channels, l.layout, l.index) for l in layers] == [
        ("layer1.0", 64, "conv", 0),
        ("layer1.1", 64, "conv", 1),
        ("layer2.0", 128, "conv", 2),
        ("layer2.1", 128, "conv", 3),
    ]
    assert not any(getattr(m, "inplace", False) for m in loaded.module.modules())


def test_activations_are_spatial_means_and_hooks_are_removed(resnet):
    spec, _, path = resnet
    model = registry.load_model(spec, path)
    images = torch.rand(3, 3, 64, 64)
    acts = registry.unit_activations(model, images, {"layer1.1": [channel(5), channel(0)], "layer2.0": [channel(127)]})
    m = model.module
    with torch.no_grad():
        x = m.maxpool(m.relu(m.bn1(m.conv1(model.normalize(images)))))
        l11 = m.layer1[1](m.layer1[0](x))
        l20 = m.layer2[0](l11)
    torch.testing.assert_close(acts["layer1.1"], l11.mean(dim=(2, 3))[:, [5, 0]])
    torch.testing.assert_close(acts["layer2.0"], l20.mean(dim=(2, 3))[:, [127]])
    assert all(not sub._forward_hooks for sub in m.modules())


def test_token_mean_leaves_out_the_cls_token(tmp_path):
    spec = ModelSpec.model_validate(TINY_VIT)
    torch.manual_seed(0)
    path = tmp_path / "vit.pth"
    torch.save(registry.build_architecture(spec).state_dict(), path)
    model = registry.load_model(spec, path)  # through timm's pretrained_cfg_overlay(file=...)
    images = torch.rand(2, 3, 32, 32)
    acts = registry.unit_activations(model, images, {"blocks.1": [channel(0), channel(7)]})
    m = model.module
    with torch.no_grad():
        x = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(model.normalize(images)))))
        out = m.blocks[1](m.blocks[0](x))
    torch.testing.assert_close(acts["blocks.1"], out[:, 1:, :].mean(dim=1)[:, [0, 7]])
    assert not torch.allclose(acts["blocks.1"], out.mean(dim=1)[:, [0, 7]])
    layers = registry.eligible_layers(model)
    assert [(l.name, l.channels, l.layout) for l in layers] == [("blocks.0", 24, "tokens"), ("blocks.1", 24, "tokens")]


def test_training_checkpoint_with_wrapper_prefixes(resnet, tmp_path):
    spec, module, _ = resnet
    state = module.state_dict()
    # The layout of Madry lab's `robustness` checkpoints: a model wrapped twice, plus an attacker copy.
    checkpoint = {
        "model": {
            **{f"module.model.{k}": v for k, v in state.items()},
            **{f"module.attacker.model.{k}": torch.zeros_like(v) for k, v in state.items()},
            "module.normalizer.new_mean": torch.zeros(3),
        },
        "epoch": 7,
    }
    path = tmp_path / "robust.ckpt"
    torch.save(checkpoint, path)
    loaded = registry.load_model(spec, path)
    torch.testing.assert_close(loaded.module.conv1.weight, state["conv1.weight"])


def test_bad_weights_files_get_clear_errors(resnet, tmp_path):
    spec, _, _ = resnet
    with pytest.raises(WeightsError, match="not found"):
        registry.load_model(spec, tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError, match="garbage.pt: not a readable weights file"):
        registry.load_model(spec, garbage)
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(WeightsError, match=r"other.pt: does not fit model 'tiny_resnet18'.*missing"):
        registry.load_model(spec, other)


def test_offline_without_weights_file_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("PSYCHINTERP_OFFLINE", "1")
    spec = load_model_specs()["resnet50"]
    with pytest.raises(WeightsUnavailableError) as err:
        registry.load_model(spec)
    assert "resnet50" in str(err.value) and "weights_file" in str(err.value)


def test_layer_patterns():
    regex = registry._pattern_regex
    assert regex("layer?.*").match("layer1.0")
    assert not regex("layer?.*").match("layer1.0.conv1")
    assert regex("stages.*.blocks.*").match("stages.2.blocks.26")
    assert regex("features.**").match("features.denseblock1.denselayer3")
    assert regex("mixed[345]?").match("mixed4e") and not regex("mixed[345]?").match("mixed4e_pool")


def _checkpoint_as_users_have_it(spec, module):
    """The weights file a user would download for this model."""
    if spec.source == "open_clip":
        import open_clip

        clip = open_clip.create_model(spec.constructor, pretrained=None)
        clip.visual.load_state_dict(module.state_dict())
        return clip.state_dict()
    if spec.id == "resnet50_l2_eps3":
        return {"model": {f"module.model.{k}": v for k, v in module.state_dict().items()}, "epoch": 90}
    return module.state_dict()


EXPECTED_LAYERS = {
    "googlenet": (9, "mixed3a", 256, "mixed5b", 1024),
    "densenet201": (7, "features.denseblock1", 256, "features.denseblock4", 1920),
    "resnet50": (16, "layer1.0", 256, "layer4.2", 2048),
    "resnet50_l2_eps3": (16, "layer1.0", 256, "layer4.2", 2048),
    "clip_resnet50": (16, "layer1.0", 256, "layer4.2", 2048),
    "wide_resnet50_2": (16, "layer1.0", 256, "layer4.2", 2048),
    "vit_b32": (12, "blocks.0", 768, "blocks.11", 768),
    "clip_vit_b32": (12, "transformer.resblocks.0", 768, "transformer.resblocks.11", 768),
    "convnext_base": (36, "stages.0.blocks.0", 128, "stages.3.blocks.2", 1024),
}


@pytest.mark.slow
@pytest.mark.parametrize("model_id", list(EXPECTED_LAYERS))
def test_every_registered_architecture_loads_from_a_local_file(model_id, tmp_path):
    spec = load_model_specs()[model_id]
    torch.manual_seed(0)
    module = registry.build_architecture(spec)
    path = tmp_path / f"{model_id}.pt"
    torch.save(_checkpoint_as_users_have_it(spec, module), path)
    del module
    spec = spec.model_copy(update={"weights_file": path})
    model = registry.load_model(spec)  # the models.yaml `weights_file` path
    assert sum(p.numel() for p in model.module.parameters()) == registry.parameter_count(spec)
    layers = registry.eligible_layers(model)
    n, first, first_c, last, last_c = EXPECTED_LAYERS[model_id]
    assert (len(layers), layers[0].name, layers[0].channels, layers[-1].name, layers[-1].channels) == (
        n,
        first,
        first_c,
        last,
        last_c,
    )
    units = {layers[0].name: [channel(0), channel(first_c - 1)], layers[-1].name: [channel(last_c - 1)]}
    acts = registry.unit_activations(model, torch.rand(2, 3, spec.preprocessing.crop, spec.preprocessing.crop), units)
    assert acts[layers[0].name].shape == (2, 2) and acts[layers[-1].name].shape == (2, 1)
    assert torch.isfinite(acts[layers[-1].name]).all()
