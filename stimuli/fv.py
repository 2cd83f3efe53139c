"""Calibrated, diverse feature visualisations with lucent's parametrisation and objectives.

lucent 0.1.8's ``render_vis`` leaks hooks, pins tensors to ``cuda:0`` and uses
kornia functions that no longer exist, so the optimisation loop, the
transforms, the hooks, the device handling and the unit objective (any unit
selector) are ours; the FFT parametrisation, the colour decorrelation matrix
and the diversity objective are lucent's.

Per unit and direction the result is 9 images: 8 diverse and 1 non-diverse.
The diversity weight alpha is the largest for which every diverse image still
beats the unit's most extreme natural exemplar. Instead of one full
optimisation per candidate alpha (the 2023 study ran an exponential then a
binary search), all candidates of all units are optimised side by side in one
batch, with early stopping, and a second, warm-started round refines the
bracket that the first round found.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from contracts.errors import PsychinterpError
from stimuli.compat import LUCENT_MISSING
from stimuli.registry import LoadedModel, capture_outputs, channel_map, forward_until_captured
from stimuli.selectors import Readout, readout_activations, readout_objective

try:
    from lucent.optvis import objectives
    from lucent.optvis.param import color as lucent_color
    from lucent.optvis.param import spatial as lucent_spatial
except ModuleNotFoundError as exc:  # depends on the install
    raise PsychinterpError(LUCENT_MISSING.format(reason=exc)) from None


# --- parametrisation and transforms -------------------------------------------


@contextlib.contextmanager
def _lucent_device(device: torch.device) -> Iterator[None]:
    # lucent reads this module global when it creates parameters.
    saved = lucent_spatial.device
    lucent_spatial.device = device
    try:
        yield
    finally:
        lucent_spatial.device = saved


def _decorrelate(image: torch.Tensor) -> torch.Tensor:
    matrix = torch.as_tensor(lucent_color.color_correlation_normalized.T, device=image.device)
    return torch.einsum("nchw,cd->ndhw", image, matrix)


def fft_rgb_images(batch: int, size: int, device: torch.device):
    """Parameters and a function returning (batch, 3, size, size) images in [0, 1]."""
    with _lucent_device(device):
        params, spectrum_image = lucent_spatial.fft_image((batch, 3, size, size))
    return params, lambda: torch.sigmoid(_decorrelate(spectrum_image()))


def _jitter(images: torch.Tensor, d: int, gen: torch.Generator) -> torch.Tensor:
    if d <= 0:
        return images
    dx, dy = (int(v) for v in torch.randint(0, d + 1, (2,), generator=gen))
    h, w = images.shape[-2:]
    return images[..., dy : dy + h - d, dx : dx + w - d]


def _scale_rotate(images: torch.Tensor, gen: torch.Generator, scale=(0.95, 1.05), degrees=5.0) -> torch.Tensor:
    n = images.shape[0]
    s = torch.empty(n).uniform_(*scale, generator=gen)
    a = torch.empty(n).uniform_(-degrees, degrees, generator=gen) * math.pi / 180
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a) / s, -torch.sin(a) / s
    theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a) / s, torch.cos(a) / s
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="reflection", align_corners=False)


def robustness_transforms(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Jitter 16, scale 0.95-1.05, rotate +-5 degrees, jitter 8 (the 2023 study's list)."""
    images = _jitter(images, 16, gen)
    images = _scale_rotate(images, gen)
    return _jitter(images, 8, gen)


def _center_crop(images: torch.Tensor, padding: int) -> torch.Tensor:
    return images[..., padding : images.shape[-2] - padding, padding : images.shape[-1] - padding]


# --- one batched optimisation ---------------------------------------------------


@dataclass(frozen=True)
class Group:
    """Images of one batch that share a unit, a direction and a diversity weight."""

    layer: str
    readout: Readout
    direction: str  # "max" or "min"
    n_images: int
    alpha: float
    init: torch.Tensor | None = field(default=None, compare=False)  # spectrum to start from


@dataclass
class GroupResult:
    group: Group
    pixels: np.ndarray  # (n, H, W, 3) uint8
    activations: np.ndarray  # (n,) on the centre crop, without transforms
    spectrum: torch.Tensor  # final parameters, to warm-start a later round
    steps: int


@dataclass(frozen=True)
class FVSettings:
    image_size: int = 224
    padding: int = 16
    lr: float = 0.05
    diverse_images: int = 8
    relative_alphas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
    refine_candidates: int = 3
    max_steps: int = 2048
    min_steps: int = 64
    window: int = 32
    tolerance: float = 2e-3  # stop when the loss improves less than this fraction per window


def _diversity_slice(layer: str, start: int, stop: int) -> objectives.Objective:
    diversity = objectives.diversity(layer)
    return objectives.Objective(lambda T: diversity(lambda name: T(name)[start:stop]))


def _unit_objective(layer: str, readout: Readout, batch: int) -> objectives.Objective:
    """Minus the unit's mean over positions in image ``batch`` (for a channel, lucent's ``channel``;
    for a direction, lucent's ``direction``; for a latent, its value before the ReLU)."""
    return objectives.Objective(lambda T: -readout_objective(T(layer), readout)[batch].mean())


def _objective(groups: Sequence[Group]) -> objectives.Objective:
    """Unit objectives per image (negated for min), plus each group's own diversity term."""
    parts = []
    start = 0
    for g in groups:
        for i in range(start, start + g.n_images):
            unit = _unit_objective(g.layer, g.readout, i)
            parts.append(unit if g.direction == "max" else -unit)
        if g.alpha > 0 and g.n_images > 1:
            # lucent's diversity is minus the mean pairwise Gram similarity: subtracting it penalises similarity.
            parts.append(-g.alpha * _diversity_slice(g.layer, start, start + g.n_images))
        start += g.n_images
    return objectives.Objective.sum(parts)


class LossPlateau:
    """Early stopping: the smoothed loss gained less than ``tolerance`` (relative) over ``window`` steps."""

    def __init__(self, settings: FVSettings):
        self.settings = settings
        self.history: list[float] = []

    def __call__(self, step: int, loss: float, _spectrum: torch.Tensor) -> bool:
        s = self.settings
        self.history.append(loss if not self.history else 0.9 * self.history[-1] + 0.1 * loss)
        if step < s.min_steps or step % s.window or len(self.history) <= s.window:
            return False
        gain = self.history[-s.window - 1] - self.history[-1]
        return gain < s.tolerance * max(abs(self.history[-1]), 1e-8)


StopRule = Callable[[int, float, torch.Tensor], bool]


def optimise_groups(
    model: LoadedModel,
    groups: Sequence[Group],
    settings: FVSettings,
    seed: int = 0,
    stop_rule: StopRule | None = None,
) -> tuple[list[GroupResult], int]:
    """Optimise all groups as one batch until ``stop_rule`` (default: the loss flattens) or ``max_steps``.

    Returns the results and the image-steps spent (images x steps).
    """
    device = model.device
    n = sum(g.n_images for g in groups)
    size = settings.image_size + 2 * settings.padding
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    params, render = fft_rgb_images(n, size, device)
    with torch.no_grad():
        start = 0
        for g in groups:
            if g.init is not None:
                params[0][start : start + g.n_images] = g.init.to(device)
            start += g.n_images
    objective = _objective(groups)
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    layers = sorted({g.layer for g in groups})
    model.module.requires_grad_(False)
    stop_rule = stop_rule or LossPlateau(settings)
    steps = 0
    with capture_outputs(model.module, layers, stop_early=True) as captured:

        def T(name: str) -> torch.Tensor:
            mapped = channel_map(captured[name], model.spec.prefix_tokens)
            # lucent's diversity expects (N, C, H, W); token maps become (N, C, L, 1).
            return mapped.unsqueeze(-1).contiguous() if mapped.ndim == 3 else mapped

        def forward(images: torch.Tensor) -> None:
            if model.spec.fixed_input_size:
                images = F.interpolate(images, size=(model.input_size,) * 2, mode="bilinear", align_corners=False)
            forward_until_captured(model.module, model.normalize(images), captured)

        while steps < settings.max_steps:
            optimizer.zero_grad()
            forward(robustness_transforms(render(), gen))
            loss = objective(T)
            loss.backward()
            optimizer.step()
            steps += 1
            if stop_rule(steps, float(loss.detach()), params[0].grad):
                break

        with torch.no_grad():
            final = _center_crop(render(), settings.padding)
            forward(final)
            results = []
            start = 0
            for g in groups:
                # The activation as a scan computes it, so that it compares with the exemplars' exactly.
                acts = readout_activations(T(g.layer)[start : start + g.n_images], [g.readout])[:, 0]
                pixels = final[start : start + g.n_images]
                results.append(
                    GroupResult(
                        group=g,
                        pixels=(pixels.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy(),
                        activations=acts.float().cpu().numpy(),
                        spectrum=params[0][start : start + g.n_images].detach().cpu().clone(),
                        steps=steps,
                    )
                )
                start += g.n_images
    return results, n * steps


# --- calibration ----------------------------------------------------------------


@dataclass(frozen=True)
class FVRequest:
    """One unit to visualise, with its most extreme natural exemplar activations as targets."""

    layer: str
    readout: Readout
    max_target: float
    min_target: float


@dataclass(frozen=True)
class Visualisation:
    pixels: np.ndarray  # uint8 HWC
    direction: str  # "max" or "min"
    activation: float
    steps: int
    seed: int
    diversity: float  # the alpha used; 0 for the non-diverse image
    beats_exemplars: bool


def _beats(direction: str, activations: np.ndarray, target: float) -> bool:
    # For min, reaching a ReLU floor that the exemplars also reach counts as a tie won.
    return bool(np.all(activations > target)) if direction == "max" else bool(np.all(activations <= target))


def _scale(request: FVRequest) -> float:
    return max(abs(request.max_target), abs(request.min_target), 1e-3)


def visualise_units(
    model: LoadedModel, requests: Sequence[FVRequest], settings: FVSettings = FVSettings(), seed: int = 0
) -> tuple[list[list[Visualisation]], int]:
    """9 max and 9 min images per request; returns them (max first) and the image-steps spent."""
    k = settings.diverse_images
    directions = ("max", "min")
    # Round 1: every candidate alpha of every unit and direction, plus the non-diverse image, in one batch.
    groups = []
    for r in requests:
        for d in directions:
            groups.append(Group(r.layer, r.readout, d, 1, 0.0))
            groups += [Group(r.layer, r.readout, d, k, a * _scale(r)) for a in settings.relative_alphas]
    results, image_steps = optimise_groups(model, groups, settings, seed)
    per_key: dict[tuple[int, str], list[GroupResult]] = {}
    per_group = 1 + len(settings.relative_alphas)
    for i in range(len(requests)):
        for j, d in enumerate(directions):
            offset = (2 * i + j) * per_group
            per_key[(i, d)] = results[offset : offset + per_group]

    def target(i: int, d: str) -> float:
        return requests[i].max_target if d == "max" else requests[i].min_target

    # Round 2: refine between the largest passing alpha and the next one, warm-started from the passing images.
    refine: list[tuple[tuple[int, str], Group]] = []
    for (i, d), found in per_key.items():
        passing = [g for g in found[1:] if _beats(d, g.activations, target(i, d))]
        if not passing or passing[-1] is found[-1] or settings.refine_candidates == 0:
            continue
        low = passing[-1].group.alpha
        high = found[found.index(passing[-1]) + 1].group.alpha
        for a in np.geomspace(low, high, settings.refine_candidates + 2)[1:-1]:
            g = passing[-1].group
            refine.append(((i, d), Group(g.layer, g.readout, d, k, float(a), init=passing[-1].spectrum)))
    if refine:
        refined, more_steps = optimise_groups(model, [g for _, g in refine], settings, seed + 1)
        image_steps += more_steps
        for (key, _), result in zip(refine, refined, strict=True):
            per_key[key].append(result)

    output = []
    for i in range(len(requests)):
        images: list[Visualisation] = []
        for d in directions:
            found = per_key[(i, d)]
            non_diverse, diverse = found[0], found[1:]
            passing = [g for g in diverse if _beats(d, g.activations, target(i, d))]
            chosen = max(passing, key=lambda g: g.group.alpha) if passing else diverse[0]
            ok = bool(passing)
            for pixels, act in zip(chosen.pixels, chosen.activations, strict=True):
                images.append(Visualisation(pixels, d, float(act), chosen.steps, seed, chosen.group.alpha, ok))
            nd_ok = _beats(d, non_diverse.activations, target(i, d))
            images.append(
                Visualisation(
                    non_diverse.pixels[0], d, float(non_diverse.activations[0]), non_diverse.steps, seed, 0.0, nd_ok
                )
            )
        output.append(images)
    return output, image_steps
