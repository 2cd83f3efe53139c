"""The 2023 study's feature visualisations, as a replication option (method ``imi2023``).

Zimmermann, Klein & Brendel (NeurIPS 2023) made their synthetic references with
``stimuli_generation/get_diverse_optimized_stimuli.py`` of brendel-group/imi. This module follows
that procedure step by step (read from the release; no code copied):

- lucent's Fourier parametrisation, Adam at lr 0.05, 224 px padded by 16 and centre-cropped back;
- transforms: jitter 16, a random scale from (1, 0.975, 1.025, 0.95, 1.05), a random whole-degree
  rotation in [-5, 5], jitter 8;
- the objective: lucent's channel objective (the mean over the run's images), negated for min,
  minus alpha times lucent's diversity;
- every run stops when the exponentially smoothed (0.99) largest image-gradient norm of its batch
  no longer falls: the mean of the window's first half over its second half is at most 1.1, with a
  2,000-step window, at least 2,500 steps, and at most 20,000 steps;
- every run starts from the same noise (the release reseeds before each run);
- per unit and direction: 9 non-diverse images (alpha 0); an exponential search over alpha from 1
  by factors of 10 (at most 999,999) for the first alpha at which the run's weakest image no longer
  beats the most extreme natural exemplar (strictly: above the max exemplar, below the min one);
  then 7 loops of binary search between the last passing alpha (0 when alpha 1 already failed) and
  that one; each run has 8 images;
- the chosen images: those of the largest passing alpha of the binary search, else those of the
  exponential search's last passing alpha, else the non-diverse ones; then the strongest
  non-diverse image is added as the ninth.

Where this deviates, and why:

- Runs are batched: every unit's and direction's search takes its next step in the same batch, and
  each run keeps its own stop rule and step count (:func:`stimuli.fv.optimise_groups` with
  ``group_stop``). That changes nothing the procedure sees except that the random transforms' draws
  are shared by a batch, and it is what makes the procedure affordable here.
- The random numbers differ (a torch generator, not numpy's global one), so no image is
  bit-identical to the release's.
- lucent's ``render_vis`` upsamples images smaller than 224 px to 224 before the model; here the
  model sees its own input size (our models are not all ImageNet models).
- When both searches fail, the release stores the 9 non-diverse images plus a copy of the strongest
  (10 images, 2 identical: its ``append`` extends the same list). Here the 8 weakest non-diverse
  images stand in for the diverse ones and the strongest is the ninth.
- A min visualisation of a unit behind a ReLU ties at zero with its exemplars and fails the strict
  test, as in the release. The per-image ``beats_exemplars`` record uses the project's rule (ties
  at the floor count as beating) so that it means the same for every method; the search's own
  strict verdicts are recorded in ``params``.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stimuli.fv import (
    FVRequest,
    FVSettings,
    Group,
    GroupResult,
    Visualisation,
    beats_exemplars,
    fft_rgb_images,
    optimise_groups,
)
from stimuli.registry import LoadedModel


@dataclass(frozen=True)
class Imi2023Settings:
    image_size: int = 224
    padding: int = 16
    lr: float = 0.05
    images: int = 9  # per direction: 9 non-diverse; 8 diverse + the strongest non-diverse
    min_steps: int = 2500
    window: int = 2000
    target_ratio: float = 1.1
    smoothing: float = 0.99
    max_steps: int = 20_000
    exponential_start: float = 1.0
    exponential_limit: float = 999_999
    binary_loops: int = 7

    def loop(self) -> FVSettings:
        return FVSettings(
            image_size=self.image_size, padding=self.padding, lr=self.lr, max_steps=self.max_steps, min_steps=0
        )


class GradientNormPlateau:
    """The release's stop rule: the exponentially smoothed norm of the image gradient (the largest in
    the run's batch) no longer falls by more than ``target_ratio`` across the window's two halves."""

    def __init__(self, size: int, settings: Imi2023Settings):
        self.size, self.s = size, settings
        self.norms: list[float] = []

    def image_gradient_norm(self, spectrum_grad: torch.Tensor) -> float:
        grad = torch.view_as_complex(spectrum_grad.contiguous())
        image_grad = torch.fft.irfftn(grad, s=(self.size, self.size), norm="ortho")
        return float(torch.linalg.vector_norm(image_grad, dim=(1, 2, 3)).max())

    def __call__(self, step: int, _loss: float, spectrum_grad: torch.Tensor) -> bool:
        norm = self.image_gradient_norm(spectrum_grad)
        last = self.norms[-1] if self.norms else norm
        self.norms.append(last * self.s.smoothing + (1 - self.s.smoothing) * norm)
        if len(self.norms) <= max(self.s.window, self.s.min_steps):
            return False
        half = self.s.window // 2
        first = float(np.mean(self.norms[-self.s.window : -half]))
        second = float(np.mean(self.norms[-half:]))
        return first / second <= self.s.target_ratio


def _jitter(images: torch.Tensor, d: int, gen: torch.Generator) -> torch.Tensor:
    # lucent: offsets drawn from [0, d), the image shrinks by d
    dx, dy = (int(v) for v in torch.randint(0, d, (2,), generator=gen))
    h, w = images.shape[-2:]
    return images[..., dx : dx + h - d, dy : dy + w - d]


SCALES = (1.0, 0.975, 1.025, 0.95, 1.05)
ANGLES = tuple(range(-5, 6))


def imi2023_transforms(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """jitter 16, one scale of :data:`SCALES` (resizing, as lucent does), one whole-degree rotation of
    :data:`ANGLES` (the same for the batch), jitter 8."""
    images = _jitter(images, 16, gen)
    scale = SCALES[int(torch.randint(0, len(SCALES), (1,), generator=gen))]
    size = [math.ceil(scale * d) for d in images.shape[-2:]]
    images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    angle = ANGLES[int(torch.randint(0, len(ANGLES), (1,), generator=gen))] * math.pi / 180
    theta = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0]])
    grid = F.affine_grid(theta.expand(len(images), 2, 3).to(images), list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)
    return _jitter(images, 8, gen)


def _weakest_beats(direction: str, activations: np.ndarray, target: float) -> bool:
    """The release's test: the run's weakest image beats the exemplar strictly."""
    return bool(activations.min() > target) if direction == "max" else bool(activations.max() < target)


@dataclass
class SearchOutcome:
    alpha: float
    result: GroupResult | None  # None: no diverse run passed; the non-diverse images stand in
    stage: str  # "binary", "exponential", "exponential limit" or "none"
    trace: list[tuple[float, bool]]  # every alpha tried, in order, and whether it passed


def alpha_search(direction: str, target: float, s: Imi2023Settings) -> Generator[float, GroupResult, SearchOutcome]:
    """The release's exponential-then-binary search, as a generator: it yields the next alpha to try
    and is sent that run's result; it returns the outcome."""
    trace: list[tuple[float, bool]] = []

    def tried(alpha: float, result: GroupResult) -> bool:
        ok = _weakest_beats(direction, result.activations, target)
        trace.append((alpha, ok))
        return ok

    last_ok, alpha, failed_at = None, s.exponential_start, None
    while alpha <= s.exponential_limit:
        result = yield alpha
        if not tried(alpha, result):
            failed_at = alpha
            break
        last_ok, alpha = result, alpha * 10
    if failed_at is None:  # never failed up to the limit: the largest value tried
        return SearchOutcome(alpha / 10, last_ok, "exponential limit", trace)
    low = 0.0 if failed_at == s.exponential_start else failed_at / 10
    high, best, best_alpha = failed_at, None, None
    for _ in range(s.binary_loops):
        middle = (low + high) / 2
        result = yield middle
        if tried(middle, result):
            best, best_alpha, low = result, middle, middle
        else:
            high = middle
    if best is not None:
        return SearchOutcome(best_alpha, best, "binary", trace)
    if last_ok is not None:
        return SearchOutcome(failed_at / 10, last_ok, "exponential", trace)
    return SearchOutcome(0.0, None, "none", trace)


def _strongest_first(direction: str, result: GroupResult) -> list[int]:
    order = np.argsort(result.activations)
    return list(order[::-1] if direction == "max" else order)


def visualise_units_imi2023(
    model: LoadedModel, requests: Sequence[FVRequest], settings: Imi2023Settings = Imi2023Settings(), seed: int = 42
) -> tuple[list[list[Visualisation]], int]:
    """9 max and 9 min images per request by the release's procedure; returns them (max first) and
    the image-steps spent."""
    loop = settings.loop()
    size = settings.image_size + 2 * settings.padding
    n_diverse = settings.images - 1
    torch.manual_seed(seed)  # every run starts from the same noise, as the release reseeds each run
    start_noise = fft_rgb_images(settings.images, size, model.device)[0][0].detach().cpu()
    keys = [(i, d) for i in range(len(requests)) for d in ("max", "min")]

    def target(key) -> float:
        i, d = key
        return requests[i].max_target if d == "max" else requests[i].min_target

    def group(key, n: int, alpha: float) -> Group:
        i, d = key
        return Group(requests[i].layer, requests[i].readout, d, n, float(alpha), init=start_noise[:n])

    searches = {key: alpha_search(key[1], target(key), settings) for key in keys}
    pending = {key: next(search) for key, search in searches.items()}
    outcomes: dict[tuple[int, str], SearchOutcome] = {}
    # Round 0 also holds the non-diverse runs: nothing in the searches depends on them.
    round_groups = [group(key, settings.images, 0.0) for key in keys]
    non_diverse: dict[tuple[int, str], GroupResult] = {}
    image_steps = 0
    first = True
    while pending:
        batch = list(pending.items())
        groups = (round_groups if first else []) + [group(key, n_diverse, alpha) for key, alpha in batch]
        results, spent = optimise_groups(
            model,
            groups,
            loop,
            seed,
            group_stop=lambda _g: GradientNormPlateau(size, settings),
            transforms=imi2023_transforms,
        )
        image_steps += spent
        if first:
            non_diverse = dict(zip(keys, results[: len(keys)], strict=True))
            results = results[len(keys) :]
            first = False
        pending = {}
        for (key, _alpha), result in zip(batch, results, strict=True):
            try:
                pending[key] = searches[key].send(result)
            except StopIteration as done:
                outcomes[key] = done.value

    output = []
    for i in range(len(requests)):
        images: list[Visualisation] = []
        for d in ("max", "min"):
            outcome, plain = outcomes[(i, d)], non_diverse[(i, d)]
            target_act = target((i, d))
            plain_order = _strongest_first(d, plain)
            params = {
                "search": outcome.stage,
                "runs": len(outcome.trace),
                "alphas_tried": [a for a, _ in outcome.trace],
                "passed": [ok for _, ok in outcome.trace],
                "non_diverse_beats": _weakest_beats(d, plain.activations, target_act),
            }
            if outcome.result is not None:
                chosen, alpha = outcome.result, outcome.alpha
                picks = [(chosen, j) for j in _strongest_first(d, chosen)[::-1]]  # weakest first, as stored
            else:
                alpha = 0.0
                picks = [(plain, j) for j in plain_order[1:][::-1]]
            ok = beats_exemplars(d, np.array([r.activations[j] for r, j in picks]), target_act)
            for r, j in picks:
                images.append(
                    Visualisation(r.pixels[j], d, float(r.activations[j]), r.steps, seed, alpha, ok, dict(params))
                )
            best = plain_order[0]
            images.append(
                Visualisation(
                    plain.pixels[best],
                    d,
                    float(plain.activations[best]),
                    plain.steps,
                    seed,
                    0.0,
                    beats_exemplars(d, plain.activations[[best]], target_act),
                    {"search": "non-diverse"},
                )
            )
        output.append(images)
    return output, image_steps
