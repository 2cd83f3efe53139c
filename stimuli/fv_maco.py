"""Magnitude-constrained optimisation (MACO; Fel et al., NeurIPS 2023), method ``maco``.

The image is a Fourier spectrum whose *magnitude* is fixed to that of natural images and whose
*phase* alone is optimised, so that visualisations keep natural images' power spectrum; this is
what makes them readable for large models and ViTs. Read from serre-lab/Horama (no code copied):
phase and spatial image standardised, colours recorrelated, a sigmoid; random crops with noise as
the transforms; the accumulated absolute input gradient as a transparency map, which shows where
the image matters to the unit.

Here, unlike Horama:

- the magnitude comes from the study's own images (``magnitude: dataset``, the mean amplitude
  spectrum of a sample in the parametrisation's decorrelated space) or a 1/f law
  (``power_law``), since Horama's ImageNet spectrum is a download;
- the images get the study's images' contrast (the spatial standard deviation in that space)
  where Horama standardises to 1: with ImageNet's normalisation 1 is about natural images'
  contrast, but shapes world's saturated images have about 4 times as much, and at 1 no image
  reached the most extreme exemplar on any unit measured (``benchmarks/bench_fv.py``). By default
  (``contrast: range``) each image's contrast is optimised with its phase, within the range that a
  sample of the study's images and the images that set the units' targets span (:class:`StudyImages`):
  the magnitude fixes the spectrum's shape, the range its energy. The most extreme exemplars are
  often the dataset's most contrasted images, which a sample misses;
- the DC term, an image's mean colour, is a bound, not a fixed value: the largest colour cast of
  those images, and the phase (left unstandardised there) chooses the mean colour within it, from
  the sample's mean colour where it starts. A fixed mean cast held units that want a saturated
  colour short of their exemplars;
- one image is the model's input size and crops of 85-100 % of its side zoom in on it (Horama
  renders 1280 px for a 224 px model and crops a fifth of it), to keep the cost of a study's 18
  images per unit low; the whole image is what the unit is read on, and crops of 70-95 % left its
  border weaker (the max side's weakest image reached 0.18 of the exemplar rather than 0.26 on
  ShapesNet-S's channel 3);
- the transparency is applied: a participant sees the image composited by its transparency map
  (clipped at its 80th percentile, as Horama plots it) over its own mean colour (``background:
  mean``, the default) or a grey level (Horama plots over white, 1), and the activation recorded
  and compared with the exemplars is the composited image's. White is itself a stimulus: on
  ShapesNet-L channel 9, whose max side is pale, compositing the min side over white held it at
  0.53 of the exemplar (0.95 over its mean colour, 0.98 opaque);
- images come in a batch of 9 per direction, made diverse with lucent's diversity term and
  calibrated like the ``calibrated`` method: the largest weight at which every image still beats
  the most extreme exemplar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from contracts.errors import ConfigError
from stimuli.fv import Transforms, color_matrix


def _standardise(x: torch.Tensor) -> torch.Tensor:
    dims = tuple(range(1, x.ndim))
    return (x - x.mean(dim=dims, keepdim=True)) / (x.std(dim=dims, keepdim=True) + 1e-4)


def _to_decorrelated(images: torch.Tensor) -> torch.Tensor:
    """The inverse of the render's colour step: [0, 1] images to the space the spectrum lives in."""
    logits = torch.logit(images.clamp(0.01, 0.99))
    inverse = torch.linalg.inv(color_matrix(images.device))
    return torch.einsum("nchw,cd->ndhw", logits, inverse)


STUDY_SAMPLE = 64  # random study images MACO measures its magnitude and contrast on


def _decorrelated(images: torch.Tensor, size: int) -> torch.Tensor:
    images = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return _to_decorrelated(images)


@dataclass(frozen=True)
class StudyImages:
    """What MACO measures of the study's images: a random ``sample`` (the magnitude's shape, the mean
    contrast) and, where known, the ``extremes``: the natural images whose activations are the units'
    targets. Ranges span both, so that an image may be as contrasted and as coloured as the natural
    image it must beat: on shapes world a sample of 64 missed the two most contrasted images, which
    are the most extreme exemplars of most of the benchmark's first-layer units."""

    sample: torch.Tensor  # (N, 3, H, W) in [0, 1]
    extremes: torch.Tensor | None = None  # (M, 3, H, W) in [0, 1]

    def spatial(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The sample and all images (sample and extremes) in the space the render inverts, at ``size``,
        centred on the sample's mean colour, not each image's own: an image's colour cast is part of
        natural statistics (the DC term), while the sample's mean level would put nearly all the energy
        there (99.98 % on shapes world) and make every image a flat colour."""
        sample = _decorrelated(self.sample, size)
        centre = sample.mean(dim=(0, 2, 3), keepdim=True)
        every = sample if self.extremes is None else torch.cat([sample, _decorrelated(self.extremes, size)])
        return sample - centre, every - centre


@dataclass(frozen=True)
class Contrast:
    """The study's images' contrasts (spatial standard deviations before the colour step): the sample's
    mean, and the least and most contrasted image's of the sample and the extremes."""

    mean: float
    low: float
    high: float


def natural_contrast(images: StudyImages, size: int) -> Contrast:
    sample, every = images.spatial(size)
    per_image = every.flatten(1).std(1)
    return Contrast(float(sample.flatten(1).std(1).mean()), float(per_image.min()), float(per_image.max()))


def natural_magnitude(images: StudyImages, size: int) -> torch.Tensor:
    """The sample's mean amplitude spectrum, in the space the render inverts, so that a phase-only image
    has natural images' power spectrum; except the DC term, each colour's largest cast among all the
    images: the DC term is an image's mean colour, its real part (magnitude times the cosine of its
    phase), so the phase sets each image's mean colour within the casts the study's images span. The
    sample's mean cast held every image near its mean colour, and units that want a saturated colour
    fell short (ShapesNet-S channel 3's max side reached 0.57 of the exemplar, 0.78 with this)."""
    sample, every = images.spatial(size)
    magnitude = torch.fft.rfft2(sample).abs().mean(0)
    magnitude[:, 0, 0] = torch.fft.rfft2(every)[:, :, 0, 0].abs().amax(0)
    return magnitude


def power_law_magnitude(size: int, decay: float = 1.0) -> torch.Tensor:
    """A 1/f^decay amplitude spectrum, (3, size, size // 2 + 1), the DC term like the lowest frequency."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    frequency = torch.sqrt(fx**2 + fy**2).clamp(min=1.0 / size)
    return (frequency**-decay).expand(3, -1, -1).clone()


@dataclass(frozen=True)
class MacoImage:
    """A :class:`stimuli.fv.Parametrisation`: the phase is optimised, the magnitude is fixed.

    With ``contrast_range`` each image's contrast is optimised too, within the range: the parameter
    tensor then has one column more than the phase, whose mean is the contrast's logit in the range
    (one tensor, so that the optimiser, warm starts and per-group slices are the phase's).
    """

    magnitude: torch.Tensor  # (3, size, size // 2 + 1)
    contrast: float = 1.0  # the spatial image's standard deviation before the colour step (where a learned one starts)
    contrast_range: tuple[float, float] | None = None  # a learned contrast's bounds; None: fixed
    transparency: bool = True
    background: float | str = "mean"  # what shows where the transparency map is low: a grey level, or "mean"
    clip_percentile: float = 80.0
    padding_used: bool = False

    def __post_init__(self):
        if self.contrast_range is not None and not self.contrast_range[0] < self.contrast < self.contrast_range[1]:
            raise ConfigError(f"MACO contrast {self.contrast} is not inside its range {list(self.contrast_range)}")

    def create(self, n: int, size: int, device: torch.device):
        if tuple(self.magnitude.shape) != (3, size, size // 2 + 1):
            raise ConfigError(
                f"MACO magnitude has shape {tuple(self.magnitude.shape)}, not (3, {size}, {size // 2 + 1})"
            )
        learned = self.contrast_range is not None
        param = torch.randn(n, 3, size, size // 2 + 1 + learned, device=device)
        # The DC bin's phase sets the mean colour (its cosine): it starts at the sample's mean colour
        # (pi / 2), so that a dataset magnitude's DC term, a bound, does not start every image cast.
        param[:, :, 0, 0] = math.pi / 2
        if learned:
            low, high = self.contrast_range
            param[..., -1] = math.log((self.contrast - low) / (high - self.contrast))
        param.requires_grad_(True)
        matrix = color_matrix(device)

        def render() -> torch.Tensor:
            return torch.sigmoid(torch.einsum("nchw,cd->ndhw", self.spatial(param), matrix))

        return param, render

    def split(self, param: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The phase, (n, 3, size, size // 2 + 1), and each image's contrast, (n,)."""
        if self.contrast_range is None:
            return param, torch.full(param.shape[:1], self.contrast, device=param.device)
        low, high = self.contrast_range
        return param[..., :-1], low + (high - low) * torch.sigmoid(param[..., -1].mean((1, 2)))

    def spatial(self, param: torch.Tensor) -> torch.Tensor:
        """The spatial image, in decorrelated colours, whose amplitude spectrum is the fixed magnitude
        (up to the scale that gives it its contrast) whatever the phase."""
        phase, contrast = self.split(param)
        size = phase.shape[-2]
        magnitude = self.magnitude.to(phase.device).expand_as(phase)
        # The texture's phases are standardised (Horama); the DC bin's, a mean colour, is left as it is.
        dc = torch.zeros(phase.shape[1:], dtype=torch.bool, device=phase.device)
        dc[:, 0, 0] = True
        phase = torch.where(dc, phase, _standardise(phase))
        spatial = torch.fft.irfft2(torch.polar(magnitude, phase), s=(size, size))
        return _standardise(spatial) * contrast[:, None, None, None]

    def image_params(self, param: torch.Tensor) -> list[dict]:
        return [{"contrast": float(c)} for c in self.split(param)[1]]

    def alpha(self, sensitivity: torch.Tensor) -> torch.Tensor:
        """(n, 1, H, W) in [0, 1]: the mean |dL/dx| over colours, clipped at its percentile, scaled."""
        mean = sensitivity.mean(1, keepdim=True)
        flat = mean.flatten(1)
        ceiling = torch.quantile(flat, self.clip_percentile / 100, dim=1).clamp(min=1e-12)
        return (mean.clamp(max=ceiling[:, None, None, None]) / ceiling[:, None, None, None]).clamp(0, 1)

    def shown(self, images: torch.Tensor, sensitivity: torch.Tensor | None) -> torch.Tensor:
        if not self.transparency or sensitivity is None or not torch.any(sensitivity > 0):
            return images
        a = self.alpha(sensitivity)
        # "mean": the image's own mean colour, which adds no colour the optimisation did not choose
        background = images.mean((2, 3), keepdim=True) if self.background == "mean" else self.background
        return a * images + (1 - a) * background


def maco_transforms(crop: tuple[float, float], noise: float) -> Transforms:
    """Random crops (a side of ``crop`` times the image's, centred near the middle) zoomed back to
    the image's size, plus Gaussian and uniform pixel noise: Horama's transforms, per image.
    The settings' defaults live in :class:`stimuli.fv_methods.MacoFV`."""

    def transform(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n = images.shape[0]
        side = torch.empty(n).uniform_(*crop, generator=gen)
        centre = (torch.randn(n, 2, generator=gen) * 0.15).clamp(-1, 1) * (1 - side[:, None])
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = side
        theta[:, :, 2] = centre
        grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
        out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        gaussian = torch.randn(out.shape, generator=gen).to(out) * noise
        uniform = (torch.rand(out.shape, generator=gen).to(out) - 0.5) * noise
        return out + gaussian + uniform

    return transform


def maco_magnitude(source: str, size: int, images: StudyImages | None) -> torch.Tensor:
    """The fixed magnitude: from the study's images (``dataset``), a 1/f law, or an ``.npy`` file of
    shape (3, H, W // 2 + 1) (Horama's ImageNet spectrum, for one), resized to ``size``."""
    if source == "power_law":
        return power_law_magnitude(size)
    if source == "dataset":
        return natural_magnitude(_needed(images, "magnitude: 'dataset'"), size)
    try:
        array = torch.as_tensor(np.load(source, allow_pickle=False), dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"feature_visualization.magnitude: cannot read {source} as .npy ({exc})") from None
    if array.ndim != 3 or array.shape[0] != 3:
        raise ConfigError(
            f"feature_visualization.magnitude: {source} has shape {tuple(array.shape)}, expected (3, H, W // 2 + 1)"
        )
    return F.interpolate(array[None], size=(size, size // 2 + 1), mode="bilinear", align_corners=False)[0]


def _needed(images: StudyImages | None, setting: str) -> StudyImages:
    if images is None:
        raise ConfigError(f"feature_visualization.{setting} needs the study's images")
    return images


def maco_image(
    magnitude: torch.Tensor,
    contrast: float | str,
    size: int,
    images: StudyImages | None,
    **shown,
) -> MacoImage:
    """The parametrisation for a contrast setting: a number (fixed), ``mean`` (the study's images'
    mean, fixed) or ``range`` (learned per image between the study's least and most contrasted)."""
    if not isinstance(contrast, str):
        return MacoImage(magnitude, float(contrast), **shown)
    measured = natural_contrast(_needed(images, f"contrast: {contrast!r}"), size)
    if contrast == "range" and measured.low < measured.mean < measured.high:
        return MacoImage(magnitude, measured.mean, contrast_range=(measured.low, measured.high), **shown)
    return MacoImage(magnitude, measured.mean, **shown)  # 'mean', or a sample with one contrast
