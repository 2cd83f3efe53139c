"""Feature-visualisation methods: the 2023 procedure step by step, MACO's parametrisation, the
config's choice of method, and the sanity check that flags a planted silent unit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contracts.errors import ConfigError
from contracts.units import channel
from stimuli.fv import FVRequest, FVSettings, Group, GroupResult, color_matrix, optimise_groups, visualise_units
from stimuli.fv_imi2023 import (
    GradientNormPlateau,
    Imi2023Settings,
    alpha_search,
    imi2023_transforms,
    visualise_units_imi2023,
)
from stimuli.fv_maco import (
    MacoImage,
    StudyImages,
    maco_image,
    maco_magnitude,
    maco_transforms,
    natural_contrast,
    natural_magnitude,
    power_law_magnitude,
)
from tests.test_fv import tiny_model

LAYER = "layer1.1.bn2"


# --- imi2023: the stop rule ------------------------------------------------------------------


def _expected_stop(norms: list[float], s: Imi2023Settings) -> int | None:
    """The release's rule, applied to a whole sequence of raw norms: the first step that stops."""
    smoothed: list[float] = []
    for step, norm in enumerate(norms, start=1):
        smoothed.append(norm if not smoothed else smoothed[-1] * s.smoothing + (1 - s.smoothing) * norm)
        if len(smoothed) > max(s.window, s.min_steps):
            half = s.window // 2
            if np.mean(smoothed[-s.window : -half]) / np.mean(smoothed[-half:]) <= s.target_ratio:
                return step
    return None


def test_the_stop_rule_fires_exactly_where_the_release_s_rule_says():
    s = Imi2023Settings(min_steps=30, window=20, smoothing=0.9)
    size = 12
    unit_grad = torch.randn(2, 3, size, size // 2 + 1, 2)
    base = GradientNormPlateau(size, s).image_gradient_norm(unit_grad)
    # The norm halves every 8 steps until step 60, then stays flat: the window's halves stop differing.
    scales = [0.5 ** (min(t, 60) / 8) for t in range(200)]
    expected = _expected_stop([base * k for k in scales], s)
    assert expected is not None and expected > 60
    rule = GradientNormPlateau(size, s)
    fired = [step for step, k in enumerate(scales, start=1) if rule(step, 0.0, unit_grad * k)]
    assert fired[0] == expected
    assert GradientNormPlateau(size, s).image_gradient_norm(unit_grad * 3) == pytest.approx(3 * base, rel=1e-5)
    # it looks at the worst image of the batch: a larger gradient in one image raises the norm
    louder = unit_grad.clone()
    louder[1] *= 10
    assert GradientNormPlateau(size, s).image_gradient_norm(louder) > base


def test_each_group_stops_by_its_own_rule_and_counts_only_its_own_steps():
    model = tiny_model()
    groups = [Group(LAYER, channel(5), "max", 2, 0.0), Group(LAYER, channel(5), "min", 3, 0.0)]
    stops = {2: 7, 3: 19}  # each group's rule fires at its own step
    settings = FVSettings(image_size=32, padding=4, max_steps=100)
    results, image_steps = optimise_groups(
        model, groups, settings, group_stop=lambda g: lambda step, _loss, _grad: step >= stops[g.n_images]
    )
    assert [r.steps for r in results] == [7, 19]
    assert image_steps == 2 * 7 + 3 * 19


def test_a_stopped_group_leaves_the_batch_without_changing_the_others():
    model = tiny_model()
    settings = FVSettings(image_size=32, padding=4, max_steps=100)
    early, late = Group(LAYER, channel(5), "max", 2, 0.0), Group(LAYER, channel(5), "min", 3, 0.0)

    def stop_at(steps):
        return lambda g: lambda step, _loss, _grad: step >= steps[g.direction]

    together, spent = optimise_groups(model, [early, late], settings, group_stop=stop_at({"max": 4, "min": 15}))
    # the same draws of the transforms, without the early group ever stopping
    alone, _ = optimise_groups(model, [early, late], settings, group_stop=stop_at({"max": 15, "min": 15}))
    assert spent == 2 * 4 + 3 * 15
    np.testing.assert_allclose(together[1].activations, alone[1].activations, rtol=1e-4, atol=1e-5)
    assert np.abs(together[1].pixels.astype(int) - alone[1].pixels).max() <= 1


def test_gram_diversity_is_lucent_s_diversity():
    from lucent.optvis import objectives

    from stimuli.fv import gram_diversity

    maps = torch.randn(5, 7, 4, 3, dtype=torch.float64, requires_grad=True)
    ours = gram_diversity(maps)
    theirs = objectives.diversity("x")(lambda _name: maps)
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-10)
    (ours_grad,) = torch.autograd.grad(ours, maps)
    (theirs_grad,) = torch.autograd.grad(theirs, maps)
    torch.testing.assert_close(ours_grad, theirs_grad)


# --- imi2023: the search ---------------------------------------------------------------------


def _result(activation: float) -> GroupResult:
    return GroupResult(
        Group(LAYER, channel(0), "max", 8, 0.0),
        np.zeros((8, 2, 2, 3), np.uint8),
        np.full(8, activation),
        torch.zeros(1),
        1,
    )


RELEASE = Imi2023Settings()


def _drive(passes, direction="max", target=0.0, s=RELEASE):
    """Run the search, answering each alpha with a run that passes iff ``passes(alpha)``."""
    search = alpha_search(direction, target, s)
    tried = []
    alpha = next(search)
    try:
        while True:
            tried.append(alpha)
            ok = passes(alpha)
            activation = (
                (target + 1 if ok else target - 1) if direction == "max" else (target - 1 if ok else target + 1)
            )
            alpha = search.send(_result(activation))
    except StopIteration as done:
        return tried, done.value


def test_the_search_goes_up_by_tens_then_halves_seven_times():
    tried, outcome = _drive(lambda a: a < 42)
    assert tried == [1, 10, 100, 55.0, 32.5, 43.75, 38.125, 40.9375, 42.34375, 41.640625]
    assert (outcome.stage, outcome.alpha) == ("binary", 41.640625)
    assert outcome.trace == [(a, a < 42) for a in tried]


def test_a_failure_at_alpha_one_searches_between_zero_and_one():
    tried, outcome = _drive(lambda a: a < 0.3, direction="min")
    assert tried[:3] == [1, 0.5, 0.25] and len(tried) == 8
    assert outcome.stage == "binary" and 0.29 < outcome.alpha < 0.3


def test_the_search_s_fallbacks_are_the_release_s():
    tried, outcome = _drive(lambda a: True)
    assert tried == [1, 10, 100, 1000, 10_000, 100_000] and (outcome.stage, outcome.alpha) == (
        "exponential limit",
        100_000,
    )
    # every binary step fails: the exponential search's last pass is used
    tried, outcome = _drive(lambda a: a <= 1)
    assert tried == [1, 10, 5.5, 3.25, 2.125, 1.5625, 1.28125, 1.140625, 1.0703125]
    assert (outcome.stage, outcome.alpha) == ("exponential", 1.0) and outcome.result is not None
    # nothing passes: no diverse images
    tried, outcome = _drive(lambda a: False)
    assert len(tried) == 8 and (outcome.stage, outcome.alpha, outcome.result) == ("none", 0.0, None)


def test_the_weakest_image_must_beat_the_exemplar_strictly():
    s = Imi2023Settings(binary_loops=0)
    search = alpha_search("min", 0.0, s)
    next(search)
    tied = _result(0.0)  # a tie at the exemplar (a ReLU floor) fails, as in the release
    with pytest.raises(StopIteration) as done:
        search.send(tied)
    assert done.value.value.trace == [(1.0, False)]


def test_imi2023_transforms_resize_by_a_listed_scale():
    out = imi2023_transforms(torch.rand(2, 3, 64, 64), torch.Generator().manual_seed(3))
    side = out.shape[-1] + 8  # before the last jitter
    assert any(side == int(np.ceil(k * 48)) for k in (1.0, 0.975, 1.025, 0.95, 1.05))


def test_imi2023_on_a_tiny_network_records_its_search():
    model = tiny_model()
    s = Imi2023Settings(image_size=32, padding=4, min_steps=12, window=8, max_steps=60, binary_loops=3)
    request = FVRequest(LAYER, channel(5), max_target=0.3, min_target=-0.3)
    (images,), image_steps = visualise_units_imi2023(model, [request], s, seed=42)
    assert [v.direction for v in images] == ["max"] * 9 + ["min"] * 9
    for block in (images[:9], images[9:]):
        diverse, strongest = block[:8], block[8]
        assert strongest.params == {"search": "non-diverse"} and strongest.diversity == 0.0
        trace = diverse[0].params
        assert trace["alphas_tried"][0] == 1.0 and len(trace["alphas_tried"]) == trace["runs"]
        passed = [a for a, ok in zip(trace["alphas_tried"], trace["passed"], strict=True) if ok]
        # in every outcome the chosen weight is the last one that passed (0 when none did)
        assert diverse[0].diversity == (passed[-1] if passed else 0.0)
        assert all(v.steps > s.min_steps for v in block)  # no run stops before the rule may look
        # stored weakest first, as the release sorts them
        acts = [v.activation for v in diverse]
        assert acts == sorted(acts, reverse=block[0].direction == "min")
    n_runs = sum(images[k].params["runs"] for k in (0, 9))
    assert image_steps >= (2 * 9 + 8 * n_runs) * (s.min_steps + 1)


# --- maco ----------------------------------------------------------------------------------------


def test_maco_keeps_the_fixed_magnitude_whatever_the_phase():
    size = 16
    magnitude = power_law_magnitude(size)
    image = MacoImage(magnitude)
    for seed in (0, 1):
        phase = torch.randn(2, 3, size, size // 2 + 1, generator=torch.Generator().manual_seed(seed))
        amplitude = torch.fft.rfft2(image.spatial(phase)).abs()
        inner = (slice(None), slice(None), slice(1, None), slice(1, size // 2))  # bins with a free phase
        ratio = amplitude[inner] / magnitude.expand_as(amplitude)[inner]
        assert float(ratio.std() / ratio.mean()) < 0.02  # proportional: the standardisation only scales
    params, render = image.create(3, size, torch.device("cpu"))
    pixels = render()
    assert (
        pixels.shape == (3, 3, size, size) and 0 <= float(pixels.detach().min()) and float(pixels.detach().max()) <= 1
    )
    pixels.sum().backward()
    assert params.grad is not None and params.grad.abs().sum() > 0


def test_maco_magnitudes_from_images_power_law_and_files(tmp_path):
    images = torch.rand(4, 3, 40, 40)
    m = natural_magnitude(StudyImages(images), 24)
    assert m.shape == (3, 24, 13) and bool((m >= 0).all())
    assert maco_magnitude("power_law", 24, None).shape == (3, 24, 13)
    np.save(tmp_path / "spectrum.npy", np.ones((3, 48, 25), np.float32))
    assert maco_magnitude(str(tmp_path / "spectrum.npy"), 24, None).shape == (3, 24, 13)
    np.save(tmp_path / "wrong.npy", np.ones((48, 25), np.float32))
    with pytest.raises(ConfigError, match=r"wrong.npy has shape \(48, 25\)"):
        maco_magnitude(str(tmp_path / "wrong.npy"), 24, None)
    with pytest.raises(ConfigError, match="cannot read"):
        maco_magnitude(str(tmp_path / "missing.npy"), 24, None)
    with pytest.raises(ConfigError, match="magnitude: 'dataset' needs the study's images"):
        maco_magnitude("dataset", 24, None)


def test_maco_contrast_is_fixed_the_study_s_mean_or_learned_within_the_study_s_range():
    magnitude = power_law_magnitude(24)
    gen = torch.Generator().manual_seed(0)
    # half flat, half saturated noise: a wide range of contrasts
    natural = torch.cat([torch.full((4, 3, 24, 24), 0.5), torch.rand(4, 3, 24, 24, generator=gen).round()])
    natural[:4] += 0.1 * torch.rand(4, 3, 24, 24, generator=gen)
    measured = natural_contrast(StudyImages(natural), 24)
    assert measured.low < 0.5 * measured.mean and measured.high > 1.5 * measured.mean
    fixed = maco_image(magnitude, 1.0, 24, None)  # Horama's: no study images needed
    assert fixed.contrast == 1.0 and fixed.contrast_range is None
    mean = maco_image(magnitude, "mean", 24, StudyImages(natural))
    assert mean.contrast == pytest.approx(measured.mean) and mean.contrast_range is None
    learned = maco_image(magnitude, "range", 24, StudyImages(natural))
    assert learned.contrast_range == pytest.approx((measured.low, measured.high))
    with pytest.raises(ConfigError, match="contrast: 'range' needs the study's images"):
        maco_image(magnitude, "range", 24, None)

    param, render = learned.create(3, 24, torch.device("cpu"))
    assert param.shape == (3, 3, 24, 14)  # the phase and one column for the contrast
    start = [p["contrast"] for p in learned.image_params(param.detach())]
    assert start == pytest.approx([measured.mean] * 3, rel=1e-4)  # it starts at the mean
    # an objective that wants contrast pushes each image's up, and never past the study's most contrasted
    optimizer = torch.optim.Adam([param], lr=0.5)
    for _ in range(60):
        optimizer.zero_grad()
        (-render().std(dim=(2, 3)).sum()).backward()
        optimizer.step()
    after = [p["contrast"] for p in learned.image_params(param.detach())]
    assert all(measured.mean * 1.3 < c < measured.high for c in after)
    # and the spectrum's shape stays the fixed magnitude's
    amplitude = torch.fft.rfft2(learned.spatial(param.detach())).abs()
    inner = (slice(None), slice(None), slice(1, None), slice(1, 24 // 2))
    ratio = amplitude[inner] / magnitude.expand_as(amplitude)[inner]
    assert float((ratio.std(dim=(1, 2, 3)) / ratio.mean(dim=(1, 2, 3))).max()) < 0.02


def test_the_range_reaches_the_images_that_set_the_targets():
    gen = torch.Generator().manual_seed(0)
    sample = 0.4 + 0.2 * torch.rand(8, 3, 24, 24, generator=gen)  # mild images
    extreme = torch.rand(1, 3, 24, 24, generator=gen).round()  # saturated: more contrast than any of them
    alone, reached = natural_contrast(StudyImages(sample), 24), natural_contrast(StudyImages(sample, extreme), 24)
    assert reached.high > 3 * alone.high  # an image may be as contrasted as the one it must beat
    assert reached.mean == pytest.approx(alone.mean) and reached.low == pytest.approx(alone.low)
    # the magnitude's shape is the sample's alone
    with_extreme, without = (
        natural_magnitude(StudyImages(sample, extreme), 24),
        natural_magnitude(StudyImages(sample), 24),
    )
    assert torch.equal(with_extreme.flatten(1)[:, 1:], without.flatten(1)[:, 1:])


def test_the_dc_term_lets_the_phase_choose_a_mean_colour_within_the_images_casts():
    # flat images, three grey and one far off: their casts from the mean colour
    colours = torch.tensor([[0.5, 0.5, 0.5]] * 3 + [[0.9, 0.1, 0.8]])
    images = colours[:, :, None, None].expand(4, 3, 16, 16).clone()
    images[:, :, 4:8, 4:8] = 0.5  # and a little structure, so that a phase-only image has some
    study = StudyImages(images)
    magnitude = natural_magnitude(study, 16)
    spatial, _ = study.spatial(16)
    casts = spatial.mean((2, 3)).abs()  # (4, 3): each image's mean colour off the sample's
    assert torch.allclose(magnitude[:, 0, 0], casts.amax(0) * 16 * 16, rtol=1e-4)  # the largest, not the mean
    assert bool((magnitude[:, 0, 0] > 1.2 * casts.mean(0) * 16 * 16).all())
    # the DC bin's phase moves the image's mean colour continuously between minus and plus that cast
    image = MacoImage(magnitude, contrast=1.0)
    phase = torch.zeros(3, 3, 16, 9)
    phase[:, :, 0, 0] = torch.tensor([-3.0, 0.0, 3.0])[:, None]
    mean_colour = torch.fft.irfft2(torch.polar(magnitude.expand_as(phase), phase), s=(16, 16)).mean((2, 3))
    assert mean_colour[0, 0] < 0 < mean_colour[1, 0] and mean_colour[2, 0] < mean_colour[1, 0]
    assert image.spatial(torch.randn(2, 3, 16, 9)).shape == (2, 3, 16, 16)


def test_maco_gets_the_images_that_set_each_unit_s_targets_from_a_build(tmp_path, monkeypatch):
    import yaml

    from stimuli import registry
    from stimuli.build import build_study
    from stimuli.fv_methods import MacoFV
    from stimuli.study import load_study_config
    from tests.conftest import write_tiny_study

    seen = []
    original = MacoFV.visualise

    def spy(self, model, requests, seed, natural_images=None):
        for r in requests:
            acts = registry.unit_activations(model, r.target_images, {r.layer: [r.readout]})[r.layer][:, 0]
            seen.append((tuple(float(a) for a in acts), (r.max_target, r.min_target)))
        return original(self, model, requests, seed, natural_images)

    monkeypatch.setattr(MacoFV, "visualise", spy)
    path = write_tiny_study(tmp_path)
    raw = yaml.safe_load(path.read_text())
    fv = {"method": "maco", "image_size": 32, "max_steps": 8, "min_steps": 8, "window": 8, "images_per_direction": 2}
    path.write_text(yaml.safe_dump({**raw, "feature_visualization": fv}))
    build_study(load_study_config(path), tmp_path / "bundle")
    assert seen
    for reached, targets in seen:  # the images' own activations are the targets
        assert reached == pytest.approx(targets, abs=1e-3 + 1e-3 * max(map(abs, targets)))
    # the unit's work record keeps their dataset indices; one written before it kept them has none
    import json

    from stimuli.workdir import ExemplarRecord

    record_path = next((tmp_path / "bundle" / ".work" / "exemplars").glob("*.json"))
    raw = json.loads(record_path.read_text())
    assert ExemplarRecord.from_json(raw).target_images == tuple(raw["target_images"])
    del raw["target_images"]
    assert ExemplarRecord.from_json(raw).target_images is None


def test_a_dataset_magnitude_of_flat_coloured_images_still_gives_images_with_structure():
    # Shapes on flat coloured backgrounds: per channel, the mean level dwarfs every other frequency.
    torch.manual_seed(0)
    images = torch.rand(8, 3, 1, 1).expand(8, 3, 32, 32).clone()
    images[:, :, 8:20, 10:24] = torch.rand(8, 3, 1, 1)
    magnitude = natural_magnitude(StudyImages(images), 32)
    contrast = natural_contrast(StudyImages(images), 32).mean
    image = MacoImage(magnitude, contrast, transparency=False)
    param, render = image.create(4, 32, torch.device("cpu"))
    assert float(render().detach().std(dim=(2, 3)).mean()) > 0.05  # not a flat colour
    # it starts at the sample's mean colour: the DC term, the largest cast, is a bound
    assert float(image.spatial(param.detach()).mean((2, 3)).abs().max()) < 0.1 * contrast


def test_phase_only_images_of_a_dataset_spectrum_have_the_datasets_contrast():
    # Saturated shapes on flat backgrounds, as in shapes world: far more contrast than Horama's
    # standardised images (spatial std 1 before the colour step) have.
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(16, 3, 1, 1, generator=gen).round().expand(16, 3, 32, 32).clone()
    for k in range(16):
        y, x = torch.randint(0, 16, (2,), generator=gen)
        images[k, :, y : y + 14, x : x + 14] = torch.rand(3, 1, 1, generator=gen).round()

    def contrast(logits: torch.Tensor) -> float:  # per image, before the render's sigmoid
        return float(logits.flatten(1).std(1).mean())

    magnitude, measured = natural_magnitude(StudyImages(images), 32), natural_contrast(StudyImages(images), 32).mean

    def rendered_logits(contrast: float) -> torch.Tensor:
        image = MacoImage(magnitude, contrast, transparency=False)
        torch.manual_seed(1)
        phase, _ = image.create(16, 32, torch.device("cpu"))  # where an optimisation starts
        return torch.einsum("nchw,cd->ndhw", image.spatial(phase.detach()), color_matrix(torch.device("cpu")))

    natural = contrast(torch.logit(images.clamp(0.01, 0.99)))  # as natural_contrast reads them
    assert abs(contrast(rendered_logits(measured)) - natural) < 0.2 * natural
    assert contrast(rendered_logits(1.0)) < 0.3 * natural


def test_the_transparency_map_shows_the_background_where_the_unit_does_not_look():
    image = MacoImage(power_law_magnitude(8), background=1.0)
    pixels = torch.full((1, 3, 8, 8), 0.2)
    sensitivity = torch.zeros(1, 3, 8, 8)
    sensitivity[..., :4, :] = 1.0  # the unit looks at the top half only
    shown = image.shown(pixels, sensitivity)
    assert torch.allclose(shown[..., :4, :], pixels[..., :4, :]) and torch.allclose(shown[..., 4:, :], torch.ones(1))
    assert torch.equal(MacoImage(power_law_magnitude(8), transparency=False).shown(pixels, sensitivity), pixels)
    # the default: the image's own mean colour where the unit does not look, not a colour of its own
    pixels[:, 0] = 0.6
    own = MacoImage(power_law_magnitude(8)).shown(pixels, sensitivity)
    assert torch.allclose(own[..., 4:, :], pixels.mean((2, 3), keepdim=True).expand(1, 3, 4, 8))


def test_maco_on_a_vit_drives_a_token_mean_unit_both_ways():
    from stimuli import registry
    from stimuli.fv_methods import MacoFV
    from stimuli.specs import ModelSpec
    from tests.test_registry import TINY_VIT

    spec = ModelSpec.model_validate(TINY_VIT)
    torch.manual_seed(0)
    model = registry.LoadedModel(spec=spec, module=registry.build_architecture(spec))
    method = MacoFV(
        image_size=32, magnitude="power_law", contrast=1.0, max_steps=48, min_steps=16, window=8, images_per_direction=3
    )
    probe = registry.unit_activations(model, torch.rand(16, 3, 32, 32), {"blocks.1": [channel(3)]})["blocks.1"][:, 0]
    request = FVRequest("blocks.1", channel(3), float(probe.max()), float(probe.min()))
    (images,), image_steps = method.visualise(model, [request], seed=0, natural_images=None)
    high = [v.activation for v in images if v.direction == "max"]
    low = [v.activation for v in images if v.direction == "min"]
    assert len(high) == len(low) == 3 and image_steps > 0
    # the phase alone, under a fixed 1/f magnitude, moves the ViT's token-mean unit past random images
    assert min(high) > float(probe.mean()) > max(low)
    direct = registry.unit_activations(
        model,
        torch.stack([torch.from_numpy(v.pixels).permute(2, 0, 1).float() / 255 for v in images[:1]]),
        {"blocks.1": [channel(3)]},
    )["blocks.1"][0, 0]
    assert float(direct) == pytest.approx(images[0].activation, abs=0.05 * abs(images[0].activation) + 0.05)


def test_maco_records_the_activation_of_the_image_as_shown():
    from stimuli import registry
    from stimuli.fv_methods import MacoFV

    model = tiny_model()
    settings = FVSettings(
        image_size=32,
        padding=0,
        lr=0.2,
        max_steps=64,
        min_steps=16,
        window=8,
        diverse_images=2,
    )
    (images,), _ = visualise_units(
        model,
        [FVRequest(LAYER, channel(5), 0.0, 0.0)],
        settings,
        parametrisation=MacoImage(power_law_magnitude(32)),
        transforms=maco_transforms(MacoFV().crop, MacoFV().noise),
    )
    for v in images:
        pixels = torch.from_numpy(v.pixels).permute(2, 0, 1).float().div(255)[None]
        direct = registry.unit_activations(model, pixels, {LAYER: [channel(5)]})[LAYER][0, 0]
        assert abs(float(direct) - v.activation) < 0.05 * abs(v.activation) + 0.05
    assert max(v.activation for v in images[:3]) > min(v.activation for v in images[3:])


def test_maco_images_record_the_contrast_they_were_given_or_chose():
    from stimuli.fv_methods import MacoFV

    model = tiny_model()
    natural = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    natural[4:] = natural[4:].round()  # four low- and four high-contrast images
    request = FVRequest(LAYER, channel(5), 1e6, -1e6)  # unreachable: runs to max_steps
    method = MacoFV(image_size=32, max_steps=8, min_steps=8, window=8, images_per_direction=2)
    measured = natural_contrast(StudyImages(natural), 32)

    def run(**update):
        (images,), _ = method.model_copy(update=update).visualise(
            model, [request], seed=0, natural_images=lambda n: natural[:n]
        )
        return [v.params["contrast"] for v in images]

    draws = []
    method.visualise(model, [request], seed=0, natural_images=lambda n: draws.append(n) or natural[:n])
    assert len(draws) == 1  # the magnitude and the contrast read one sample of the study's images
    learned = run()  # the default: each image's own, inside the study's range, moved from the mean
    assert all(measured.low < c < measured.high for c in learned)
    assert len(set(learned)) == len(learned) and learned != pytest.approx([measured.mean] * len(learned))
    assert run(contrast="mean") == pytest.approx([measured.mean] * 4)
    assert run(contrast=0.5) == [0.5] * 4


# --- the config chooses a method ------------------------------------------------------------------


def test_the_study_config_chooses_a_method_by_name(tmp_path):
    import yaml

    from stimuli.fv_methods import FV_METHODS, CalibratedFV, Imi2023FV, MacoFV
    from stimuli.study import load_study_config
    from tests.conftest import write_tiny_study

    path = write_tiny_study(tmp_path)
    raw = yaml.safe_load(path.read_text())

    def load(fv: dict):
        path.write_text(yaml.safe_dump({**raw, "feature_visualization": fv}))
        return load_study_config(path).feature_visualization

    assert isinstance(load({"image_size": 32}), CalibratedFV)  # no method: the default
    assert isinstance(load({"method": "imi2023"}), Imi2023FV) and load({"method": "imi2023"}).min_steps == 2500
    assert isinstance(load({"method": "maco", "magnitude": "power_law"}), MacoFV)
    assert set(FV_METHODS) == {"calibrated", "imi2023", "maco"}
    with pytest.raises(ConfigError, match="feature_visualization") as error:
        load({"method": "deepdream"})
    assert "calibrated" in str(error.value) and "maco" in str(error.value)
    with pytest.raises(ConfigError, match="min_steps"):
        load({"method": "imi2023", "min_steps": 0})
    with pytest.raises(ConfigError, match="crop"):
        load({"method": "maco", "crop": [0.9, 0.5]})
    with pytest.raises(ConfigError, match="binary_loops"):
        load({"method": "calibrated", "binary_loops": 3})  # another method's setting


@pytest.mark.parametrize(
    "fv",
    [
        {
            "method": "imi2023",
            "image_size": 32,
            "padding": 4,
            "min_steps": 6,
            "window": 4,
            "max_steps": 24,
            "binary_loops": 1,
            "images_per_direction": 6,
        },
        {
            "method": "maco",
            "image_size": 32,
            "max_steps": 24,
            "min_steps": 8,
            "window": 8,
            "images_per_direction": 6,
        },
    ],
    ids=["imi2023", "maco"],
)
def test_a_build_records_the_method_with_every_image_and_in_the_bundle(tmp_path, fv):
    import yaml

    from contracts.bundle import load_bundle
    from stimuli.build import build_study
    from stimuli.study import load_study_config
    from tests.conftest import write_tiny_study

    path = write_tiny_study(tmp_path)
    raw = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**raw, "feature_visualization": {**fv, "units_per_batch": 2}}))
    build_study(load_study_config(path), tmp_path / "bundle")
    manifest = load_bundle(tmp_path / "bundle").manifest
    assert manifest.feature_visualization["method"] == fv["method"]
    assert all(manifest.feature_visualization[k] == v for k, v in fv.items())
    synthetic = [r for r in manifest.reference_images if r.kind == "synthetic"]
    assert synthetic and all(r.fv_method == fv["method"] and r.fv_params is not None for r in synthetic)
    # the tiny model's units are in its first and later layers: later ones are checked
    checked = [r for r in synthetic if r.path_similarity is not None]
    assert all(isinstance(r.path_outlier, bool) for r in checked)


# --- the sanity check -----------------------------------------------------------------------------


def test_a_planted_silent_unit_is_flagged_and_its_natural_twin_is_not(tmp_path):
    from stimuli.demo.images import write_demo_dataset
    from stimuli.exemplars import ImageTreeDataset, model_inputs
    from stimuli.fv_sanity import check_paths, layer_means
    from stimuli.registry import LoadedModel
    from stimuli.specs import ModelSpec
    from tests.model_zoo import SilentPathNet

    spec = ModelSpec.model_validate(
        {
            "id": "silent",
            "display_name": "a planted silent unit",
            "source": "python",
            "constructor": "tests.model_zoo:silent_path_net",
            "preprocessing": {"resize": 64, "crop": 64},
            "layers": {"include": ["lower_act", "units"]},
            "metadata": {"train_images": 1},
        }
    )
    model = LoadedModel(spec=spec, module=SilentPathNet().eval())
    dataset = ImageTreeDataset(write_demo_dataset(tmp_path / "images", images_per_class=16))
    images = model_inputs(model, torch.stack([dataset[i][1] for i in range(len(dataset))]))
    means = layer_means(model, images, ["lower_act", "units"])
    # On natural images the checkerboard path is silent, and the two units agree.
    assert float(means["lower_act"][:, 3].max()) < 0.01
    assert np.corrcoef(means["units"][:, 0], means["units"][:, 1])[0, 1] > 0.99
    settings = FVSettings(
        image_size=64, padding=4, max_steps=256, min_steps=64, window=16, diverse_images=3, start_alpha=0.01
    )
    flagged = {}
    for unit in (0, 1):
        column = means["units"][:, unit]
        order = np.argsort(column)
        exemplars = {"max": images[order[-10:]], "min": images[order[:10]]}
        request = FVRequest("units", channel(unit), float(column.max()), float(column.min()))
        (vis,), _ = visualise_units(model, [request], settings, seed=0)
        shown = {
            d: torch.stack([torch.from_numpy(v.pixels).permute(2, 0, 1).float() / 255 for v in vis if v.direction == d])
            for d in ("max", "min")
        }
        checks = check_paths(model, ["lower_act"], exemplars, shown)
        flagged[unit] = {d: c.outlier.tolist() for d, c in checks.items()}
    assert all(flagged[0]["max"]), flagged  # the silent unit's visualisations ride the checkerboard
    assert not any(flagged[1]["max"]) and not any(flagged[1]["min"]) and not any(flagged[0]["min"]), flagged
    assert check_paths(model, [], exemplars, shown) is None  # nothing below the first layer


def test_path_similarity_is_the_cosine_with_the_exemplars_direction():
    from stimuli.fv_sanity import path_similarity

    exemplars = {"max": {"l": np.array([[2.0, 0, 0], [2.0, 0, 0]])}, "min": {"l": np.array([[0.0, 0, 0], [0.0, 0, 0]])}}
    # centre (1, 0, 0); max direction (1, 0, 0)
    images = {"l": np.array([[3.0, 0, 0], [1.0, 5, 0], [0.0, 0, 0]])}
    assert np.allclose(path_similarity(exemplars, images, "max"), [1.0, 0.0, -1.0])
