import torch

from stimuli import registry
from stimuli.fv import fft_rgb_images, robustness_transforms, visualise_unit
from stimuli.specs import ModelSpec
from tests.conftest import TINY_MODEL


def test_parametrisation_gives_valid_images_with_gradients():
    params, render = fft_rgb_images(4, 48, torch.device("cpu"))
    images = render()
    assert images.shape == (4, 3, 48, 48)
    assert images.min() >= 0 and images.max() <= 1
    images.sum().backward()
    assert params[0].grad is not None and params[0].grad.abs().sum() > 0


def test_transforms_keep_batch_and_shrink_by_the_jitters():
    gen = torch.Generator().manual_seed(0)
    out = robustness_transforms(torch.rand(3, 3, 64, 64), padding=8, gen=gen)
    assert out.shape == (3, 3, 64 + 16 - 16 - 8, 64 + 16 - 16 - 8)


def test_max_images_drive_the_unit_above_min_images(tmp_path):
    spec = ModelSpec.model_validate(TINY_MODEL)
    torch.manual_seed(0)
    model = registry.LoadedModel(spec=spec, module=registry.build_architecture(spec))
    vis = visualise_unit(model, "layer1.1", 5, images_per_direction=2, steps=15, image_size=48, padding=4, seed=3)
    assert [v.direction for v in vis] == ["max", "max", "min", "min"]
    assert all(v.pixels.shape == (48, 48, 3) and v.pixels.dtype.name == "uint8" for v in vis)
    assert all(v.steps == 15 and v.seed == 3 for v in vis)
    assert min(v.activation for v in vis[:2]) > max(v.activation for v in vis[2:])
    # the recorded activation is the unit's response to the stored image
    image = torch.from_numpy(vis[0].pixels).permute(2, 0, 1).float().div(255)[None]
    direct = registry.unit_activations(model, image, {"layer1.1": [5]})["layer1.1"][0, 0]
    assert abs(float(direct) - vis[0].activation) < 0.05 * abs(vis[0].activation) + 1e-2
    assert all(not m._forward_hooks for m in model.module.modules())


def test_missing_lucent_says_how_to_install_it():
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import importlib.abc, sys

        class BlockLucent(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "lucent":
                    raise ModuleNotFoundError(f"No module named {name!r}")

        sys.meta_path.insert(0, BlockLucent())
        try:
            import stimuli.fv
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.startswith("PsychinterpError lucent is not installed")
    assert "pip install --no-deps torch-lucent==0.1.8" in result.stdout
