"""Feature-visualisation methods: values chosen by name in the study config, each with its own settings.

A method is a validated config (its ``method`` field names it) with one operation:
``visualise(model, requests, seed, natural_images)`` takes units (any unit selector, with their
most extreme exemplar activations as targets) and returns, per unit, its max images then its min
images as :class:`stimuli.fv.Visualisation` records (activation, steps, seed, diversity weight,
whether it beats the exemplars, and the method's own per-image ``params``), with the image-steps
spent. The build stores the method's name with every image and its settings in the bundle, and a
work item's records carry them, so a changed method or setting is a new plan, never a silent mix.

- ``calibrated`` (the default): one early-stopped run per unit and direction whose diversity weight
  is steered to the largest that still beats the exemplars (:mod:`stimuli.fv`);
- ``imi2023``: the 2023 study's procedure, for replication (:mod:`stimuli.fv_imi2023`);
- ``maco``: magnitude-constrained Fourier-phase optimisation with its transparency map, calibrated
  like ``calibrated`` (:mod:`stimuli.fv_maco`).

The table :data:`FV_METHODS` is open: a new method is a config class with a ``method`` literal and
a ``visualise``, added to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from contracts.config import Strict

if TYPE_CHECKING:
    import torch

    from stimuli.fv import FVRequest, Visualisation
    from stimuli.registry import LoadedModel

NaturalImages = Callable[[int], "torch.Tensor"]  # n -> (n, 3, H, W) study images in [0, 1]
Output = tuple[list[list["Visualisation"]], int]


class _Method(Strict):
    images_per_direction: int = Field(9, ge=2, description="all but one are diverse; one is not")
    units_per_batch: int = Field(1, gt=0, description="units optimised together in one batch")

    def visualise(
        self, model: LoadedModel, requests: Sequence[FVRequest], seed: int, natural_images: NaturalImages | None
    ) -> Output:
        raise NotImplementedError

    def record(self) -> dict[str, Any]:
        """The method's name and settings, as the bundle stores them."""
        return self.model_dump(mode="json")

    def made(self, record: Any) -> bool:
        """Whether ``record`` (a stored :meth:`record`) names this method with these settings; settings added
        since it was stored read as their defaults."""
        if not isinstance(record, dict) or record.get("method") != self.method:
            return False
        try:
            return type(self).model_validate(record).record() == self.record()
        except ValueError:
            return False

    def retry(self, attempt: int) -> _Method:
        """The settings of retry ``attempt`` (1, 2, ...) of a unit whose visualisations were refused
        (:mod:`stimuli.acceptance`); the build also gives each attempt its own seed. By default, the same."""
        return self


class _Batched(_Method):
    """Settings of the batched, early-stopped calibration that ``calibrated`` and ``maco`` share."""

    image_size: int = Field(224, ge=32)
    lr: float = Field(0.05, gt=0)
    max_steps: int = Field(2048, gt=0)
    min_steps: int = Field(64, gt=0)
    window: int = Field(32, gt=0, description="early stop: steps over which the loss gain is measured")
    tolerance: float = Field(2e-3, gt=0, description="early stop: relative loss gain per window")
    start_alpha: float = Field(
        0.1, gt=0, description="where the steered diversity weight starts, times the unit's scale"
    )
    alpha_rate: float = Field(0.25, gt=0, le=2, description="the steering's largest change of log alpha per check")
    margin: float = Field(
        0.05, gt=0, description="the slack the weakest image is held at, as a fraction of the exemplars' range"
    )

    def settings(self, padding: int):
        from stimuli.fv import FVSettings

        return FVSettings(
            image_size=self.image_size,
            padding=padding,
            lr=self.lr,
            diverse_images=self.images_per_direction - 1,
            start_alpha=self.start_alpha,
            alpha_rate=self.alpha_rate,
            margin=self.margin,
            max_steps=self.max_steps,
            min_steps=min(self.min_steps, self.max_steps),
            window=self.window,
            tolerance=self.tolerance,
        )


class CalibratedFV(_Batched):
    method: Literal["calibrated"] = "calibrated"
    padding: int = Field(16, ge=0)
    init_sd: float = Field(
        0.01,
        gt=0,
        le=1,
        description="standard deviation of the starting spectrum (lucent's 0.01: near grey); a retry raises it",
    )

    def visualise(self, model, requests, seed, natural_images=None) -> Output:
        from stimuli.fv import FourierImage, visualise_units

        parametrisation = FourierImage(init_sd=self.init_sd)
        return visualise_units(model, requests, self.settings(self.padding), seed=seed, parametrisation=parametrisation)

    def retry(self, attempt: int) -> CalibratedFV:
        # A unit whose gradient vanishes at near-grey images (dead ReLUs below it) never leaves them: start
        # from a ten times stronger texture each time, and allow twice the steps.
        return self.model_copy(
            update={"init_sd": min(1.0, self.init_sd * 10**attempt), "max_steps": self.max_steps * 2**attempt}
        )


class Imi2023FV(_Method):
    method: Literal["imi2023"] = "imi2023"
    image_size: int = Field(224, ge=32)
    padding: int = Field(16, ge=0)
    lr: float = Field(0.05, gt=0)
    min_steps: int = Field(2500, gt=0, description="the stop rule's minimum steps per run")
    window: int = Field(2000, ge=2, description="the stop rule's window of smoothed gradient norms")
    target_ratio: float = Field(
        1.1, gt=1, description="stop when the window's first half over its second is at most this"
    )
    smoothing: float = Field(0.99, ge=0, lt=1)
    max_steps: int = Field(20_000, gt=0)
    exponential_start: float = Field(1.0, gt=0)
    exponential_limit: float = Field(999_999, gt=0)
    binary_loops: int = Field(7, ge=0)

    def settings(self):
        from stimuli.fv_imi2023 import Imi2023Settings

        fields = self.model_dump(exclude={"method", "units_per_batch", "images_per_direction"})
        return Imi2023Settings(images=self.images_per_direction, **fields)

    def visualise(self, model, requests, seed, natural_images=None) -> Output:
        from stimuli.fv_imi2023 import visualise_units_imi2023

        return visualise_units_imi2023(model, requests, self.settings(), seed=seed)


class MacoFV(_Batched):
    method: Literal["maco"] = "maco"
    lr: float = Field(0.2, gt=0)
    magnitude: str = Field(
        "dataset",
        description="the fixed amplitude spectrum: 'dataset' (the study's images), 'power_law' (1/f), "
        "or a path to a (3, H, W // 2 + 1) .npy file",
    )
    contrast: Annotated[float, Field(gt=0)] | Literal["range", "mean"] = Field(
        "range",
        description="the images' spatial standard deviation before the colour step: 'range' (each image's "
        "optimised with its phase, between the study's least and most contrasted images'), 'mean' (the "
        "study's images' mean) or a number (1 is Horama's)",
    )
    transparency: bool = Field(True, description="composite each image over the background by its transparency map")
    background: Annotated[float, Field(ge=0, le=1)] | Literal["mean"] = Field(
        "mean",
        description="what shows where the transparency is low: 'mean' (the image's own mean colour) or a grey "
        "level (1 is Horama's white)",
    )
    crop: tuple[float, float] = Field((0.85, 1.0), description="random crops' side, as a fraction of the image's")
    noise: float = Field(0.02, ge=0, description="pixel noise added after each crop")

    @model_validator(mode="after")
    def _crop_range(self) -> MacoFV:
        if not 0 < self.crop[0] <= self.crop[1] <= 1:
            raise ValueError(f"crop must satisfy 0 < low <= high <= 1, not {list(self.crop)}")
        return self

    def visualise(self, model, requests, seed, natural_images=None) -> Output:
        import torch

        from stimuli.fv import visualise_units
        from stimuli.fv_maco import STUDY_SAMPLE, StudyImages, maco_image, maco_magnitude, maco_transforms

        # One sample for the magnitude and the contrast (each call of the build's draws new images),
        # with the images that set the units' targets.
        study_images = None
        if natural_images is not None and (self.magnitude == "dataset" or isinstance(self.contrast, str)):
            extremes = [r.target_images for r in requests if r.target_images is not None]
            study_images = StudyImages(natural_images(STUDY_SAMPLE), torch.cat(extremes) if extremes else None)
        parametrisation = maco_image(
            maco_magnitude(self.magnitude, self.image_size, study_images),
            self.contrast,
            self.image_size,
            study_images,
            transparency=self.transparency,
            background=self.background,
        )
        # each image records the contrast it was given or chose
        return visualise_units(
            model,
            requests,
            self.settings(padding=0),
            seed=seed,
            parametrisation=parametrisation,
            transforms=maco_transforms(self.crop, self.noise),
        )

    def retry(self, attempt: int) -> MacoFV:
        return self.model_copy(update={"max_steps": self.max_steps * 2**attempt})


FV_METHODS: dict[str, type[_Method]] = {m.model_fields["method"].default: m for m in (CalibratedFV, Imi2023FV, MacoFV)}
DEFAULT_FV_METHOD = "calibrated"

# The config's type, from the table: one entry per method, told apart by its ``method`` field.
FeatureVisualisation = Annotated[Union[tuple(FV_METHODS.values())], Field(discriminator="method")]  # noqa: UP007


def with_default_method(value: Any) -> Any:
    """A ``feature_visualization`` mapping without ``method`` is the default method's."""
    if isinstance(value, dict) and "method" not in value:
        return {**value, "method": DEFAULT_FV_METHOD}
    return value
