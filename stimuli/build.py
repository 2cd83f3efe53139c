"""``psychinterp build``: study config -> study bundle."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from stimuli import bundle as bundle_schema
from stimuli.bundle import AnswerKey, Bundle, BundleModel, Manifest, ReferenceImage, Unit
from stimuli.exemplars import ImageTreeDataset, UnitRef, scan_dataset, select_exemplars
from stimuli.fv import visualise_unit
from stimuli.images import STORED_CROP, decode_stored_view, png_bytes
from stimuli.registry import eligible_layers, load_model, parameter_count
from stimuli.specs import load_model_specs
from stimuli.study import StudyConfig
from stimuli.tasks import UnitStimuli, build_tasks
from stimuli.units import sample_units

log = logging.getLogger(__name__)


def _stored_pixels(pixels: np.ndarray) -> np.ndarray:
    if pixels.shape[0] == STORED_CROP:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((STORED_CROP, STORED_CROP), Image.BICUBIC))


def _store(out: Path, pixels: np.ndarray) -> str:
    return bundle_schema.write_image_bytes(out, png_bytes(_stored_pixels(pixels)))


def _natural_references(
    out: Path, dataset: ImageTreeDataset, column: np.ndarray, indices: np.ndarray, unit_id: str, direction: str
) -> list[ReferenceImage]:
    return [
        ReferenceImage(
            sha256=_store(out, decode_stored_view(dataset.root / dataset.paths[idx])),
            unit_id=unit_id,
            kind="natural",
            direction=direction,
            activation=float(column[idx]),
            rank=rank,
            source=dataset.paths[idx].as_posix(),
        )
        for rank, idx in enumerate(indices, start=1)
    ]


def build_study(
    config: StudyConfig,
    out: Path,
    device: str = "cpu",
    weights: Mapping[str, Path] | None = None,
) -> Bundle:
    """Sample units, scan the dataset once per model, visualise, deal tasks, write the bundle."""
    weights = dict(weights or {})
    specs = load_model_specs(config.models_file)
    unknown = [m for m in config.models if m not in specs]
    if unknown:
        raise bundle_schema.BundleError(
            f"study {config.study_id}: unknown model id(s) {unknown}; known: {sorted(specs)}"
        )
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".work"
    dataset = ImageTreeDataset(config.dataset.path)
    fv_cfg = config.feature_visualization
    n_refs = config.exemplars.references
    n_fv = fv_cfg.images_per_direction or n_refs

    models: list[BundleModel] = []
    units: list[Unit] = []
    images: list[ReferenceImage] = []
    stimuli: list[UnitStimuli] = []

    for model_id in tqdm(config.models, desc="models", unit="model"):
        spec = specs[model_id]
        model = load_model(spec, weights.get(model_id), device=device)
        models.append(
            BundleModel(
                id=spec.id,
                display_name=spec.display_name,
                source=spec.source,
                parameter_count=parameter_count(spec),
                train_images=spec.metadata.train_images,
                imagenet_top1=spec.metadata.imagenet_top1,
            )
        )
        layers = eligible_layers(model)
        sampled = sample_units(model_id, [(l.name, l.channels) for l in layers], config.units_per_model, config.seed)
        scan = scan_dataset(
            model,
            [UnitRef(u.layer, u.channel) for u in sampled],
            dataset,
            work / f"{model_id}_activations.npy",
            batch_size=config.dataset.batch_size,
            num_workers=config.dataset.num_workers,
        )
        for j, unit in enumerate(tqdm(sampled, desc=f"units {model_id}", unit="unit", leave=False)):
            column = np.asarray(scan.activations[:, j])
            chosen = select_exemplars(column, n_refs, config.exemplars.query_offset)

            natural = {
                direction: _natural_references(out, dataset, column, indices, unit.unit_id, direction)
                for direction, indices in (("min", chosen.min_references), ("max", chosen.max_references))
            }
            for refs in natural.values():
                images.extend(refs)
            synthetic: dict[str, list[str]] = {"max": [], "min": []}
            if "synthetic" in config.conditions:
                for vis in visualise_unit(
                    model,
                    unit.layer,
                    unit.channel,
                    images_per_direction=n_fv,
                    steps=fv_cfg.steps,
                    image_size=fv_cfg.image_size,
                    padding=fv_cfg.padding,
                    lr=fv_cfg.lr,
                    seed=config.seed,
                ):
                    sha = _store(out, vis.pixels)
                    images.append(
                        ReferenceImage(
                            sha256=sha,
                            unit_id=unit.unit_id,
                            kind="synthetic",
                            direction=vis.direction,
                            activation=vis.activation,
                        )
                    )
                    synthetic[vis.direction].append(sha)
            query = {}
            for side, idx in (("max", chosen.max_query), ("min", chosen.min_query)):
                query[side] = _store(out, decode_stored_view(dataset.root / dataset.paths[idx]))
            stimuli.append(
                UnitStimuli(
                    unit_id=unit.unit_id,
                    natural_min=[r.sha256 for r in natural["min"]],
                    natural_max=[r.sha256 for r in natural["max"]],
                    synthetic_min=synthetic["min"],
                    synthetic_max=synthetic["max"],
                    max_query=query["max"],
                    min_query=query["min"],
                    max_query_activation=float(column[chosen.max_query]),
                    min_query_activation=float(column[chosen.min_query]),
                    query_rank=n_refs + config.exemplars.query_offset + 1,
                    max_query_source=dataset.paths[chosen.max_query].as_posix(),
                    min_query_source=dataset.paths[chosen.min_query].as_posix(),
                )
            )
            units.append(
                Unit(
                    unit_id=unit.unit_id,
                    model_id=model_id,
                    layer=unit.layer,
                    channel=unit.channel,
                    layer_index=unit.layer_index,
                    n_layers=unit.n_layers,
                )
            )

    tasks, answers = build_tasks(stimuli, config.conditions, config.trials_per_task, config.seed)
    manifest = Manifest(
        schema_version=1,
        study_id=config.study_id,
        title=config.title,
        models=models,
        units=units,
        conditions=list(config.conditions),
        reference_images=images,
        tasks=tasks,
    )
    key = AnswerKey(schema_version=1, study_id=config.study_id, answers=answers)
    result = bundle_schema.write_bundle(out, manifest, key)
    shutil.rmtree(work, ignore_errors=True)
    return result
