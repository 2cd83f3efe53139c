"""``psychinterp build``: study config -> study bundle."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from stimuli import bundle as bundle_schema
from stimuli.bundle import AnswerKey, Bundle, BundleModel, Manifest, ReferenceImage, Unit
from stimuli.errors import ConfigError
from stimuli.exemplars import ImageTreeDataset, UnitExemplars, UnitRef, scan_dataset, select_exemplars
from stimuli.fv import FVRequest, Visualisation, visualise_units
from stimuli.images import STORED_CROP, decode_stored_view, png_bytes
from stimuli.registry import Layer, eligible_layers, load_model, parameter_count
from stimuli.specs import load_model_specs
from stimuli.study import StudyConfig
from stimuli.tasks import BatchImages, UnitStimuli, assemble_tasks, plan_study, practice_unit_ranking
from stimuli.units import SampledUnit, sample_units

log = logging.getLogger(__name__)


def _stored_pixels(pixels: np.ndarray) -> np.ndarray:
    if pixels.shape[0] == STORED_CROP:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((STORED_CROP, STORED_CROP), Image.BICUBIC))


def _store(out: Path, pixels: np.ndarray) -> str:
    return bundle_schema.write_image_bytes(out, png_bytes(_stored_pixels(pixels)))


@dataclass
class _UnitResult:
    unit: SampledUnit
    exemplars: UnitExemplars
    activations: dict[int, float]  # dataset index -> activation, for the chosen images
    separation: float
    visualisations: list[Visualisation]
    targets: tuple[float, float]  # the most extreme natural activations: (max, min)


def _shared_units(
    config: StudyConfig, model_id: str, layers: list[Layer], sampled: Mapping[str, list[SampledUnit]]
) -> list[SampledUnit]:
    """Sample units, or reuse those of an earlier model of the same ``shared_units`` group."""
    group = next((g for g in config.unit_sampling.shared_units if model_id in g), [model_id])
    donor = next((m for m in group if m in sampled), None)
    if donor is None:
        return sample_units(
            group[0],
            [(layer.name, layer.channels) for layer in layers],
            config.units_per_model,
            config.seed,
            weight_by_layer_size=config.unit_sampling.weight_by_layer_size,
        )
    channels = {layer.name: layer.channels for layer in layers}
    donor_layers = {(u.layer, u.n_layers) for u in sampled[donor]}
    for unit in sampled[donor]:
        if unit.layer not in channels or unit.channel >= channels[unit.layer] or unit.n_layers != len(layers):
            raise ConfigError(
                f"unit_sampling.shared_units: {model_id!r} cannot reuse the units of {donor!r}: "
                f"their eligible layers differ (e.g. {sorted(donor_layers)[:2]})"
            )
    return [u.for_model(model_id) for u in sampled[donor]]


def _natural_batch(
    out: Path, dataset: ImageTreeDataset, result: _UnitResult, batch: int
) -> tuple[BatchImages, list[ReferenceImage]]:
    maxs, mins = result.exemplars.max_side[batch], result.exemplars.min_side[batch]
    acts = result.activations
    refs = []
    hashes: dict[str, list[str]] = {"max": [], "min": []}
    for direction, side in (("max", maxs), ("min", mins)):
        for index, rank in zip(side.references, side.reference_ranks, strict=True):
            sha = _store(out, decode_stored_view(dataset.root / dataset.paths[index]))
            hashes[direction].append(sha)
            refs.append(
                ReferenceImage(
                    sha256=sha,
                    unit_id=result.unit.unit_id,
                    kind="natural",
                    direction=direction,
                    activation=acts[index],
                    rank=rank,
                    batch=batch,
                    source=dataset.paths[index].as_posix(),
                )
            )
    images = BatchImages(
        natural_min=tuple(hashes["min"]),
        natural_max=tuple(hashes["max"]),
        natural_min_activations=tuple(acts[i] for i in mins.references),
        natural_max_activations=tuple(acts[i] for i in maxs.references),
        max_query=_store(out, decode_stored_view(dataset.root / dataset.paths[maxs.query])),
        min_query=_store(out, decode_stored_view(dataset.root / dataset.paths[mins.query])),
        max_query_activation=acts[maxs.query],
        min_query_activation=acts[mins.query],
        max_query_rank=maxs.query_rank,
        min_query_rank=mins.query_rank,
        max_query_source=dataset.paths[maxs.query].as_posix(),
        min_query_source=dataset.paths[mins.query].as_posix(),
    )
    return images, refs


def _model_units(
    config: StudyConfig, model, dataset: ImageTreeDataset, work: Path, sampled: dict[str, list[SampledUnit]]
) -> list[_UnitResult]:
    """Sample units, scan the dataset once, choose exemplars, visualise."""
    ex, fv = config.exemplars, config.feature_visualization
    layers = eligible_layers(model)
    units = _shared_units(config, model.spec.id, layers, sampled)
    sampled[model.spec.id] = units
    scan = scan_dataset(
        model,
        [UnitRef(u.layer, u.channel) for u in units],
        dataset,
        work / f"{model.spec.id}_activations.npy",
        batch_size=config.dataset.batch_size,
        num_workers=config.dataset.num_workers,
    )
    results = []
    for j, unit in enumerate(units):
        column = np.asarray(scan.activations[:, j])
        chosen = select_exemplars(column, ex.batches, ex.references, ex.queries, seed=config.seed + j)
        indices = {i for side in (*chosen.max_side, *chosen.min_side) for i in (*side.references, side.query)}
        top = [column[i] for side in chosen.max_side for i in side.references]
        bottom = [column[i] for side in chosen.min_side for i in side.references]
        spread = float(np.nanstd(column)) or 1.0
        results.append(
            _UnitResult(
                unit=unit,
                exemplars=chosen,
                activations={i: float(column[i]) for i in indices},
                separation=(float(np.mean(top)) - float(np.mean(bottom))) / spread,
                visualisations=[],
                targets=(float(np.nanmax(column)), float(np.nanmin(column))),
            )
        )
    if "synthetic" in config.conditions:
        chunk = fv.units_per_batch
        for k in tqdm(range(0, len(results), chunk), desc=f"visualise {model.spec.id}", unit="batch", leave=False):
            part = results[k : k + chunk]
            requests = [FVRequest(r.unit.layer, r.unit.channel, *r.targets) for r in part]
            images, _ = visualise_units(model, requests, fv.settings(), seed=config.seed + k)
            for result, visualisations in zip(part, images, strict=True):
                result.visualisations = visualisations
    return results


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
        raise ConfigError(f"study {config.study_id}: unknown model id(s) {unknown}; known: {sorted(specs)}")
    out.mkdir(parents=True, exist_ok=True)
    work = out / ".work"
    dataset = ImageTreeDataset(config.dataset.path)

    models: list[BundleModel] = []
    results: dict[str, _UnitResult] = {}
    units_by_model: dict[str, list[str]] = {}
    sampled: dict[str, list[SampledUnit]] = {}
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
        model_results = _model_units(config, model, dataset, work, sampled)
        units_by_model[model_id] = [r.unit.unit_id for r in model_results]
        results.update({r.unit.unit_id: r for r in model_results})
        del model

    task_cfg = config.tasks
    ranking = practice_unit_ranking({u: r.separation for u, r in results.items()})
    plan = plan_study(
        units_by_model,
        config.conditions,
        repetitions=task_cfg.repetitions,
        trials_per_task=task_cfg.trials_per_task,
        catch_trials_per_task=task_cfg.catch_trials_per_task,
        batches=config.exemplars.batches,
        practice_units=ranking[: task_cfg.practice_trials],
        seed=config.seed,
    )
    reference_images: list[ReferenceImage] = []
    batches: dict[str, dict[int, BatchImages]] = {u: {} for u in results}
    for unit_id, batch in tqdm(sorted(plan.needed_batches()), desc="store images", unit="batch", leave=False):
        images, refs = _natural_batch(out, dataset, results[unit_id], batch)
        batches[unit_id][batch] = images
        reference_images += refs
    stimuli = {}
    for unit_id, result in results.items():
        synthetic: dict[str, list[ReferenceImage]] = {"max": [], "min": []}
        for vis in result.visualisations:
            image = ReferenceImage(
                sha256=_store(out, vis.pixels),
                unit_id=unit_id,
                kind="synthetic",
                direction=vis.direction,
                activation=vis.activation,
                steps=vis.steps,
                seed=vis.seed,
                diversity=vis.diversity,
                beats_exemplars=vis.beats_exemplars,
            )
            synthetic[vis.direction].append(image)
            reference_images.append(image)
        stimuli[unit_id] = UnitStimuli(
            unit_id=unit_id,
            batches=batches[unit_id],
            synthetic_min=tuple(r.sha256 for r in synthetic["min"]),
            synthetic_max=tuple(r.sha256 for r in synthetic["max"]),
            synthetic_min_activations=tuple(v.activation for v in synthetic["min"]),
            synthetic_max_activations=tuple(v.activation for v in synthetic["max"]),
        )
    tasks, practice, answers = assemble_tasks(plan, stimuli, max_side=task_cfg.max_side, seed=config.seed)
    manifest = Manifest(
        schema_version=1,
        study_id=config.study_id,
        title=config.title,
        models=models,
        units=[
            Unit(
                unit_id=r.unit.unit_id,
                model_id=r.unit.model_id,
                layer=r.unit.layer,
                channel=r.unit.channel,
                layer_index=r.unit.layer_index,
                n_layers=r.unit.n_layers,
            )
            for r in results.values()
        ],
        conditions=list(config.conditions),
        reference_images=reference_images,
        tasks=tasks,
        practice_trials=practice,
    )
    key = AnswerKey(schema_version=1, study_id=config.study_id, answers=answers)
    result = bundle_schema.write_bundle(out, manifest, key)
    shutil.rmtree(work, ignore_errors=True)
    return result
