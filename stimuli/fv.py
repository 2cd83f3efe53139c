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
from typing import Any, Protocol

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


def color_matrix(device: torch.device) -> torch.Tensor:
    """lucent's colour recorrelation (normalised square root of ImageNet's colour covariance), as the
    (3, 3) matrix that maps decorrelated channels c to colours d in ``einsum("nchw,cd->ndhw")``."""
    return torch.as_tensor(lucent_color.color_correlation_normalized.T, dtype=torch.float32, device=device)


def _decorrelate(image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("nchw,cd->ndhw", image, color_matrix(image.device))


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
    alpha: float  # as in lucent: the group's mean unit objective minus alpha times its diversity
    init: torch.Tensor | None = field(default=None, compare=False)  # parameters to start from


@dataclass
class GroupResult:
    group: Group
    pixels: np.ndarray  # (n, H, W, 3) uint8, as shown
    activations: np.ndarray  # (n,) on the image as shown, without transforms
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


def _group_objective(g: Group, start: int) -> objectives.Objective:
    """lucent's ``channel`` (or ``direction``) objective on the group's images, negated for min, minus
    alpha times lucent's ``diversity`` of the group (which is minus its mean pairwise Gram similarity)."""
    stop = start + g.n_images
    sign = 1.0 if g.direction == "max" else -1.0
    unit = objectives.Objective(lambda T: -sign * readout_objective(T(g.layer), g.readout)[start:stop].mean())
    if g.alpha > 0 and g.n_images > 1:
        diversity = objectives.diversity(g.layer)
        return unit - g.alpha * objectives.Objective(lambda T: diversity(lambda name: T(name)[start:stop]))
    return unit


class LossPlateau:
    """Early stopping: the smoothed loss gained less than ``tolerance`` (relative) over ``window`` steps."""

    def __init__(self, settings: FVSettings):
        self.settings = settings
        self.history: list[float] = []

    def __call__(self, step: int, loss: float, _grad: torch.Tensor) -> bool:
        s = self.settings
        self.history.append(loss if not self.history else 0.9 * self.history[-1] + 0.1 * loss)
        if step < s.min_steps or step % s.window or len(self.history) <= s.window:
            return False
        gain = self.history[-s.window - 1] - self.history[-1]
        return gain < s.tolerance * max(abs(self.history[-1]), 1e-8)


# (step, loss, gradient of the parameters) -> stop now? Called after each step's backward pass.
StopRule = Callable[[int, float, torch.Tensor], bool]
Transforms = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class Parametrisation(Protocol):
    """How images are made from the optimised parameters."""

    padding_used: bool  # whether the image is padded and centre-cropped (lucent) or shown whole

    def create(self, n: int, size: int, device: torch.device) -> tuple[torch.Tensor, Callable[[], torch.Tensor]]:
        """The parameter tensor (batch first) and a function rendering (n, 3, size, size) images in [0, 1]."""
        ...

    def shown(self, images: torch.Tensor, sensitivity: torch.Tensor | None) -> torch.Tensor:
        """The images as a participant sees them, from the rendered ones and the accumulated |dL/dx|."""
        ...


@dataclass(frozen=True)
class FourierImage:
    """lucent's parametrisation: a scaled Fourier spectrum, colours decorrelated, a sigmoid."""

    padding_used: bool = True

    def create(self, n: int, size: int, device: torch.device):
        params, render = fft_rgb_images(n, size, device)
        return params[0], render

    def shown(self, images: torch.Tensor, sensitivity: torch.Tensor | None) -> torch.Tensor:
        return images


def optimise_groups(
    model: LoadedModel,
    groups: Sequence[Group],
    settings: FVSettings,
    seed: int = 0,
    stop_rule: StopRule | None = None,
    *,
    group_stop: Callable[[Group], StopRule] | None = None,
    parametrisation: Parametrisation = FourierImage(),
    transforms: Transforms = robustness_transforms,
    size: int | None = None,
) -> tuple[list[GroupResult], int]:
    """Optimise all groups as one batch; returns the results and the image-steps spent (images x steps).

    With ``stop_rule`` (default: the total loss flattens) every group stops together. With
    ``group_stop``, each group has its own rule, fed its own loss and the gradient of its own
    parameters: a group that stops is recorded at that step and counts no more steps. It is then as if
    it had been optimised alone (batch norm is in eval mode, Adam is per parameter), except that the
    random transforms' draws are shared by the batch.
    """
    device = model.device
    n = sum(g.n_images for g in groups)
    padding = settings.padding if parametrisation.padding_used else 0
    size = size or settings.image_size + 2 * padding
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    param, render = parametrisation.create(n, size, device)
    slices, start = [], 0
    for g in groups:
        slices.append(slice(start, start + g.n_images))
        start += g.n_images
    with torch.no_grad():
        for g, s in zip(groups, slices, strict=True):
            if g.init is not None:
                param[s] = g.init.to(device)
    parts = [_group_objective(g, s.start) for g, s in zip(groups, slices, strict=True)]
    optimizer = torch.optim.Adam([param], lr=settings.lr)
    layers = sorted({g.layer for g in groups})
    model.module.requires_grad_(False)
    rules = [group_stop(g) for g in groups] if group_stop is not None else None
    stop_rule = stop_rule or LossPlateau(settings)
    sensitivity = torch.zeros(n, 3, size, size, device=device)
    results: list[GroupResult | None] = [None] * len(groups)
    steps = 0
    image_steps = 0
    with capture_outputs(model.module, layers, stop_early=True) as captured:

        def T(name: str) -> torch.Tensor:
            mapped = channel_map(captured[name], model.spec.prefix_tokens)
            # lucent's diversity expects (N, C, H, W); token maps become (N, C, L, 1).
            return mapped.unsqueeze(-1).contiguous() if mapped.ndim == 3 else mapped

        def forward(images: torch.Tensor) -> None:
            if model.spec.fixed_input_size:
                images = F.interpolate(images, size=(model.input_size,) * 2, mode="bilinear", align_corners=False)
            forward_until_captured(model.module, model.normalize(images), captured)

        @torch.no_grad()
        def record(i: int) -> None:
            g, s = groups[i], slices[i]
            images = _center_crop(render()[s], padding)
            shown = parametrisation.shown(images, _center_crop(sensitivity[s], padding))
            forward(shown)
            # The activation as a scan computes it, so that it compares with the exemplars' exactly.
            acts = readout_activations(T(g.layer), [g.readout])[:, 0]
            results[i] = GroupResult(
                group=g,
                pixels=(shown.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy(),
                activations=acts.float().cpu().numpy(),
                spectrum=param[s].detach().cpu().clone(),
                steps=steps,
            )

        while steps < settings.max_steps and any(r is None for r in results):
            optimizer.zero_grad()
            images = render()
            images.retain_grad()
            forward(transforms(images, gen))
            losses = [part(T) for part in parts]
            loss = torch.stack(losses).sum()
            loss.backward()
            sensitivity += images.grad.abs()
            optimizer.step()
            steps += 1
            active = [i for i, r in enumerate(results) if r is None]
            image_steps += sum(groups[i].n_images for i in active)
            if rules is None:
                if stop_rule(steps, float(loss.detach()), param.grad):
                    break
                continue
            for i in active:
                if rules[i](steps, float(losses[i].detach()), param.grad[slices[i]]):
                    record(i)
        for i, r in enumerate(results):
            if r is None:
                record(i)
    return results, image_steps


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
    diversity: float  # the alpha used (lucent's convention); 0 for the non-diverse image
    beats_exemplars: bool
    params: dict = field(default_factory=dict)  # the method's own per-image record (search step, ...)


def beats_exemplars(direction: str, activations: np.ndarray, target: float) -> bool:
    # For min, reaching a ReLU floor that the exemplars also reach counts as a tie won.
    return bool(np.all(activations > target)) if direction == "max" else bool(np.all(activations <= target))


def _scale(request: FVRequest) -> float:
    return max(abs(request.max_target), abs(request.min_target), 1e-3)


def visualise_units(
    model: LoadedModel,
    requests: Sequence[FVRequest],
    settings: FVSettings = FVSettings(),
    seed: int = 0,
    **optimise: Any,
) -> tuple[list[list[Visualisation]], int]:
    """9 max and 9 min images per request; returns them (max first) and the image-steps spent.

    ``optimise`` goes to :func:`optimise_groups` (another parametrisation, its transforms).
    """
    k = settings.diverse_images
    directions = ("max", "min")
    # Round 1: every candidate alpha of every unit and direction, plus the non-diverse image, in one batch.
    groups = []
    for r in requests:
        for d in directions:
            groups.append(Group(r.layer, r.readout, d, 1, 0.0))
            groups += [Group(r.layer, r.readout, d, k, a * _scale(r)) for a in settings.relative_alphas]
    results, image_steps = optimise_groups(model, groups, settings, seed, **optimise)
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
        passing = [g for g in found[1:] if beats_exemplars(d, g.activations, target(i, d))]
        if not passing or passing[-1] is found[-1] or settings.refine_candidates == 0:
            continue
        low = passing[-1].group.alpha
        high = found[found.index(passing[-1]) + 1].group.alpha
        for a in np.geomspace(low, high, settings.refine_candidates + 2)[1:-1]:
            g = passing[-1].group
            refine.append(((i, d), Group(g.layer, g.readout, d, k, float(a), init=passing[-1].spectrum)))
    if refine:
        refined, more_steps = optimise_groups(model, [g for _, g in refine], settings, seed + 1, **optimise)
        image_steps += more_steps
        for (key, _), result in zip(refine, refined, strict=True):
            per_key[key].append(result)

    output = []
    for i in range(len(requests)):
        images: list[Visualisation] = []
        for d in directions:
            found = per_key[(i, d)]
            non_diverse, diverse = found[0], found[1:]
            passing = [g for g in diverse if beats_exemplars(d, g.activations, target(i, d))]
            chosen = max(passing, key=lambda g: g.group.alpha) if passing else diverse[0]
            ok = bool(passing)
            for pixels, act in zip(chosen.pixels, chosen.activations, strict=True):
                images.append(Visualisation(pixels, d, float(act), chosen.steps, seed, chosen.group.alpha, ok))
            nd_ok = beats_exemplars(d, non_diverse.activations, target(i, d))
            images.append(
                Visualisation(
                    non_diverse.pixels[0], d, float(non_diverse.activations[0]), non_diverse.steps, seed, 0.0, nd_ok
                )
            )
        output.append(images)
    return output, image_steps
