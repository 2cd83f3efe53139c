import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from contracts.units import channel
from stimuli import registry
from stimuli.fv import (
    AlphaControl,
    FVRequest,
    FVSettings,
    Group,
    LossPlateau,
    fft_rgb_images,
    optimise_groups,
    robustness_transforms,
    visualise_units,
)
from stimuli.specs import ModelSpec
from tests.conftest import TINY_MODEL

SMALL = FVSettings(image_size=32, padding=4, max_steps=80, min_steps=32, window=16, diverse_images=3)


def tiny_model():
    spec = ModelSpec.model_validate({**TINY_MODEL, "layers": {"include": ["layer1.*", "layer1.1.bn2"]}})
    torch.manual_seed(0)
    return registry.LoadedModel(spec=spec, module=registry.build_architecture(spec))


def test_parametrisation_gives_valid_images_with_gradients():
    params, render = fft_rgb_images(4, 48, torch.device("cpu"))
    images = render()
    assert images.shape == (4, 3, 48, 48)
    assert images.min() >= 0 and images.max() <= 1
    images.sum().backward()
    assert params[0].grad is not None and params[0].grad.abs().sum() > 0


def test_transforms_shrink_by_the_two_jitters():
    out = robustness_transforms(torch.rand(3, 3, 64, 64), torch.Generator().manual_seed(0))
    assert out.shape == (3, 3, 64 - 16 - 8, 64 - 16 - 8)


def test_groups_drive_their_unit_the_right_way_and_hooks_are_removed():
    model = tiny_model()
    groups = [Group("layer1.1.bn2", channel(5), "max", 2, 0.0), Group("layer1.1.bn2", channel(5), "min", 2, 0.0)]
    results, image_steps = optimise_groups(model, groups, SMALL, seed=3)
    high, low = results
    assert high.activations.min() > low.activations.max()
    assert high.pixels.shape == (2, 32, 32, 3) and high.pixels.dtype == np.uint8
    assert image_steps == 4 * high.steps and 32 <= high.steps <= 80
    # the recorded activation is the unit's response to the stored image
    image = torch.from_numpy(high.pixels[0]).permute(2, 0, 1).float().div(255)[None]
    direct = registry.unit_activations(model, image, {"layer1.1.bn2": [channel(5)]})["layer1.1.bn2"][0, 0]
    assert abs(float(direct) - high.activations[0]) < 0.05 * abs(high.activations[0]) + 0.05
    assert all(not m._forward_hooks for m in model.module.modules())


def test_diversity_term_makes_images_less_alike():
    model = tiny_model()
    groups = [Group("layer1.1.bn2", channel(5), "max", 3, 0.0), Group("layer1.1.bn2", channel(5), "max", 3, 50.0)]
    plain, diverse = optimise_groups(model, groups, SMALL, seed=1)[0]

    def mean_pairwise_distance(pixels):
        flat = pixels.reshape(len(pixels), -1).astype(float)
        return np.mean([np.linalg.norm(a - b) for i, a in enumerate(flat) for b in flat[i + 1 :]])

    assert mean_pairwise_distance(diverse.pixels) > mean_pairwise_distance(plain.pixels)


def test_the_alpha_control_grows_past_the_margin_and_shrinks_short_of_it():
    control = AlphaControl(target=1.0, margin=0.1, rate=0.05, floor=1e-3, ceiling=10.0)
    assert control.slack("max", torch.tensor([1.3, 1.2])) == pytest.approx(0.2)
    assert control.slack("min", torch.tensor([0.5, 0.9])) == pytest.approx(0.1)
    assert control.next_alpha(1.0, 0.3) == pytest.approx(math.exp(0.05))  # far past: the full step up
    assert control.next_alpha(1.0, 0.15) == pytest.approx(math.exp(0.025))  # proportional near the margin
    assert control.next_alpha(1.0, 0.1) == pytest.approx(1.0)
    assert control.next_alpha(1.0, -5.0) == pytest.approx(math.exp(-0.05))
    assert control.next_alpha(9.99, 1.0) == 10.0 and control.next_alpha(1e-3, -1.0) == 1e-3


def test_calibration_steers_alpha_up_while_the_images_beat_the_exemplars_and_down_while_they_cannot():
    model = tiny_model()
    settings = FVSettings(**{**SMALL.__dict__, "max_steps": 160, "min_steps": 120})
    for target, reachable in ((0.05, True), (50.0, False)):
        start = settings.start_alpha * target
        request = FVRequest("layer1.1.bn2", channel(5), max_target=target, min_target=-target)
        (images,), image_steps = visualise_units(model, [request], settings, seed=0)
        assert [v.direction for v in images] == ["max"] * 4 + ["min"] * 4
        for direction, block in (("max", images[:4]), ("min", images[4:])):
            diverse, non_diverse = block[:3], block[3]
            assert non_diverse.diversity == 0.0 and len({v.diversity for v in diverse}) == 1
            assert all(v.beats_exemplars == reachable for v in diverse)
            if reachable:
                acts = [v.activation for v in diverse]
                assert min(acts) > target if direction == "max" else max(acts) <= -target
                assert diverse[0].diversity > 2 * start  # slack to spend on diversity
            else:
                assert diverse[0].diversity < start / 2
        assert image_steps <= 2 * (3 + 1) * 160


def test_a_controlled_run_that_ends_short_of_the_target_returns_its_last_passing_images():
    model = tiny_model()
    # alpha pinned at 1e3: diversity swamps the unit, whose weakest image drifts from about 0.04
    # after 4 steps to below -0.09 after 60, so the run starts passing a target of 0.02 and ends failing it.
    # (no restarts: alpha's floor is where it is pinned, not where diversity is gone)
    control = AlphaControl(0.02, margin=0.01, floor=1e3, ceiling=1e3, check_every=4, restart=False)
    group = Group("layer1.1.bn2", channel(5), "max", 3, 1e3, control=control)
    settings = FVSettings(**{**SMALL.__dict__, "max_steps": 60})
    (result,), _ = optimise_groups(model, [group], settings, seed=0, stop_rule=lambda *_: False)
    assert result.activations.min() > 0.02
    assert 0 < result.steps < 60 and result.steps % 4 == 0
    assert result.alpha == 1e3


def test_token_maps_work_with_lucent_objectives(tmp_path):
    from tests.test_registry import TINY_VIT

    spec = ModelSpec.model_validate(TINY_VIT)
    torch.manual_seed(0)
    model = registry.LoadedModel(spec=spec, module=registry.build_architecture(spec))
    groups = [Group("blocks.1", channel(3), "max", 2, 1e-3), Group("blocks.1", channel(3), "min", 2, 1e-3)]
    high, low = optimise_groups(model, groups, SMALL, seed=0)[0]  # channel and diversity on (N, C, L, 1)
    assert high.activations.min() > low.activations.max()


def test_missing_lucent_says_how_to_install_it():
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


def test_an_image_left_behind_when_diversity_is_gone_restarts_from_its_group_s_strongest():
    from stimuli.fv_maco import MacoImage, power_law_magnitude

    model, layer = tiny_model(), "layer1.1.bn2"
    image = MacoImage(power_law_magnitude(32), contrast=2.0, contrast_range=(0.01, 8.0), transparency=False)
    # a loose plateau, so that the group's loss flattens while the stuck image fails
    settings = FVSettings(image_size=32, padding=0, lr=0.1, max_steps=320, min_steps=32, window=16, tolerance=0.05)
    torch.manual_seed(0)
    init = image.create(3, 32, torch.device("cpu"))[0].detach()
    init[2, ..., -1] = -50.0  # its contrast's sigmoid saturated at the range's floor: no gradient comes back

    def run(target: float, n: int):
        control = AlphaControl(target, margin=0.05, floor=1e-6)
        group = Group(layer, channel(5), "max", n, 1e-6, init=init[:n].clone(), control=control)
        (result,), _ = optimise_groups(
            model,
            [group],
            settings,
            group_stop=lambda _g: LossPlateau(settings),
            parametrisation=image,
            transforms=lambda x, g: x,
        )
        return result

    free = run(-1e6, 2)  # the two free images alone, with a target anything beats
    stuck = run(-1e6, 3).activations[2]
    target = (float(free.activations.min()) + float(stuck)) / 2  # the free images beat it, the stuck one not
    assert float(stuck) < target < float(free.activations.min())
    result = run(target, 3)
    assert result.restarts >= 1 and bool((result.activations > target).all())
    # it left the dead region: its contrast is a free image's, not the floor's
    (_, _, restarted), free_contrast = image.split(result.spectrum)[1], image.split(free.spectrum)[1]
    assert float(restarted) > 0.5 * float(free_contrast.min())
