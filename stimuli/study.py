"""The study config read by ``psychinterp build`` (a YAML file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from contracts.bundle import Condition, DictionaryMethod
from contracts.config import Strict
from contracts.errors import load_yaml
from contracts.paradigms import TWO_AFC, Paradigm, odd_one_out
from contracts.units import CHANNEL_KIND, DICTIONARY_NAME
from stimuli.acceptance import AcceptanceConfig
from stimuli.fv_methods import CalibratedFV, FeatureVisualisation, with_default_method
from stimuli.tasks import MaxSide

# Where a batch's query images come from, per end of the unit's ranking: a fraction gives the
# percentile where the query ranks start; None means a rule of stimuli.exemplars.query_start_rank.
QUERY_PRESETS: dict[str, float | None] = {
    "easy": None,  # the ranks just past the references: 181-200 with the defaults
    "extreme": None,  # Borowski et al. 2021: the most extreme bin supplies the queries
    "hard99": 0.01,  # ranks starting at the 1st / 99th percentile
    "hard95": 0.05,
    "hard85": 0.15,
}
QueryPreset = Literal[tuple(QUERY_PRESETS)]


class DatasetConfig(Strict):
    path: Path = Field(
        description="a folder tree of images (ImageNet train or val layout, ImageFolder, any tree), "
        "or a .txt file listing image paths"
    )
    batch_size: int = Field(32, gt=0)
    described_as: str = Field(
        "photographs", description="what these images are, in a participant's words: the instructions say it"
    )
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader workers that decode images (default: one per spare CPU core, up to 8)"
    )

    def workers(self) -> int:
        from stimuli.exemplars import default_num_workers

        return default_num_workers() if self.num_workers is None else self.num_workers


class ExemplarConfig(Strict):
    batches: int = Field(20, gt=0, description="batches of references per unit (K = batches x references)")
    references: int = Field(9, gt=0, description="reference images per side in one batch")
    queries: QueryPreset | int = Field(
        "easy", description="a preset, or the 1-based rank (from each end) of the first query"
    )


class UnitSamplingConfig(Strict):
    weight_by_layer_size: bool = Field(False, description="pick layers in proportion to their channel counts")
    shared_units: list[list[str]] = Field(
        [], description="groups of models with one architecture that use the same units (first model samples)"
    )


class SAEConfig(Strict):
    """The sparse autoencoder ``psychinterp`` trains on the sampled positions (method ``sae``)."""

    l1: float = Field(0.05, gt=0, description="sparsity penalty on the latents, times their decoder norms")
    steps: int = Field(1500, gt=0, description="Adam steps")
    batch_size: int = Field(512, gt=0, description="positions per step")
    lr: float = Field(1e-3, gt=0)


class DictionaryConfig(Strict):
    """Directions (or encoder latents) in a layer's channel space that a study measures as units."""

    name: str = Field(
        pattern=DICTIONARY_NAME, description="the unit kind's name in ids, exports and the analysis, e.g. sae"
    )
    method: DictionaryMethod = Field(
        description="file: the user's vectors; kmeans, nmf, pca: scikit-learn on sampled positions; "
        "sae: a sparse autoencoder trained on them"
    )
    units_per_model: int = Field(gt=0, description="units drawn from this dictionary per model")
    size: int | None = Field(None, gt=0, description="rows per layer for a computed dictionary (sae: its latents)")
    models: list[str] | None = Field(None, description="default: every model (method file: those in files)")
    layers: list[str] | None = Field(None, description="default: every eligible layer (method file: those in files)")
    files: dict[str, dict[str, Path]] = Field(
        {},
        description="method file: per model and layer, a .npy, .npz, .pt or .safetensors file; "
        "a size x channels matrix of directions, or encoder weights and bias (docs/units.md)",
    )
    sae: SAEConfig = SAEConfig()

    @model_validator(mode="after")
    def _method_fields(self) -> DictionaryConfig:
        if self.name == CHANNEL_KIND:
            raise ValueError(f"name: {CHANNEL_KIND!r} is the kind of channel units; choose another name")
        if self.method == "file":
            if not self.files:
                raise ValueError(f"dictionary {self.name!r}: method file needs files (per model, per layer)")
            if self.size is not None or self.models is not None or self.layers is not None:
                raise ValueError(f"dictionary {self.name!r}: with method file, files give the models, layers and size")
        else:
            if self.size is None:
                raise ValueError(f"dictionary {self.name!r}: method {self.method} needs a size (rows per layer)")
            if self.files:
                raise ValueError(f"dictionary {self.name!r}: files are for method file only")
        return self

    def model_ids(self, study_models: list[str]) -> list[str]:
        if self.method == "file":
            return [m for m in study_models if m in self.files]
        return list(self.models) if self.models is not None else list(study_models)


class DictionarySampleConfig(Strict):
    """The positions that computed dictionaries are fitted on: a bounded, seeded random sample."""

    images: int = Field(1000, gt=0, description="images drawn from the dataset")
    positions_per_image: int = Field(16, gt=0, description="positions (or tokens) drawn from each image")


class TaskConfig(Strict):
    trials_per_task: int = Field(40, gt=0, description="main trials per task")
    catch_trials_per_task: int = Field(5, ge=0)
    repetitions: int = Field(1, gt=0, description="how many tasks show each unit, per condition")
    practice_trials: int = Field(5, ge=0, description="practice trials per condition")
    max_side: MaxSide = Field(
        "counterbalanced", description="'right' reproduces the 2023 study's max-always-right layout"
    )


class OddOneOutConfig(Strict):
    """The odd-one-out paradigm: n images, n - 1 from the unit's most activating, one odd."""

    images: int = Field(5, ge=3, le=9, description="images per trial; chance is 1 / images")
    odd_image: Literal["least", "random"] = Field(
        "least",
        description="least: one of the unit's least activating images (an exemplar, or a min visualisation in "
        "the synthetic condition); random: a random dataset image (natural condition only)",
    )


class MachineScoringConfig(Strict):
    """A machine observer scores every unit at build time, and more units than people will see: a
    prediction-powered analysis (analysis.ppi) averages over them all and corrects with the rated ones."""

    observer: str = Field(
        "pixel",
        description="pixel, model:ID[:LAYER], lpips:ID[:LAYER,...] or python:MODULE:FUNCTION (psychinterp simulate)",
    )
    machine_only_units_per_model: int = Field(
        0, ge=0, description="channel units per model that only the machine scores (sampled, scanned, never shown)"
    )
    conditions: list[Condition] | None = Field(
        None,
        description="the conditions the machine-only units are built and scored in (default: the study's with "
        "images); without synthetic they need no feature visualisations, only the scan",
    )
    temperature: float = Field(10.0, gt=0, description="the observer's, unless a calibration gives it")
    lapse: float = Field(0.05, ge=0, lt=1)
    calibration: Path | None = Field(None, description="a calibration file (psychinterp observers calibrate)")
    layer_weights: Path | None = Field(None, description="lpips observers: per-channel layer weights")


class StudyConfig(Strict):
    study_id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    title: str = ""
    consent_text: str | None = Field(None, description="the consent form participants see (plain text)")
    models_file: Path | None = Field(None, description="defaults to the project's models.yaml")
    models: list[str] = Field(min_length=1)
    units_per_model: int = Field(ge=0, description="channel units per model")
    unit_sampling: UnitSamplingConfig = UnitSamplingConfig()
    dictionaries: list[DictionaryConfig] = Field(
        [], description="direction or latent units besides the channels (docs/units.md)"
    )
    dictionary_sample: DictionarySampleConfig = DictionarySampleConfig()
    dataset: DatasetConfig
    exemplars: ExemplarConfig = ExemplarConfig()
    feature_visualization: FeatureVisualisation = Field(
        CalibratedFV(), description="the method (calibrated, imi2023, maco) and its settings (docs/building.md)"
    )
    acceptance: AcceptanceConfig = Field(
        AcceptanceConfig(), description="which units may reach a participant, and what replaces those that may not"
    )
    paradigm: Literal["2afc", "odd_one_out"] = Field("2afc", description="what a trial asks (docs/paradigms.md)")
    odd_one_out: OddOneOutConfig = OddOneOutConfig()
    conditions: list[Condition] = Field(["natural", "synthetic"], min_length=1)
    tasks: TaskConfig = TaskConfig()
    machine_scoring: MachineScoringConfig | None = Field(
        None, description="score every unit with a machine observer at build time (bundle/machine_scores.csv)"
    )
    seed: int = 0

    @property
    def trial_paradigm(self) -> Paradigm:
        """The paradigm value the bundle names (odd-one-out with its number of images)."""
        return odd_one_out(self.odd_one_out.images) if self.paradigm == "odd_one_out" else TWO_AFC

    @field_validator("feature_visualization", mode="before")
    @classmethod
    def _default_method(cls, value):
        return with_default_method(value)

    @model_validator(mode="after")
    def _consistent(self) -> StudyConfig:
        """Every setting that cannot go with another, listed at once (before any model is loaded)."""
        problems: list[str] = []
        for field in ("models", "conditions"):
            values = getattr(self, field)
            if len(set(values)) != len(values):
                problems.append(f"{field} lists a value twice")
        grouped = [m for group in self.unit_sampling.shared_units for m in group]
        if len(set(grouped)) != len(grouped):
            problems.append("unit_sampling.shared_units: a model appears in two groups")
        if unknown := sorted(set(grouped) - set(self.models)):
            problems.append(f"unit_sampling.shared_units: {unknown} not in models")
        names = [d.name for d in self.dictionaries]
        if len(set(names)) != len(names):
            problems.append("dictionaries: a name appears twice")
        for dictionary in self.dictionaries:
            if unknown := sorted(set(dictionary.model_ids(self.models)) - set(self.models)):
                problems.append(f"dictionaries: {dictionary.name!r} names models {unknown} that are not in models")
            if dictionary.method == "file" and (unknown := sorted(set(dictionary.files) - set(self.models))):
                problems.append(f"dictionaries: {dictionary.name!r} has files for models {unknown} not in models")
        for model_id in self.models:
            n_units = self.units_per_model + sum(
                d.units_per_model for d in self.dictionaries if model_id in d.model_ids(self.models)
            )
            if n_units == 0:
                problems.append(f"units_per_model: model {model_id!r} would have no units (and no dictionary units)")
            if self.tasks.catch_trials_per_task and n_units < 2:
                problems.append("catch trials need at least 2 units per model")
            if 0 < n_units < self.tasks.trials_per_task:
                problems.append(
                    f"tasks.trials_per_task ({self.tasks.trials_per_task}) exceeds the {n_units} units of model "
                    f"{model_id!r} (units_per_model plus its dictionaries' units), so a unit would appear twice in "
                    "one task: use fewer trials per task or more units"
                )
        if self.tasks.practice_trials and self.tasks.repetitions >= self.exemplars.batches:
            # Practice shows each practice unit's last batch; a unit's k-th main appearance shows batch
            # k mod batches, so with this many repetitions a main trial would repeat a practice trial.
            problems.append(
                f"tasks.repetitions ({self.tasks.repetitions}) must be below exemplars.batches "
                f"({self.exemplars.batches}) when there are practice trials: the last batch is kept for practice, "
                "and a main trial would otherwise show a practice trial's images again"
            )
        if self.paradigm == "odd_one_out":
            self._check_odd_one_out(problems)
        scoring = self.machine_scoring
        if scoring is not None and scoring.conditions is not None:
            if unknown := sorted(set(scoring.conditions) - set(self.conditions)):
                problems.append(f"machine_scoring.conditions: {unknown} not among the study's conditions")
            if "none" in scoring.conditions:
                problems.append("machine_scoring.conditions: condition 'none' has no images for a machine to score")
        if problems := list(dict.fromkeys(problems)):
            raise ValueError("\n  - ".join([f"{len(problems)} setting(s) that do not go together:", *problems]))
        return self

    @property
    def machine_conditions(self) -> list[str]:
        """The conditions the machine-only units are built and scored in."""
        chosen = self.machine_scoring.conditions if self.machine_scoring else None
        return [c for c in (chosen or self.conditions) if c != "none"]

    def _check_odd_one_out(self, problems: list[str]) -> None:
        n_max = self.odd_one_out.images - 1
        if "none" in self.conditions:
            problems.append("paradigm odd_one_out: condition 'none' has no images to compare; use natural or synthetic")
        if n_max > self.exemplars.references:
            problems.append(
                f"odd_one_out.images ({self.odd_one_out.images}) needs {n_max} of a batch's "
                f"{self.exemplars.references} max references"
            )
        if self.odd_one_out.odd_image == "random" and "synthetic" in self.conditions:
            problems.append(
                "odd_one_out.odd_image: random puts a photograph among visualisations, which tells it apart "
                "by its look alone; use least in the synthetic condition"
            )
        per_direction = self.feature_visualization.images_per_direction
        if "synthetic" in self.conditions and self.exemplars.batches * n_max > per_direction:
            # Each batch shows its own visualisations, so that no image repeats across a unit's trials.
            problems.append(
                f"paradigm odd_one_out with synthetic trials: {self.exemplars.batches} batches x {n_max} max "
                f"visualisations need feature_visualization.images_per_direction >= {self.exemplars.batches * n_max} "
                f"(it is {per_direction}), or fewer exemplars.batches"
            )


def load_study_config(path: str | Path) -> StudyConfig:
    """Read a study config; relative paths resolve against the config's folder."""
    path = Path(path)
    config = load_yaml(path, StudyConfig, "study config")
    base = path.parent
    dataset = config.dataset.model_copy(update={"path": base / config.dataset.path})
    models_file = base / config.models_file if config.models_file else None
    dictionaries = [
        d.model_copy(
            update={"files": {m: {layer: base / f for layer, f in files.items()} for m, files in d.files.items()}}
        )
        for d in config.dictionaries
    ]
    scoring = config.machine_scoring
    if scoring is not None:
        scoring = scoring.model_copy(
            update={
                name: base / getattr(scoring, name)
                for name in ("calibration", "layer_weights")
                if getattr(scoring, name) is not None
            }
        )
    return config.model_copy(
        update={
            "dataset": dataset,
            "models_file": models_file,
            "dictionaries": dictionaries,
            "machine_scoring": scoring,
        }
    )
