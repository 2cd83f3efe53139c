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
binary search, 9 runs of 8 images per direction), alpha is steered during a
single run (:class:`AlphaControl`): it grows while the weakest image beats the
target by more than a margin and shrinks while it does not, and the run stops
when its loss flattens.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
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


def fft_rgb_images(batch: int, size: int, device: torch.device, sd: float | None = None):
    """Parameters and a function returning (batch, 3, size, size) images in [0, 1]; ``sd`` is the starting
    spectrum's standard deviation (None: lucent's 0.01)."""
    with _lucent_device(device):
        params, spectrum_image = lucent_spatial.fft_image((batch, 3, size, size), sd=sd)
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
class AlphaControl:
    """Steer a group's diversity weight during its run so that its weakest image stays just past the
    target: the largest diversity that still beats the exemplars, found in the run itself.

    Every ``check_every`` steps the images are rendered as shown (no transforms: the acceptance rule's
    view) and the weakest image's slack (its activation past ``target``, positive when it beats it)
    sets ``alpha *= exp(rate * clip(slack / margin - 1, -1, 1))``: alpha grows while the slack is larger
    than ``margin`` and shrinks while it is smaller, within ``[floor, ceiling]``. The group's stop rule
    is heeded only where the last slack is between 0 and twice the margin, and the last passing state
    is kept, so that a run that ends just short of the target returns the images that last beat it."""

    target: float
    margin: float  # in activation units, > 0
    rate: float = 0.25
    floor: float = 1e-6
    ceiling: float = 1e6
    check_every: int = 8
    steer: bool = True  # False: alpha stays; the control only keeps the run going until it beats the target
    restart: bool = True  # at the floor, restart the images left behind from the group's strongest

    def slack(self, direction: str, activations: np.ndarray) -> float:
        if direction == "max":
            return float(np.asarray(activations).min()) - self.target
        return self.target - float(np.asarray(activations).max())

    def holds(self, slack: float) -> bool:
        """The weakest image beats the target (by no more than twice the margin while alpha is steered)."""
        return 0 <= slack and (not self.steer or slack <= 2 * self.margin)

    def next_alpha(self, alpha: float, slack: float) -> float:
        if not self.steer:
            return alpha
        step = self.rate * min(max(slack / self.margin - 1.0, -1.0), 1.0)
        return min(max(alpha * math.exp(step), self.floor), self.ceiling)


@dataclass(frozen=True)
class Group:
    """Images of one batch that share a unit, a direction and a diversity weight."""

    layer: str
    readout: Readout
    direction: str  # "max" or "min"
    n_images: int
    alpha: float  # as in lucent: the group's mean unit objective minus alpha times its diversity
    init: torch.Tensor | None = field(default=None, compare=False)  # parameters to start from
    control: AlphaControl | None = None  # steer alpha during the run (``alpha`` is where it starts)


@dataclass
class GroupResult:
    group: Group
    pixels: np.ndarray  # (n, H, W, 3) uint8, as shown
    activations: np.ndarray  # (n,) on the image as shown, without transforms
    spectrum: torch.Tensor  # final parameters, to warm-start a later round
    steps: int
    alpha: float = 0.0  # the diversity weight at the end (the group's own unless it is controlled)
    restarts: int = 0  # images restarted from the group's strongest (see ``restart_left_behind``)


@dataclass(frozen=True)
class FVSettings:
    image_size: int = 224
    padding: int = 16
    lr: float = 0.05
    diverse_images: int = 8
    start_alpha: float = 0.1  # times the unit's scale: where the controlled diversity weight starts
    alpha_rate: float = 0.25  # the control's largest change of log alpha per check (every 8 steps)
    margin: float = 0.05  # the slack held, as a fraction of the exemplars' range (max - min target)
    max_steps: int = 2048
    min_steps: int = 64
    window: int = 32
    tolerance: float = 2e-3  # stop when the loss improves less than this fraction per window


def gram_diversity(maps: torch.Tensor) -> torch.Tensor:
    """lucent's ``diversity`` of (N, C, H, W) maps: minus the mean over images of the summed cosine
    similarity of its Gram matrix with every other image's. lucent sums the N(N-1) pairs in a Python
    loop, which costs more than the network's forward pass for a batch of 8; this is one matrix product."""
    flat = maps.flatten(2)
    grams = F.normalize(torch.matmul(flat, flat.transpose(1, 2)).flatten(1), p=2, dim=1)
    similarity = grams @ grams.T
    return -(similarity.sum() - similarity.diagonal().sum()) / len(maps)


def _group_objective(g: Group, start: int, alpha: Callable[[], float]) -> objectives.Objective:
    """lucent's ``channel`` (or ``direction``) objective on the group's images, negated for min, minus
    alpha (read at every step: a controlled group's changes) times lucent's ``diversity`` of the group
    (which is minus its mean pairwise Gram similarity)."""
    stop = start + g.n_images
    sign = 1.0 if g.direction == "max" else -1.0
    unit = objectives.Objective(lambda T: -sign * readout_objective(T(g.layer), g.readout)[start:stop].mean())
    if (g.alpha > 0 or g.control is not None) and g.n_images > 1:
        return unit - objectives.Objective(lambda T: alpha() * gram_diversity(T(g.layer)[start:stop]))
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

    def image_params(self, param: torch.Tensor) -> list[dict]:
        """Each image's own record of what its parameters chose (a learned contrast, ...), from its rows."""
        ...


@dataclass(frozen=True)
class FourierImage:
    """lucent's parametrisation: a scaled Fourier spectrum, colours decorrelated, a sigmoid; ``init_sd``: the
    starting spectrum's standard deviation (None: lucent's 0.01, a near-grey image)."""

    padding_used: bool = True
    init_sd: float | None = None

    def create(self, n: int, size: int, device: torch.device):
        params, render = fft_rgb_images(n, size, device, self.init_sd)
        return params[0], render

    def shown(self, images: torch.Tensor, sensitivity: torch.Tensor | None) -> torch.Tensor:
        return images

    def image_params(self, param: torch.Tensor) -> list[dict]:
        return [{} for _ in range(len(param))]


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
    optimizer = torch.optim.Adam([param], lr=settings.lr)
    layers = sorted({g.layer for g in groups})
    model.module.requires_grad_(False)
    rules = [group_stop(g) for g in groups] if group_stop is not None else None
    stop_rule = stop_rule or LossPlateau(settings)
    sensitivity = torch.zeros(n, 3, size, size, device=device)
    results: list[GroupResult | None] = [None] * len(groups)
    alphas = [g.alpha for g in groups]
    controlled = [i for i, g in enumerate(groups) if g.control is not None]
    last_passing: list[GroupResult | None] = [None] * len(groups)
    slacks: dict[int, float] = {}  # each controlled group's last slack as shown
    restarts = [0] * len(groups)  # images restarted from their group's strongest
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
        def as_shown(i: int) -> GroupResult:
            g, s = groups[i], slices[i]
            images = _center_crop(render()[s], padding)
            shown = parametrisation.shown(images, _center_crop(sensitivity[s], padding))
            forward(shown)
            # The activation as a scan computes it, so that it compares with the exemplars' exactly.
            acts = readout_activations(T(g.layer), [g.readout])[:, 0]
            return GroupResult(
                group=g,
                pixels=(shown.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy(),
                activations=acts.float().cpu().numpy(),
                spectrum=param[s].detach().cpu().clone(),
                steps=steps,
                alpha=alphas[i],
                restarts=restarts[i],
            )

        def passes(r: GroupResult) -> bool:
            return beats_exemplars(r.group.direction, r.activations, r.group.control.target)

        def record(i: int) -> None:
            result = as_shown(i)  # at the step it stops, not at its last check
            if groups[i].control is not None and not passes(result) and last_passing[i] is not None:
                result = last_passing[i]
            results[i] = result

        def control(i: int) -> None:
            g, now_shown = groups[i], as_shown(i)
            slacks[i] = g.control.slack(g.direction, now_shown.activations)
            alphas[i] = g.control.next_alpha(alphas[i], slacks[i])
            if passes(now_shown):
                last_passing[i] = now_shown

        def restart_left_behind(i: int) -> None:
            """A group whose loss has flattened with its diversity gone (alpha at its floor), while some
            of its images beat the target and others do not, restarts those left behind from its
            strongest (parameters and Adam's moments): an image that diversity pushed where the
            gradient vanishes (a saturated image, say) does not come back when the weight falls, and
            the group would run to ``max_steps`` and fail."""
            g, rows = groups[i], torch.arange(slices[i].start, slices[i].stop)
            activations = as_shown(i).activations
            beat = np.array([beats_exemplars(g.direction, a[None], g.control.target) for a in activations])
            if not beat.any():
                return
            best = rows[int(np.argmax(activations) if g.direction == "max" else np.argmin(activations))]
            behind = rows[torch.from_numpy(~beat)]
            state = optimizer.state[param]
            with torch.no_grad():
                for tensor in (param, sensitivity, state["exp_avg"], state["exp_avg_sq"]):
                    tensor[behind] = tensor[best].clone()
            restarts[i] += len(behind)

        active: list[int] = []
        while steps < settings.max_steps and any(r is None for r in results):
            if active != (now := [i for i, r in enumerate(results) if r is None]):
                # Only the groups still running go through the network; a stopped group's images
                # would cost a forward pass each step and change nothing.
                active = now
                rows = torch.cat([torch.arange(slices[i].start, slices[i].stop) for i in active]).to(device)
                offsets = np.cumsum([0] + [groups[i].n_images for i in active])
                parts = [
                    _group_objective(groups[i], int(o), lambda i=i: alphas[i])
                    for i, o in zip(active, offsets, strict=False)
                ]
                whole = len(rows) == n
            optimizer.zero_grad()
            images = render()
            images.retain_grad()
            # transforms see the whole batch, so that their random draws do not depend on who runs
            moved = transforms(images, gen)
            forward(moved if whole else moved[rows])
            losses = [part(T) for part in parts]
            loss = torch.stack(losses).sum()
            loss.backward()
            sensitivity += images.grad.abs()
            optimizer.step()
            steps += 1
            image_steps += len(rows)
            for i in controlled:
                if results[i] is None and steps % groups[i].control.check_every == 0:
                    control(i)
            if rules is None:
                if stop_rule(steps, float(loss.detach()), param.grad):
                    break
                continue
            for i, part_loss in zip(active, losses, strict=True):
                flat = rules[i](steps, float(part_loss.detach()), param.grad[slices[i]])
                c = groups[i].control
                # a controlled group stops only where its control holds the weakest image at the target
                if flat and (c is None or (i in slacks and c.holds(slacks[i]))):
                    record(i)
                elif flat and c.steer and c.restart and alphas[i] <= c.floor:
                    restart_left_behind(i)
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
    # (2, 3, H, W) in [0, 1]: the natural images whose activations are the targets (max, min), where known
    target_images: torch.Tensor | None = field(default=None, compare=False)


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
    parametrisation: Parametrisation = FourierImage(),
    **optimise: Any,
) -> tuple[list[list[Visualisation]], int]:
    """9 max and 9 min images per request; returns them (max first) and the image-steps spent.

    Per unit and direction, one batch holds the non-diverse image and the diverse group, whose
    diversity weight is steered during the run (:class:`AlphaControl`) to the largest at which its
    weakest image still beats the most extreme exemplar; each group stops when its own loss flattens.
    ``parametrisation`` and ``optimise`` go to :func:`optimise_groups` (its transforms, ...); each
    image's ``params`` are what the parametrisation records of it.
    """
    k = settings.diverse_images
    directions = ("max", "min")

    def target(r: FVRequest, d: str) -> float:
        return r.max_target if d == "max" else r.min_target

    groups = []
    for r in requests:
        margin = settings.margin * max(r.max_target - r.min_target, 1e-6)
        for d in directions:
            control = AlphaControl(target(r, d), margin, rate=settings.alpha_rate)
            # the non-diverse image: no diversity to steer, but it too runs until it beats the exemplars
            groups.append(Group(r.layer, r.readout, d, 1, 0.0, control=replace(control, steer=False)))
            groups.append(Group(r.layer, r.readout, d, k, settings.start_alpha * _scale(r), control=control))
    results, image_steps = optimise_groups(
        model,
        groups,
        settings,
        seed,
        group_stop=lambda _g: LossPlateau(settings),
        parametrisation=parametrisation,
        **optimise,
    )
    output = []
    for i, r in enumerate(requests):
        images: list[Visualisation] = []
        for j, d in enumerate(directions):
            non_diverse, diverse = results[4 * i + 2 * j], results[4 * i + 2 * j + 1]
            ok = beats_exemplars(d, diverse.activations, target(r, d))
            for pixels, act, params in zip(
                diverse.pixels, diverse.activations, parametrisation.image_params(diverse.spectrum), strict=True
            ):
                images.append(Visualisation(pixels, d, float(act), diverse.steps, seed, diverse.alpha, ok, params))
            nd_ok = beats_exemplars(d, non_diverse.activations, target(r, d))
            (nd_params,) = parametrisation.image_params(non_diverse.spectrum)
            images.append(
                Visualisation(
                    non_diverse.pixels[0],
                    d,
                    float(non_diverse.activations[0]),
                    non_diverse.steps,
                    seed,
                    0.0,
                    nd_ok,
                    nd_params,
                )
            )
        output.append(images)
    return output, image_steps
