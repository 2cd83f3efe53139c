"""The study bundle: the contract between the stimulus generator and the server.

See docs/bundle.md. A bundle is a directory::

    manifest.json     what the server may show (no answers)
    answer_key.json   which query is correct, per trial; never sent to browsers
    images/<sha256>.png
    dictionaries/<model>__<layer>__<name>.safetensors   vectors of direction and latent units, if any

Schema version 2 names the bundle's paradigm and gives each unit a selector (version 1 had a
loose ``channel``); version-1 bundles are upgraded when they are read (:func:`upgrade`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contracts.config import Strict
from contracts.errors import PsychinterpError, format_validation_error
from contracts.files import atomic_text_file
from contracts.paradigms import Paradigm, paradigm_named
from contracts.units import CHANNEL_KIND, DICTIONARY_NAME, UnitSelector

SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
ANSWER_KEY = "answer_key.json"
IMAGES = "images"
DICTIONARIES = "dictionaries"
_HASH = r"^[0-9a-f]{64}$"

Condition = Literal["natural", "synthetic", "none"]
Side = Literal["left", "right"]


class BundleError(PsychinterpError):
    pass


class StudyMismatchError(PsychinterpError):
    """Data of one study (or of one build of it) given with the bundle of another."""


class BundleModel(Strict):
    id: str
    display_name: str
    source: str
    parameter_count: int | None = Field(None, gt=0, description="null when unknown (imported bundles)")
    train_images: int | None = Field(None, gt=0, description="null when unknown (imported bundles)")
    imagenet_top1: float | None = None


class Unit(Strict):
    unit_id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    model_id: str
    layer: str | None = Field(None, description="null when unknown (imported bundles)")
    selector: UnitSelector | None = Field(None, description="which unit of the layer; null when unknown")
    layer_index: int | None = Field(None, ge=0)
    n_layers: int | None = Field(None, gt=0)

    @property
    def unit_kind(self) -> str:
        """``channel``, or the name of the unit's dictionary."""
        return self.selector.unit_kind if self.selector is not None else CHANNEL_KIND


DictionaryMethod = Literal["file", "kmeans", "nmf", "pca", "sae"]


class Dictionary(Strict):
    """A set of directions (or encoder latents) in one layer's channel space, and where it came from.

    Its vectors are ``file`` in the bundle, a safetensors file with ``weights`` (size x channels,
    float32) and, for latents, ``bias`` (size); a unit's activation is defined by its selector
    (contracts.units).
    """

    name: str = Field(pattern=DICTIONARY_NAME)
    model_id: str
    layer: str
    method: DictionaryMethod
    form: Literal["direction", "latent"] = Field(description="linear directions, or encoder latents with a ReLU")
    size: int = Field(gt=0, description="rows of the dictionary")
    channels: int = Field(gt=0)
    file: str = Field(description="bundle-relative path of the .safetensors file")
    sha256: str = Field(pattern=_HASH, description="of the file's bytes")
    source: str = Field(description="the user's file, or what was computed from which sample")
    live: list[int] = Field(description="rows whose activation varies on the sample; units are drawn from these")
    fit: dict[str, float] = Field({}, description="e.g. reconstruction_error (fraction of variance), mean_l0")


class ReferenceImage(Strict):
    """Metadata of a reference image for one unit (queries' metadata lives in the answer key)."""

    sha256: str = Field(pattern=_HASH)
    unit_id: str
    kind: Literal["natural", "synthetic"]
    direction: Literal["min", "max"]
    activation: float
    rank: int | None = Field(None, ge=1, description="rank from the extreme end, natural images only")
    batch: int | None = Field(None, ge=0, description="natural images only")
    source: str | None = Field(None, description="dataset-relative path, natural images only")
    steps: int | None = Field(None, ge=0, description="optimisation steps, synthetic images only")
    seed: int | None = Field(None, description="synthetic images only")
    diversity: float | None = Field(None, ge=0, description="diversity weight, synthetic images only")
    beats_exemplars: bool | None = Field(None, description="synthetic: beats the most extreme exemplar")
    fv_method: str | None = Field(None, description="synthetic: the feature-visualisation method that made it")
    fv_params: dict[str, Any] | None = Field(None, description="synthetic: the method's own record of this image")
    path_similarity: float | None = Field(
        None, description="synthetic: how like its exemplars the image drives the layers below the unit (cosine)"
    )
    path_outlier: bool | None = Field(
        None, description="synthetic: flagged by the sanity check (a path the exemplars do not use); null: not checked"
    )
    pixel_sd: float | None = Field(
        None, ge=0, description="synthetic: the pixels' standard deviation (0-255); a flat image has almost none"
    )
    fv_retry: dict[str, Any] | None = Field(
        None,
        description="synthetic: null for the first try; for a retry of a refused unit, its number (attempt) and the "
        "method settings it changed",
    )


class ReplacedUnit(Strict):
    """A unit the build refused (its stimuli could not teach anything) and what took its place."""

    unit_id: str
    model_id: str
    layer: str
    selector: UnitSelector
    problems: list[str] = Field(min_length=1, description="why it was refused, in words")
    replaced_by: str | None = Field(description="the unit that took its place; null when no reserve was left")


class References(Strict):
    min: list[str] = []
    max: list[str] = []


class Trial(Strict):
    trial_id: str
    unit_id: str
    condition: Condition
    kind: Literal["main", "catch", "practice"] = "main"
    batch: int = Field(0, ge=0, description="which batch of the unit's natural exemplars")
    max_side: Side | None = Field(description="where the max references are shown; null in a paradigm without them")
    references: References
    queries: list[str] = Field(min_length=1, description="in display order; as many as the paradigm shows")

    @model_validator(mode="after")
    def _reference_counts(self) -> Trial:
        if len(self.references.min) != len(self.references.max):
            raise ValueError(f"trial {self.trial_id}: min and max reference counts differ")
        return self

    def problem_for(self, paradigm: Paradigm) -> str | None:
        """What is wrong with this trial in ``paradigm``, or None."""
        has_refs = bool(self.references.min or self.references.max)
        wants_refs = paradigm.shows_references and self.condition != "none"
        if has_refs != wants_refs:
            return f"trial {self.trial_id}: {paradigm.name}, condition {self.condition!r} with references={has_refs}"
        if len(self.queries) != paradigm.n_queries:
            return f"trial {self.trial_id}: {len(self.queries)} queries; {paradigm.name} shows {paradigm.n_queries}"
        if (self.max_side is None) == paradigm.shows_references:
            return f"trial {self.trial_id}: max_side must be given exactly when {paradigm.name} shows references"
        if self.kind == "catch":
            if paradigm.shows_references and not set(self.queries) <= {*self.references.min, *self.references.max}:
                return f"catch trial {self.trial_id}: its queries must appear among its references"
            if not paradigm.shows_references and len(set(self.queries)) != 2:
                return f"catch trial {self.trial_id}: all images but the odd one must be one image shown again"
        return None


class Task(Strict):
    task_id: str
    condition: Condition
    model_id: str
    trials: list[Trial] = Field(min_length=1)


class Manifest(Strict):
    schema_version: Literal[2]
    study_id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    paradigm: str = Field("2afc", description="contracts.paradigms: what a trial asks (2afc, odd_one_out_<n>)")
    title: str = ""
    consent_text: str | None = None  # shown before the study; the server config may override it
    natural_images: str = Field(
        "photographs", description="what the dataset's images are, in the participant's words (the instructions)"
    )
    models: list[BundleModel] = Field(min_length=1)
    units: list[Unit] = Field(min_length=1)
    conditions: list[Condition] = Field(min_length=1)
    reference_images: list[ReferenceImage] = []
    tasks: list[Task] = Field(min_length=1)
    practice_trials: list[Trial] = []
    dictionaries: list[Dictionary] = []
    feature_visualization: dict[str, Any] | None = Field(
        None, description="the method (name and settings) that made the synthetic references"
    )
    replaced_units: list[ReplacedUnit] = Field(
        [], description="units the build refused and replaced (stimuli/acceptance.py); none of them is shown"
    )
    machine_only_units: list[Unit] = Field(
        [],
        description="units a machine observer scores and no person sees (the study config's machine_scoring): "
        "they widen the population a prediction-powered estimate averages over",
    )
    machine_trials: list[Trial] = Field(
        [], description="the machine-only units' trials, scored offline; never dealt into a task"
    )

    def dictionary(self, model_id: str, layer: str, name: str) -> Dictionary | None:
        return next(
            (d for d in self.dictionaries if (d.model_id, d.layer, d.name) == (model_id, layer, name)),
            None,
        )

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        paradigm = paradigm_named(self.paradigm)
        model_ids = {m.id for m in self.models}
        unit_ids = {u.unit_id for u in self.units}
        for unit in self.units:
            if unit.model_id not in model_ids:
                raise ValueError(f"unit {unit.unit_id}: unknown model_id {unit.model_id!r}")
            if unit.selector is not None and unit.selector.kind != "channel":
                found = self.dictionary(unit.model_id, unit.layer or "", unit.selector.dictionary)
                if found is None:
                    raise ValueError(f"unit {unit.unit_id}: no dictionary {unit.selector.dictionary!r} for its layer")
                if found.form != unit.selector.kind or unit.selector.index >= found.size:
                    raise ValueError(
                        f"unit {unit.unit_id}: dictionary {found.name!r} holds {found.size} {found.form}s, "
                        f"not {unit.selector.kind} {unit.selector.index}"
                    )
        seen: set[str] = set()
        for task in self.tasks:
            for trial in task.trials:
                if trial.condition != task.condition:
                    raise ValueError(f"trial {trial.trial_id}: condition differs from its task's")
                if trial.kind == "practice":
                    raise ValueError(f"trial {trial.trial_id}: practice trials belong in practice_trials")
        for trial in self.all_trials():
            if problem := trial.problem_for(paradigm):
                raise ValueError(problem)
            if trial.trial_id in seen:
                raise ValueError(f"trial_id {trial.trial_id!r} appears twice")
            seen.add(trial.trial_id)
            if trial.unit_id not in unit_ids:
                raise ValueError(f"trial {trial.trial_id}: unknown unit_id {trial.unit_id!r}")
            if trial.condition not in self.conditions:
                raise ValueError(f"trial {trial.trial_id}: condition {trial.condition!r} not in conditions")
        scored_only = {u.unit_id for u in self.machine_only_units}
        for image in self.reference_images:
            if image.unit_id not in unit_ids | scored_only:
                raise ValueError(f"reference image {image.sha256}: unknown unit_id {image.unit_id!r}")
        for unit in self.machine_only_units:
            if unit.unit_id in unit_ids:
                raise ValueError(f"machine-only unit {unit.unit_id}: it is also among the units shown")
            if unit.model_id not in model_ids:
                raise ValueError(f"machine-only unit {unit.unit_id}: unknown model_id {unit.model_id!r}")
        for trial in self.machine_trials:
            if trial.unit_id not in scored_only:
                raise ValueError(f"machine trial {trial.trial_id}: unit {trial.unit_id!r} is not machine-only")
            if trial.trial_id in seen:
                raise ValueError(f"trial_id {trial.trial_id!r} appears twice")
            seen.add(trial.trial_id)
            if problem := trial.problem_for(paradigm):
                raise ValueError(problem)
        refused = {r.unit_id for r in self.replaced_units}
        for replaced in self.replaced_units:
            if replaced.unit_id in unit_ids:
                raise ValueError(f"replaced unit {replaced.unit_id}: it is also among the units shown")
            if replaced.replaced_by is not None and replaced.replaced_by not in unit_ids | refused | scored_only:
                raise ValueError(f"replaced unit {replaced.unit_id}: replaced_by {replaced.replaced_by!r} is unknown")
        return self

    def all_trials(self) -> list[Trial]:
        """Every trial people may see: the tasks' and the practice trials (not the machine trials)."""
        return [t for task in self.tasks for t in task.trials] + list(self.practice_trials)

    def all_units(self) -> list[Unit]:
        """The units shown to people, then those only a machine scores."""
        return [*self.units, *self.machine_only_units]

    def trials(self) -> dict[str, Trial]:
        return {t.trial_id: t for t in self.all_trials()}

    def image_hashes(self) -> set[str]:
        hashes = {image.sha256 for image in self.reference_images}
        for trial in [*self.all_trials(), *self.machine_trials]:
            hashes.update(trial.references.min, trial.references.max, trial.queries)
        return hashes


class Answer(Strict):
    max_query: int = Field(
        ge=0, description="index into Trial.queries of the correct query: the more activating one, or the odd one"
    )
    query_activations: list[float] | None = Field(None, description="per query; null when unknown (imported)")
    query_ranks: list[int] | None = Field(None, description="rank of each query from its own extreme end")
    query_sources: list[str] | None = None


class AnswerKey(Strict):
    schema_version: Literal[2]
    study_id: str
    answers: dict[str, Answer]


class Bundle(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    root: Path
    manifest: Manifest
    answer_key: AnswerKey
    fingerprint: str = Field(
        description="which build of the study: the first 16 hex digits of the sha256 of the manifest and the "
        "answer key (a rebuilt bundle with other trials has another)"
    )

    def image_path(self, sha: str) -> Path:
        return self.root / IMAGES / f"{sha}.png"


# --- reading ----------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: missing (is {path.parent} a study bundle?)") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: not valid JSON: {exc}") from None


def upgrade(raw: Any) -> Any:
    """A version-1 manifest or answer key as version 2 (the content is otherwise the same)."""
    if not isinstance(raw, dict) or raw.get("schema_version") != 1:
        return raw
    raw = {**raw, "schema_version": 2}
    if "units" in raw:  # the manifest: the 2AFC paradigm, and a channel selector per unit
        raw.setdefault("paradigm", "2afc")
        raw.setdefault("dictionaries", [])  # version 1 had channel units only
        units = []
        for unit in raw["units"]:
            unit = dict(unit) if isinstance(unit, dict) else unit
            if isinstance(unit, dict) and "channel" in unit:
                channel = unit.pop("channel")
                unit["selector"] = None if channel is None else {"kind": "channel", "channel": channel}
            units.append(unit)
        raw["units"] = units
    return raw


def _validate(cls: type[BaseModel], path: Path) -> Any:
    raw = upgrade(_read_json(path))
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(format_validation_error(path, exc, raw)) from None


def load_bundle(root: str | Path, verify_hashes: bool = False) -> Bundle:
    """Read and cross-check a bundle; errors name the file and the field."""
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"{root}: not a directory")
    manifest: Manifest = _validate(Manifest, root / MANIFEST)
    key: AnswerKey = _validate(AnswerKey, root / ANSWER_KEY)
    if key.study_id != manifest.study_id:
        raise BundleError(f"{root / ANSWER_KEY}: study_id {key.study_id!r} != manifest's {manifest.study_id!r}")
    missing = sorted(set(manifest.trials()) - set(key.answers))
    if missing:
        raise BundleError(f"{root / ANSWER_KEY}: answers: no entry for trial(s) {missing[:5]}")
    for sha in sorted(manifest.image_hashes()):
        if not re.match(_HASH, sha):
            raise BundleError(f"{root / MANIFEST}: image name {sha!r} is not a sha256 hex digest")
        path = root / IMAGES / f"{sha}.png"
        if not path.is_file():
            raise BundleError(f"{root / MANIFEST}: image {sha} is referenced but {path} is missing")
        if verify_hashes and hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            raise BundleError(f"{path}: content does not match its name")
    for dictionary in manifest.dictionaries:
        path = root / dictionary.file
        if not path.is_file() or not path.resolve().is_relative_to(root.resolve()):
            raise BundleError(f"{root / MANIFEST}: dictionary {dictionary.name!r} names {path}, which is missing")
        if verify_hashes and hashlib.sha256(path.read_bytes()).hexdigest() != dictionary.sha256:
            raise BundleError(f"{path}: content does not match the manifest's sha256")
    return Bundle(root=root, manifest=manifest, answer_key=key, fingerprint=bundle_fingerprint(root))


def bundle_fingerprint(root: Path) -> str:
    digest = hashlib.sha256()
    for name in (MANIFEST, ANSWER_KEY):
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:16]


def check_same_study(bundle: Bundle, study_id: str, fingerprint: str | None, source: str, fix: str) -> None:
    """Refuse data of another study (or of another build of this one) than ``bundle``: ``source`` names
    where the data came from, ``fix`` what to do; a fingerprint of None (not recorded) is not checked."""
    ours = bundle.manifest.study_id
    if study_id != ours:
        raise StudyMismatchError(
            f"{source} is of study {study_id!r}, but the bundle {bundle.root} is of study {ours!r}: {fix}"
        )
    if fingerprint is not None and fingerprint != bundle.fingerprint:
        raise StudyMismatchError(
            f"{source} was collected with build {fingerprint} of study {ours!r}, but the bundle {bundle.root} is "
            f"build {bundle.fingerprint} (rebuilt: its trials and answers may differ): {fix}"
        )


# --- writing ----------------------------------------------------------------


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write, fsync and rename, so a reader never sees half a file."""
    with atomic_text_file(path) as fh:
        json.dump(payload, fh, indent=1, sort_keys=True)
        fh.write("\n")


IMAGE_MTIME = 946_684_800  # 2000-01-01 00:00:00 UTC


def write_image_bytes(root: Path, data: bytes) -> str:
    """Store PNG bytes under their content hash; returns the hash."""
    sha = hashlib.sha256(data).hexdigest()
    path = root / IMAGES / f"{sha}.png"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # A per-process name: shards of one build may store the same image at once.
        tmp = path.with_name(f".{sha}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        # One constant mtime: the order in which a build wrote its images must not be readable from them.
        os.utime(tmp, (IMAGE_MTIME, IMAGE_MTIME))
        os.replace(tmp, path)
    return sha


def write_bundle(root: Path, manifest: Manifest, answer_key: AnswerKey) -> Bundle:
    """Write manifest and answer key (images are already in place) and re-validate."""
    write_json_atomic(root / ANSWER_KEY, answer_key.model_dump(mode="json"))
    write_json_atomic(root / MANIFEST, manifest.model_dump(mode="json"))
    return load_bundle(root)
