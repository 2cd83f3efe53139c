"""Feature visualisations with lucent's image parametrisation and objectives.

lucent 0.1.8's ``render_vis`` leaks hooks, pins tensors to ``cuda:0`` and uses
kornia functions that no longer exist, so the optimisation loop, the
transforms, the hooks and the device handling are ours; the FFT
parametrisation, the colour decorrelation matrix and the objectives are lucent's.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stimuli.errors import LUCENT_MISSING, PsychinterpError
from stimuli.registry import LoadedModel, capture_outputs, channel_map

try:
    from lucent.optvis import objectives
    from lucent.optvis.param import color as lucent_color
    from lucent.optvis.param import spatial as lucent_spatial
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise PsychinterpError(LUCENT_MISSING.format(reason=exc)) from None


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


def robustness_transforms(images: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    """Pad, jitter 16, scale 0.95-1.05, rotate +-5 degrees, jitter 8."""
    if padding:
        images = F.pad(images, [padding] * 4, mode="reflect")
    images = _jitter(images, 16, gen)
    images = _scale_rotate(images, gen)
    return _jitter(images, 8, gen)


@dataclass(frozen=True)
class Visualisation:
    pixels: np.ndarray  # uint8 HWC
    direction: str  # "max" or "min"
    activation: float
    steps: int
    seed: int


def visualise_unit(
    model: LoadedModel,
    layer: str,
    channel: int,
    images_per_direction: int,
    steps: int,
    image_size: int,
    padding: int = 16,
    lr: float = 0.05,
    seed: int = 0,
) -> list[Visualisation]:
    """Optimise images that drive the unit up (``max``) and down (``min``), as one batch."""
    device = model.device
    n = images_per_direction
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    params, render = fft_rgb_images(2 * n, image_size, device)
    objective = objectives.Objective.sum(
        [objectives.channel(layer, channel, batch=i) for i in range(n)]
        + [-objectives.channel(layer, channel, batch=n + i) for i in range(n)]
    )
    optimizer = torch.optim.Adam(params, lr=lr)
    size = model.input_size
    model.module.requires_grad_(False)
    with capture_outputs(model.module, [layer]) as captured:

        def T(name: str) -> torch.Tensor:
            return channel_map(captured[name], model.spec.prefix_tokens)

        for _ in range(steps):
            optimizer.zero_grad()
            views = robustness_transforms(render(), padding, gen)
            if model.spec.fixed_input_size:
                views = F.interpolate(views, size=(size, size), mode="bilinear", align_corners=False)
            model.module(model.normalize(views))
            loss = objective(T)
            loss.backward()
            optimizer.step()

        with torch.no_grad():
            final = render()
            shown = F.interpolate(final, size=(size, size), mode="bilinear") if model.spec.fixed_input_size else final
            model.module(model.normalize(shown))
            acts = T(layer)[:, channel]
            acts = acts.flatten(1).mean(1) if acts.ndim > 1 else acts
    pixels = (final.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [
        Visualisation(
            pixels=pixels[i],
            direction="max" if i < n else "min",
            activation=float(acts[i]),
            steps=steps,
            seed=seed,
        )
        for i in range(2 * n)
    ]
