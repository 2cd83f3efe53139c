"""``psychinterp build``: study config -> study bundle, in resumable, shardable stages.

1. plan: sample the units of every model (``.work/plan.json``);
2. work items, one per model and feature-visualisation batch of units: one
   streaming scan per model for the units still without exemplars, then the
   visualisations; every unit's results are recorded as soon as they exist
   (:mod:`stimuli.workdir`);
3. assemble (the merge step): deal tasks and write the bundle from the records.

A rerun skips every recorded unit. ``--shard i/n`` runs one share of the work
items; the merge step joins the shards. The manifest does not depend on how
the work was split or how often it was interrupted.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from contracts import bundle as bundle_schema
from contracts.bundle import (
    AnswerKey,
    Bundle,
    BundleModel,
    Dictionary,
    Manifest,
    ReferenceImage,
    ReplacedUnit,
    Unit,
)
from contracts.criteria import DEFAULT_CRITERIA, unmeetable
from contracts.errors import ConfigError, PsychinterpError
from contracts.units import CHANNEL_KIND
from stimuli.acceptance import exemplar_problems, pixel_sd, retry_can_help, visualisation_problems
from stimuli.dictionaries import DictionaryTable, bind, load_dictionary, prepare_dictionaries
from stimuli.exemplars import (
    ImageTreeDataset,
    Precision,
    exact_at_used_ranks,
    random_dataset_images,
    rescore_rows,
    scan_dataset,
    select_exemplars,
    used_rank_ranges,
)
from stimuli.images import STORED_CROP, decode_stored_view, png_bytes
from stimuli.registry import Layer, LoadedModel, build_architecture, eligible_layers, load_model, parameter_count
from stimuli.selectors import readout_problem
from stimuli.specs import ModelSpec, load_model_specs
from stimuli.study import StudyConfig
from stimuli.tasks import (
    BatchImages,
    QueryImage,
    StudyPlan,
    UnitStimuli,
    assemble_tasks,
    plan_study,
    practice_unit_ranking,
)
from stimuli.units import SampledUnit, reserve_units, sample_dictionary_units, sample_units
from stimuli.workdir import ExemplarRecord, Verdict, WorkDir, fingerprint

log = logging.getLogger(__name__)

PrecisionChoice = Literal["auto", "fp32", "fp16", "bf16"]


def _stored_pixels(pixels: np.ndarray) -> np.ndarray:
    if pixels.shape[0] == STORED_CROP:
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((STORED_CROP, STORED_CROP), Image.BICUBIC))


def _store(out: Path, pixels: np.ndarray) -> str:
    return bundle_schema.write_image_bytes(out, png_bytes(_stored_pixels(pixels)))


@dataclass(frozen=True)
class Shard:
    """Share ``index`` (1-based) of ``count`` of a build's work items."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        i, sep, n = text.partition("/")
        if not (sep and i.isdigit() and n.isdigit()) or not 1 <= int(i) <= int(n):
            raise ConfigError(f"--shard {text!r}: expected i/n with 1 <= i <= n, e.g. 2/8")
        return cls(int(i), int(n))

    def select(self, items: Sequence[WorkItem]) -> list[WorkItem]:
        # Contiguous shares, so that a shard scans the dataset for as few models as possible.
        n = len(items)
        return list(items[(self.index - 1) * n // self.count : self.index * n // self.count])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class WorkItem:
    """Units of one model that are visualised together (one feature-visualisation batch)."""

    model_id: str
    first: int  # position of the first unit among the model's units (seeds derive from it)
    units: tuple[SampledUnit, ...]


@dataclass(frozen=True)
class UnitPlan:
    """The models of a study and the units sampled from each (the build's first stage)."""

    models: dict[str, BundleModel]
    units: dict[str, list[SampledUnit]]
    dictionaries: list[Dictionary] = field(default_factory=list)
    machine_only: frozenset[str] = frozenset()  # planned unit ids that only a machine scores

    def without_visualisations(self, config: StudyConfig) -> frozenset[str]:
        """Planned units that need no feature visualisations: the machine-only ones, when the machine scores
        no synthetic trials."""
        return self.machine_only if "synthetic" not in config.machine_conditions else frozenset()

    def dictionary_table(self, out: Path, model_id: str) -> DictionaryTable:
        """The model's dictionaries with their vectors, keyed by (layer, name), for :func:`bind`."""
        return {(d.layer, d.name): load_dictionary(out, d) for d in self.dictionaries if d.model_id == model_id}

    def work_items(self, units_per_batch: int) -> list[WorkItem]:
        return [
            WorkItem(model_id, k, tuple(units[k : k + units_per_batch]))
            for model_id, units in self.units.items()
            for k in range(0, len(units), units_per_batch)
        ]


def resolve_precision(precision: PrecisionChoice, device: str) -> Precision:
    """``auto``: fp16 autocast on GPU (exemplars are verified in fp32), fp32 on CPU."""
    if precision == "auto":
        return "fp16" if device.startswith("cuda") else "fp32"
    return precision


def _shared_units(
    config: StudyConfig, model_id: str, layers: list[Layer], sampled: Mapping[str, list[SampledUnit]]
) -> list[SampledUnit]:
    """Sample channel units, or reuse those of an earlier model of the same ``shared_units`` group."""
    if config.units_per_model + machine_only_units(config) == 0:
        return []
    group = next((g for g in config.unit_sampling.shared_units if model_id in g), [model_id])
    donor = next((m for m in group if m in sampled), None)
    if donor is None:
        draw = functools.partial(
            sample_units,
            group[0],
            [(layer.name, layer.channels) for layer in layers],
            seed=config.seed,
            weight_by_layer_size=config.unit_sampling.weight_by_layer_size,
        )
        people = draw(config.units_per_model) if config.units_per_model else []
        # The machine's units are a second draw: the people's are the same with or without them.
        return people + draw(machine_only_units(config), taken=people, stream="machine-only")
    channels = {layer.name: layer.channels for layer in layers}
    donor_layers = {(u.layer, u.n_layers) for u in sampled[donor]}
    for unit in sampled[donor]:
        fits = unit.layer in channels and readout_problem(unit.selector, channels[unit.layer]) is None
        if not fits or unit.n_layers != len(layers):
            raise ConfigError(
                f"unit_sampling.shared_units: {model_id!r} cannot reuse the units of {donor!r}: "
                f"their eligible layers differ (e.g. {sorted(donor_layers)[:2]})"
            )
    return [u.for_model(model_id) for u in sampled[donor]]


def machine_only_units(config: StudyConfig) -> int:
    """Channel units per model that only a machine scores (sampled after the people's)."""
    return config.machine_scoring.machine_only_units_per_model if config.machine_scoring else 0


def _dataset_image_store(out: Path, dataset: ImageTreeDataset) -> Callable[[int], str]:
    """Stores a dataset image in the bundle and returns its hash, decoding and encoding each image once:
    the exemplars of units of one layer (and of the same unit's batches) share many images."""

    @functools.cache
    def store(index: int) -> str:
        return _store(out, decode_stored_view(dataset.root / dataset.paths[index]))

    return store


def _natural_batch(
    store: Callable[[int], str], dataset: ImageTreeDataset, result: ExemplarRecord, batch: int
) -> tuple[BatchImages, list[ReferenceImage]]:
    maxs, mins = result.exemplars.max_side[batch], result.exemplars.min_side[batch]
    acts = result.activations
    refs = []
    hashes: dict[str, list[str]] = {"max": [], "min": []}
    for direction, side in (("max", maxs), ("min", mins)):
        for index, rank in zip(side.references, side.reference_ranks, strict=True):
            sha = store(index)
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
    candidates = {
        direction: tuple(
            QueryImage(sha, acts[i], rank, dataset.paths[i].as_posix())
            for sha, i, rank in zip(hashes[direction], side.references, side.reference_ranks, strict=True)
        )
        for direction, side in (("max", maxs), ("min", mins))
    }
    queries = {
        role: QueryImage(
            sha256=store(side.query),
            activation=acts[side.query],
            rank=side.query_rank,
            source=dataset.paths[side.query].as_posix(),
        )
        for role, side in (("max", maxs), ("min", mins))
    }
    if result.random_images:
        index, rank = result.random_images[batch]
        queries["random"] = QueryImage(
            store(index),
            acts[index],
            rank,
            dataset.paths[index].as_posix(),
        )
    images = BatchImages(
        natural_min=tuple(hashes["min"]),
        natural_max=tuple(hashes["max"]),
        natural_min_activations=tuple(acts[i] for i in mins.references),
        natural_max_activations=tuple(acts[i] for i in maxs.references),
        queries=queries,
        references=candidates,
    )
    return images, refs


# What only the assembly reads: trials, paradigm and texts. The units, their exemplars and their
# visualisations do not depend on them, so the same work serves another task layout or paradigm.
ASSEMBLY_ONLY = ("study_id", "title", "consent_text", "tasks", "paradigm", "odd_one_out", "conditions")


def _plan_fingerprint(config: StudyConfig, specs: Mapping[str, ModelSpec], dataset: ImageTreeDataset) -> str:
    settings = config.model_dump(mode="json")
    settings["dataset"].pop("num_workers")  # how images are decoded does not change the results
    settings["dataset"].pop("path")  # the image list below is what matters
    settings["dataset"].pop("described_as")  # the instructions' words for them
    for field_name in ASSEMBLY_ONLY:
        settings.pop(field_name)
    # Only the machine-only units change what is sampled; the observer scores after assembly.
    scoring = settings.pop("machine_scoring")
    if scoring is not None and scoring["machine_only_units_per_model"]:
        settings["machine_only_units_per_model"] = scoring["machine_only_units_per_model"]
    # Except random odd images, which the scan draws and the exemplar records keep.
    settings["random_odd_images"] = config.paradigm == "odd_one_out" and config.odd_one_out.odd_image == "random"
    return fingerprint(
        {
            "config": settings,
            "models": [specs[m].model_dump(mode="json") for m in config.models],
            "images": dataset.fingerprint(),
        }
    )


def _dictionary_units(
    config: StudyConfig,
    spec: ModelSpec,
    layers: list[Layer],
    dataset: ImageTreeDataset,
    out: Path,
    device: str,
    weights: Mapping[str, Path],
) -> tuple[list[Dictionary], list[SampledUnit]]:
    """Read or fit the model's dictionaries (this needs its weights), then draw units from their live rows."""
    configs = [d for d in config.dictionaries if spec.id in d.model_ids(config.models)]
    if not configs:
        return [], []
    model = load_model(spec, weights.get(spec.id), device=device)
    loaded = prepare_dictionaries(
        model,
        configs,
        {layer.name: layer.channels for layer in layers},
        dataset,
        config.dictionary_sample,
        out,
        config.seed,
        batch_size=config.dataset.batch_size,
        num_workers=config.dataset.workers(),
    )
    units = []
    for dictionary in configs:
        mine = [d.info for d in loaded if d.info.name == dictionary.name]
        units += sample_dictionary_units(
            spec.id,
            dictionary.name,
            mine[0].form,
            [(d.layer, d.live) for d in mine],
            [layer.name for layer in layers],
            dictionary.units_per_model,
            config.seed,
            weight_by_layer_size=config.unit_sampling.weight_by_layer_size,
        )
    return [d.info for d in loaded], units


def plan_units(
    config: StudyConfig,
    out: Path,
    dataset: ImageTreeDataset,
    device: str = "cpu",
    weights: Mapping[str, Path] | None = None,
) -> UnitPlan:
    """The units of every model, sampled once and recorded; every shard reads the same plan.

    Channel units need no weights: layers and channel counts do not depend on them. A study with
    dictionaries loads each of their models here once, to read or fit them.
    """
    specs = load_model_specs(config.models_file)
    unknown = [m for m in config.models if m not in specs]
    if unknown:
        raise ConfigError(f"study {config.study_id}: unknown model id(s) {unknown}; known: {sorted(specs)}")
    work = WorkDir(out)
    key = _plan_fingerprint(config, specs, dataset)
    stored = work.read_plan(key)
    if stored is None:
        channel_units: dict[str, list[SampledUnit]] = {}
        sampled: dict[str, list[SampledUnit]] = {}
        dictionaries: list[Dictionary] = []
        models = {}
        for model_id in config.models:
            spec = specs[model_id]
            layers = eligible_layers(LoadedModel(spec, build_architecture(spec)))
            channel_units[model_id] = _shared_units(config, model_id, layers, channel_units)
            found, units = _dictionary_units(config, spec, layers, dataset, out, device, dict(weights or {}))
            dictionaries += found
            sampled[model_id] = channel_units[model_id] + units
            models[model_id] = BundleModel(
                id=spec.id,
                display_name=spec.display_name,
                source=spec.source,
                parameter_count=parameter_count(spec),
                train_images=spec.metadata.train_images,
                imagenet_top1=spec.metadata.imagenet_top1,
            )
        stored = {
            "fingerprint": key,
            "models": {m: b.model_dump(mode="json") for m, b in models.items()},
            "units": {m: [u.model_dump(mode="json") for u in units] for m, units in sampled.items()},
            "dictionaries": [d.model_dump(mode="json") for d in dictionaries],
            # The channel units past units_per_model, per model, are the machine's only.
            "machine_only": sorted(
                u.unit_id for units in channel_units.values() for u in units[config.units_per_model :]
            ),
        }
        work.write_plan(stored)
    return UnitPlan(
        models={m: BundleModel.model_validate(b) for m, b in stored["models"].items()},
        units={m: [SampledUnit.model_validate(u) for u in units] for m, units in stored["units"].items()},
        dictionaries=[Dictionary.model_validate(d) for d in stored.get("dictionaries", [])],
        machine_only=frozenset(stored.get("machine_only", [])),
    )


def _scan_and_select(
    config: StudyConfig,
    model: LoadedModel,
    units: Sequence[SampledUnit],
    positions: Sequence[int],
    dataset: ImageTreeDataset,
    work: WorkDir,
    precision: Precision,
    checkpoint_seconds: float,
    dictionaries: DictionaryTable,
) -> None:
    """One streaming pass for ``units``, then each unit's exemplars, recorded one by one."""
    ex, ds = config.exemplars, config.dataset
    array_path = work.scan_path(model.spec.id, [u.unit_id for u in units])
    refs = [bind(u.ref, dictionaries) for u in units]
    scan = scan_dataset(
        model,
        refs,
        dataset,
        array_path,
        batch_size=ds.batch_size,
        num_workers=ds.workers(),
        precision=precision,
        checkpoint_seconds=checkpoint_seconds,
    )
    activations = np.asarray(scan.activations)
    if precision != "fp32":
        n_valid = int(np.count_nonzero(~np.isnan(activations[:, 0])))
        ranges = used_rank_ranges(n_valid, ex.batches, ex.references, ex.queries)
        rescored = exact_at_used_ranks(
            activations,
            ranges,
            lambda rows: rescore_rows(model, refs, dataset, rows, ds.batch_size, ds.workers()),
        )
        log.info("scan %s: %d images near the used ranks re-scored in fp32", model.spec.id, rescored)
    for j, (unit, position) in enumerate(zip(units, positions, strict=True)):
        column = activations[:, j]
        chosen = select_exemplars(column, ex.batches, ex.references, ex.queries, seed=config.seed + position)
        indices = {i for side in (*chosen.max_side, *chosen.min_side) for i in (*side.references, side.query)}
        random_images = ()
        if config.paradigm == "odd_one_out" and config.odd_one_out.odd_image == "random":
            random_images = random_dataset_images(column, indices, ex.batches, seed=config.seed + position)
            indices |= {i for i, _ in random_images}
        top = [column[i] for side in chosen.max_side for i in side.references]
        bottom = [column[i] for side in chosen.min_side for i in side.references]
        spread = float(np.nanstd(column)) or 1.0
        work.write_exemplars(
            ExemplarRecord(
                unit=unit,
                exemplars=chosen,
                activations={i: float(column[i]) for i in indices},
                separation=(float(np.mean(top)) - float(np.mean(bottom))) / spread,
                targets=(float(np.nanmax(column)), float(np.nanmin(column))),
                random_images=random_images,
                target_images=(int(np.nanargmax(column)), int(np.nanargmin(column))),
            )
        )
    del scan, activations
    array_path.unlink(missing_ok=True)
    array_path.with_name(array_path.name + ".progress.json").unlink(missing_ok=True)


def _dataset_images(dataset: ImageTreeDataset, model: LoadedModel, indices: Sequence[int]) -> torch.Tensor:
    """Dataset images as [0, 1] tensors at the model's input size (images that fail to decode are skipped)."""
    from stimuli.exemplars import model_inputs

    decoded = [dataset[i][1] for i in indices]
    return model_inputs(model, torch.stack([d for d in decoded if d is not None]))


def _target_images(
    dataset: ImageTreeDataset, model: LoadedModel, indices: tuple[int, int] | None
) -> torch.Tensor | None:
    """The images that set a unit's targets, where the record kept them and both decode."""
    if indices is None:
        return None
    images = _dataset_images(dataset, model, indices)
    return images if len(images) == len(indices) else None


def _visualise(
    config: StudyConfig,
    model: LoadedModel,
    units: Sequence[SampledUnit],
    seed: int,
    out: Path,
    work: WorkDir,
    dictionaries: DictionaryTable,
    dataset: ImageTreeDataset,
    layer_order: Sequence[str],
    attempt: int = 0,
) -> None:
    """Visualise ``units`` together (one batch) and record each unit's images; ``attempt`` k > 0 is the k-th
    retry of a refused unit, with its method's retry settings."""
    from stimuli.fv import FVRequest
    from stimuli.fv_sanity import check_paths

    method = config.feature_visualization.retry(attempt) if attempt else config.feature_visualization
    retry = _retry_record(config.feature_visualization, method, attempt)
    records = [work.read_exemplars(u.unit_id) for u in units]
    requests = [
        FVRequest(
            r.unit.layer,
            bind(r.unit.ref, dictionaries).readout,
            *r.targets,
            target_images=_target_images(dataset, model, r.target_images),
        )
        for r in records
    ]
    sample = np.random.default_rng(seed)

    def natural_images(n: int) -> torch.Tensor:
        return _dataset_images(dataset, model, sample.choice(len(dataset), min(n, len(dataset)), replace=False))

    images, _ = method.visualise(model, requests, seed=seed, natural_images=natural_images)
    for unit, record, visualisations in zip(units, records, images, strict=True):
        below = list(layer_order[: layer_order.index(unit.layer)]) if unit.layer in layer_order else []
        exemplars = {
            "max": _dataset_images(dataset, model, [i for s in record.exemplars.max_side for i in s.references]),
            "min": _dataset_images(dataset, model, [i for s in record.exemplars.min_side for i in s.references]),
        }
        shown = {
            d: torch.stack(
                [
                    torch.from_numpy(v.pixels).permute(2, 0, 1).float().div(255)
                    for v in visualisations
                    if v.direction == d
                ]
            )
            for d in ("max", "min")
        }
        checks = check_paths(model, below, exemplars, shown)
        position = {"max": 0, "min": 0}
        stored = []
        for vis in visualisations:
            check = checks[vis.direction] if checks else None
            k = position[vis.direction]
            position[vis.direction] += 1
            stored.append(
                {
                    "sha256": _store(out, vis.pixels),
                    "direction": vis.direction,
                    "activation": vis.activation,
                    "steps": vis.steps,
                    "seed": vis.seed,
                    "diversity": vis.diversity,
                    "beats_exemplars": vis.beats_exemplars,
                    "fv_method": method.method,
                    "fv_params": vis.params,
                    "fv_retry": retry,
                    "path_similarity": float(check.similarity[k]) if check else None,
                    "path_outlier": bool(check.outlier[k]) if check else None,
                    "pixel_sd": round(pixel_sd(vis.pixels), 3),
                }
            )
        flagged = [s for s in stored if s["path_outlier"]]
        if flagged:
            log.info(
                "unit %s: %d of %d visualisations reach the unit by a path its exemplars do not use "
                "(path similarity %s, floor %.2g): see the sanity check in docs/building.md",
                unit.unit_id,
                len(flagged),
                len(stored),
                ", ".join(f"{s['path_similarity']:.2f}" for s in flagged),
                min(c.exemplar_floor for c in checks.values()),
            )
        work.write_fv(unit.unit_id, stored, config.feature_visualization.record())


def _retry_record(configured, used, attempt: int) -> dict[str, Any] | None:
    """What a retry changed: its number and the settings that differ from the study config's (None: first try)."""
    if not attempt:
        return None
    before, after = configured.record(), used.record()
    return {"attempt": attempt, **{k: v for k, v in after.items() if before.get(k) != v}}


def _retry_seed(config: StudyConfig, unit: SampledUnit, attempt: int) -> int:
    """A retried or reserve unit is visualised alone, with a seed of its own: the same whichever shard does it."""
    digest = hashlib.sha256(f"{config.seed}:{unit.unit_id}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _fv_attempt(work: WorkDir, config: StudyConfig, unit_id: str) -> int:
    images = work.read_fv(unit_id, config.feature_visualization.made) or []
    return max(((image.get("fv_retry") or {}).get("attempt", 0) for image in images), default=0)


def unit_problems(config: StudyConfig, work: WorkDir, unit: SampledUnit, visualised: bool = True) -> list[str]:
    """Why ``unit`` may not be shown (:mod:`stimuli.acceptance`), from its records; empty when it may.
    ``visualised``: False for a unit built without visualisations (a natural-only machine unit)."""
    problems = _natural_problems(work, unit)
    if problems or "synthetic" not in config.conditions or not visualised:
        return problems
    images = work.read_fv(unit.unit_id, config.feature_visualization.made)
    for image in images:
        if "pixel_sd" not in image:  # recorded before this was measured
            with Image.open(work.out / bundle_schema.IMAGES / f"{image['sha256']}.png") as stored:
                image["pixel_sd"] = pixel_sd(np.asarray(stored.convert("RGB")))
    return visualisation_problems(images, config.acceptance)


def current_unit(work: WorkDir, unit: SampledUnit) -> tuple[SampledUnit | None, Verdict | None, list[Verdict]]:
    """Where a planned unit's place stands: the unit now in it (None when no reserve was left), that unit's
    verdict (None while undecided), and the verdicts of the units it replaced, in order."""
    replaced: list[Verdict] = []
    while True:
        verdict = work.read_verdict(unit.unit_id)
        if verdict is None or verdict.accepted:
            return unit, verdict, replaced
        replaced.append(verdict)
        if verdict.replaced_by is None:
            return None, None, replaced
        unit = verdict.replaced_by


@dataclass
class _Places:
    """The planned units of one model in a work stage, with what the acceptance rules need to fill them."""

    config: StudyConfig
    work: WorkDir
    planned: list[SampledUnit]  # all the model's planned units (reserves are drawn around them)
    rows: Callable[[SampledUnit], Sequence[int]]  # every row of a unit's layer and kind
    not_visualised: frozenset[str] = frozenset()  # planned places whose units need no visualisations
    machine_only: frozenset[str] = frozenset()  # planned places only a machine scores

    def reserves(self, planned_unit: SampledUnit) -> list[SampledUnit]:
        """A place's reserves. The people's places draw theirs from the rows no planned unit uses; the
        machine-only places theirs from what is left after those, so that no unit can be both."""
        rules = self.config.acceptance
        people = [u for u in self.planned if u.unit_id not in self.machine_only]
        machine = [u for u in self.planned if u.unit_id in self.machine_only]
        rows = self.rows(planned_unit)
        # Machine-only units are channels: they take rows from channel places only.
        same_rows = planned_unit.selector.unit_kind == CHANNEL_KIND
        taken = {u.selector.row for u in machine if u.layer == planned_unit.layer and same_rows}
        if planned_unit.unit_id not in self.machine_only:
            spare = [r for r in rows if r not in taken]
            return reserve_units(people, planned_unit, spare, self.config.seed, rules.replacements)
        same_layer = [u for u in people if (u.layer, u.selector.unit_kind) == (planned_unit.layer, CHANNEL_KIND)]
        for unit in same_layer:  # the people's places' reserves stay theirs
            taken |= {r.selector.row for r in self.reserves(unit)} | {unit.selector.row}
        spare = [r for r in rows if r not in taken or r == planned_unit.selector.row]
        return reserve_units(machine, planned_unit, spare, self.config.seed, rules.replacements)

    def decide(self, planned_unit: SampledUnit, unit: SampledUnit, problems: list[str]) -> SampledUnit | None:
        """Record the verdict on ``unit`` (in ``planned_unit``'s place); returns the reserve that takes over."""
        if not problems:
            self.work.write_verdict(Verdict(unit, True))
            return None
        if self.config.acceptance.on_failure == "stop":
            raise PsychinterpError(
                f"unit {unit.unit_id}: its stimuli fail the acceptance rules: {'; '.join(problems)}. The study config "
                "says acceptance.on_failure: stop; set it to replace to put a reserve unit in its place, or loosen "
                "the rules (docs/building.md, 'Acceptance')"
            )
        _, _, replaced = current_unit(self.work, planned_unit)
        tried = {planned_unit.unit_id, *(v.unit.unit_id for v in replaced), unit.unit_id}
        reserve = next((r for r in self.reserves(planned_unit) if r.unit_id not in tried), None)
        log.warning(
            "unit %s refused (%s); %s",
            unit.unit_id,
            "; ".join(problems),
            f"{reserve.unit_id} takes its place" if reserve else "no reserve is left: its place stays empty",
        )
        self.work.write_verdict(Verdict(unit, False, tuple(problems), reserve))
        return reserve


def _fill_places(
    config: StudyConfig,
    model: LoadedModel,
    places: _Places,
    mine: Sequence[SampledUnit],
    positions: Mapping[str, int],
    dataset: ImageTreeDataset,
    work: WorkDir,
    precision: Precision,
    checkpoint_seconds: float,
    dictionaries: DictionaryTable,
    layer_order: Sequence[str],
) -> None:
    """Decide the places of the planned units ``mine``: accept the unit in each, retry its visualisations, or
    bring in reserves (one scan pass per round for those that need exemplars) until every place is decided."""
    synthetic = "synthetic" in config.conditions
    rules = config.acceptance
    for _ in range(rules.replacements + 2):
        open_places = []
        for planned_unit in mine:
            unit, verdict, _ = current_unit(work, planned_unit)
            if unit is not None and verdict is None:
                open_places.append((planned_unit, unit))
        if not open_places:
            return
        need_scan = [(p, u) for p, u in open_places if not work.exemplar_path(u.unit_id).exists()]
        if need_scan:
            _scan_and_select(
                config,
                model,
                [u for _, u in need_scan],
                [positions[p.unit_id] for p, _ in need_scan],
                dataset,
                work,
                precision,
                checkpoint_seconds,
                dictionaries,
            )
        for planned_unit, unit in open_places:
            visualise = functools.partial(
                _visualise, config, model, [unit], out=work.out, work=work, dictionaries=dictionaries
            )
            visualise = functools.partial(visualise, dataset=dataset, layer_order=layer_order)
            wanted = synthetic and planned_unit.unit_id not in places.not_visualised
            visualisable = wanted and not _natural_problems(work, unit)
            if visualisable and not work.fv_path(unit.unit_id).exists():
                visualise(_retry_seed(config, unit, 0))
            problems = unit_problems(config, work, unit, visualised=wanted)
            attempt = _fv_attempt(work, config, unit.unit_id) if visualisable else 0
            while problems and visualisable and attempt < rules.retries and retry_can_help(problems):
                attempt += 1
                visualise(_retry_seed(config, unit, attempt), attempt=attempt)
                problems = unit_problems(config, work, unit, visualised=wanted)
            places.decide(planned_unit, unit, problems)
    raise AssertionError("every place is decided within replacements + 2 rounds")  # pragma: no cover


def _natural_problems(work: WorkDir, unit: SampledUnit) -> list[str]:
    """Why the unit's own exemplars refuse it (no visualisation can help)."""
    record = work.read_exemplars(unit.unit_id)
    pairs = [
        (record.activations[high.query], record.activations[low.query])
        for high, low in zip(record.exemplars.max_side, record.exemplars.min_side, strict=True)
    ]
    return exemplar_problems(record.targets, pairs)


def _layer_rows(plan: UnitPlan, model: LoadedModel) -> Callable[[SampledUnit], Sequence[int]]:
    """Every row of a unit's layer and kind: the layer's channels, or its dictionary's live rows there."""
    channels = {layer.name: layer.channels for layer in eligible_layers(model)}
    live = {(d.layer, d.name): d.live for d in plan.dictionaries if d.model_id == model.spec.id}

    def rows(unit: SampledUnit) -> Sequence[int]:
        if unit.selector.kind == "channel":
            return range(channels[unit.layer])
        return live[(unit.layer, unit.selector.dictionary)]

    return rows


def run_work_items(
    config: StudyConfig,
    out: Path,
    plan: UnitPlan,
    items: Sequence[WorkItem],
    dataset: ImageTreeDataset,
    device: str = "cpu",
    weights: Mapping[str, Path] | None = None,
    precision: PrecisionChoice = "auto",
    checkpoint_seconds: float = 30.0,
) -> int:
    """Do whatever ``items`` still lack, then decide each of their units' places (the acceptance rules);
    returns how many items needed work."""
    weights = dict(weights or {})
    work = WorkDir(out)
    specs = load_model_specs(config.models_file)
    synthetic = "synthetic" in config.conditions
    resolved = resolve_precision(precision, device)
    positions = {u.unit_id: k for units in plan.units.values() for k, u in enumerate(units)}
    by_model: dict[str, list[WorkItem]] = {}
    for item in items:
        by_model.setdefault(item.model_id, []).append(item)
    n_pending = 0
    for model_id, model_items in tqdm(by_model.items(), desc="models", unit="model"):
        need_scan = [u for item in model_items for u in item.units if not work.exemplar_path(u.unit_id).exists()]
        pending = {id(i) for i in model_items if set(i.units) & set(need_scan)}
        skip = plan.without_visualisations(config)
        pending |= {id(i) for i in model_items if synthetic and _to_visualise(work, i.units, skip)}
        mine = [u for item in model_items for u in item.units]
        undecided = [u for u in mine if _undecided(work, u)]
        n_pending += len(pending)
        if not pending and not undecided:
            log.info("model %s: all %d work item(s) already done", model_id, len(model_items))
            continue
        if pending and len(pending) < len(model_items):
            log.info(
                "model %s: resuming, %d of %d work item(s) already done",
                model_id,
                len(model_items) - len(pending),
                len(model_items),
            )
        model = load_model(specs[model_id], weights.get(model_id), device=device)
        dictionaries = plan.dictionary_table(out, model_id)
        places = _Places(config, work, plan.units[model_id], _layer_rows(plan, model), skip, plan.machine_only)
        if need_scan:
            # The reserves' exemplars come in the same pass (the forward passes are the cost, not the units):
            # a refused unit's place is then filled without another pass over the dataset.
            reserves = [(r, p) for p in mine for r in places.reserves(p) if not work.exemplar_path(r.unit_id).exists()]
            positions = {**positions, **{r.unit_id: positions[p.unit_id] for r, p in reserves}}
            need_scan += [r for r, _ in reserves]
            _scan_and_select(
                config,
                model,
                need_scan,
                [positions[u.unit_id] for u in need_scan],
                dataset,
                work,
                resolved,
                checkpoint_seconds,
                dictionaries,
            )
        layer_order = [layer.name for layer in eligible_layers(model)]
        # A batch leaves out the units its exemplars already refuse: no visualisation can help them.
        batches = [(i, _to_visualise(work, i.units, skip)) for i in model_items] if synthetic else []
        for item, units in tqdm([b for b in batches if b[1]], desc=f"visualise {model_id}", unit="batch", leave=False):
            _visualise(config, model, units, config.seed + item.first, out, work, dictionaries, dataset, layer_order)
        _fill_places(
            config,
            model,
            places,
            mine,
            positions,
            dataset,
            work,
            resolved,
            checkpoint_seconds,
            dictionaries,
            layer_order,
        )
        del model
    return n_pending


def _to_visualise(work: WorkDir, units: Sequence[SampledUnit], skip: frozenset[str] = frozenset()) -> list[SampledUnit]:
    """The units of a work item to visualise together: those its exemplars do not refuse (no visualisation
    can help them) and that need visualisations (not in ``skip``); none once they all have them."""
    live = [u for u in units if u.unit_id not in skip and not (_scanned(work, u) and _natural_problems(work, u))]
    return [] if all(work.fv_path(u.unit_id).exists() for u in live) else live


def _scanned(work: WorkDir, unit: SampledUnit) -> bool:
    return work.exemplar_path(unit.unit_id).exists()


def _undecided(work: WorkDir, planned_unit: SampledUnit) -> bool:
    unit, verdict, _ = current_unit(work, planned_unit)
    return unit is not None and verdict is None


def _missing_records(work: WorkDir, plan: UnitPlan) -> list[str]:
    missing = []
    for units in plan.units.values():
        for unit in units:
            current, verdict, _ = current_unit(work, unit)
            if current is not None and verdict is None:
                what = "exemplars" if not work.exemplar_path(current.unit_id).exists() else "verdict"
                missing.append(f"{current.unit_id} ({what})")
    return missing


def assemble_bundle(config: StudyConfig, out: Path, plan: UnitPlan, dataset: ImageTreeDataset) -> Bundle:
    """The merge step: deal tasks and write the bundle from the unit records of every shard."""
    work = WorkDir(out)
    n_trials = config.tasks.trials_per_task + config.tasks.catch_trials_per_task
    for problem in unmeetable(DEFAULT_CRITERIA, n_trials, config.trial_paradigm.n_queries):
        log.warning("the default exclusion criteria and this study: %s (docs/analysis.md, 'Exclusions')", problem)
    missing = _missing_records(work, plan)
    if missing:
        raise PsychinterpError(
            f"{out}: cannot assemble the bundle yet: {len(missing)} unit record(s) are missing, "
            f"e.g. {', '.join(missing[:3])}; run the build again (or the remaining shards, or merge their output "
            "folders) first"
        )
    shown: dict[str, list[SampledUnit]] = {}
    machine: dict[str, list[SampledUnit]] = {}
    replaced: list[ReplacedUnit] = []
    for model_id, units in plan.units.items():
        shown[model_id], machine[model_id] = [], []
        for planned_unit in units:
            unit, _, refused = current_unit(work, planned_unit)
            place = machine if planned_unit.unit_id in plan.machine_only else shown
            place[model_id] += [unit] if unit is not None else []
            replaced += [
                ReplacedUnit(
                    unit_id=v.unit.unit_id,
                    model_id=v.unit.model_id,
                    layer=v.unit.layer,
                    selector=v.unit.selector,
                    problems=list(v.problems),
                    replaced_by=v.replaced_by.unit_id if v.replaced_by else None,
                )
                for v in refused
            ]
    for model_id, units in shown.items():
        if len(units) < max(config.tasks.trials_per_task, 2 if config.tasks.catch_trials_per_task else 1):
            refused = [r for r in replaced if r.model_id == model_id]
            raise PsychinterpError(
                f"model {model_id}: {len(units)} of its "
                f"{sum(u.unit_id not in plan.machine_only for u in plan.units[model_id])} planned units passed the "
                f"acceptance rules ({len(refused)} refused, {sum(r.replaced_by is None for r in refused)} places left "
                f"without a reserve: see {work.root / 'verdicts'}), too few for tasks of "
                f"{config.tasks.trials_per_task} trials; raise units_per_model or acceptance.replacements, lower "
                "tasks.trials_per_task, or loosen the acceptance rules (docs/building.md, 'Acceptance')"
            )
    results = {
        u.unit_id: work.read_exemplars(u.unit_id)
        for group in (shown, machine)
        for units in group.values()
        for u in units
    }
    units_by_model = {m: [u.unit_id for u in units] for m, units in shown.items()}

    task_cfg = config.tasks
    people = {u for ids in units_by_model.values() for u in ids}
    ranking = practice_unit_ranking({u: r.separation for u, r in results.items() if u in people})
    dealt = plan_study(
        units_by_model,
        config.conditions,
        repetitions=task_cfg.repetitions,
        trials_per_task=task_cfg.trials_per_task,
        catch_trials_per_task=task_cfg.catch_trials_per_task,
        batches=config.exemplars.batches,
        practice_units=ranking[: task_cfg.practice_trials],
        seed=config.seed,
    )
    machine_plan = _machine_plan(config, machine)
    reference_images: list[ReferenceImage] = []
    batches: dict[str, dict[int, BatchImages]] = {u: {} for u in results}
    store = _dataset_image_store(out, dataset)
    needed = dealt.needed_batches() | machine_plan.needed_batches()
    for unit_id, batch in tqdm(sorted(needed), desc="store images", unit="batch", leave=False):
        images, refs = _natural_batch(store, dataset, results[unit_id], batch)
        batches[unit_id][batch] = images
        reference_images += refs
    stimuli = {}
    method = config.feature_visualization
    synthetic_condition = "synthetic" in config.conditions
    for unit_id in results:
        synthetic: dict[str, list[ReferenceImage]] = {"max": [], "min": []}
        for vis in (work.read_fv(unit_id, method.made) or []) if synthetic_condition else []:
            image = ReferenceImage(unit_id=unit_id, kind="synthetic", **vis)
            synthetic[vis["direction"]].append(image)
            reference_images.append(image)
        stimuli[unit_id] = UnitStimuli(
            unit_id=unit_id,
            batches=batches[unit_id],
            synthetic_min=tuple(r.sha256 for r in synthetic["min"]),
            synthetic_max=tuple(r.sha256 for r in synthetic["max"]),
            synthetic_min_activations=tuple(v.activation for v in synthetic["min"]),
            synthetic_max_activations=tuple(v.activation for v in synthetic["max"]),
        )
    paradigm = config.trial_paradigm
    deal = functools.partial(
        assemble_tasks,
        stimuli=stimuli,
        max_side=task_cfg.max_side,
        seed=config.seed,
        paradigm=paradigm,
        odd_image=config.odd_one_out.odd_image,
    )
    tasks, practice, answers = deal(dealt)
    machine_tasks, _, machine_answers = deal(machine_plan)
    answers |= machine_answers
    manifest = Manifest(
        schema_version=bundle_schema.SCHEMA_VERSION,
        study_id=config.study_id,
        paradigm=paradigm.name,
        title=config.title,
        consent_text=config.consent_text,
        natural_images=config.dataset.described_as,
        models=list(plan.models.values()),
        units=[_bundle_unit(u) for units in shown.values() for u in units],
        machine_only_units=[_bundle_unit(u) for units in machine.values() for u in units],
        machine_trials=[t for task in machine_tasks for t in task.trials],
        conditions=list(config.conditions),
        reference_images=reference_images,
        tasks=tasks,
        practice_trials=practice,
        dictionaries=plan.dictionaries,
        feature_visualization=method.record() if synthetic_condition else None,
        replaced_units=replaced,
    )
    key = AnswerKey(schema_version=bundle_schema.SCHEMA_VERSION, study_id=config.study_id, answers=answers)
    return bundle_schema.write_bundle(out, manifest, key)


def _bundle_unit(unit: SampledUnit) -> Unit:
    return Unit(
        unit_id=unit.unit_id,
        model_id=unit.model_id,
        layer=unit.layer,
        selector=unit.selector,
        layer_index=unit.layer_index,
        n_layers=unit.n_layers,
    )


def _machine_plan(config: StudyConfig, machine: Mapping[str, list[SampledUnit]]) -> StudyPlan:
    """One trial per machine-only unit and condition with images (first batch), in one task per model and
    condition; the task ids start with ``machine__`` so that no trial id meets a participant's."""
    units = {m: [u.unit_id for u in group] for m, group in machine.items() if group}
    if not units:
        return StudyPlan(tasks=())
    conditions = config.machine_conditions
    dealt = plan_study(
        units,
        conditions,
        repetitions=1,
        trials_per_task=max(len(group) for group in units.values()),
        catch_trials_per_task=0,
        batches=config.exemplars.batches,
        seed=config.seed,
    )
    return StudyPlan(tasks=tuple(dataclasses.replace(t, task_id=f"machine__{t.task_id}") for t in dealt.tasks))


def build_study(
    config: StudyConfig,
    out: Path,
    device: str = "cpu",
    weights: Mapping[str, Path] | None = None,
    shard: Shard | None = None,
    precision: PrecisionChoice = "auto",
    checkpoint_seconds: float = 30.0,
) -> Bundle | None:
    """Plan, do the work items (all, or one shard's), then assemble the bundle when unsharded.

    Rerunning after an interruption redoes only the unfinished work.
    """
    out.mkdir(parents=True, exist_ok=True)
    dataset = ImageTreeDataset(config.dataset.path)
    plan = plan_units(config, out, dataset, device, weights)
    items = plan.work_items(config.feature_visualization.units_per_batch)
    mine = shard.select(items) if shard else items
    run_work_items(config, out, plan, mine, dataset, device, weights, precision, checkpoint_seconds)
    if shard is not None:
        log.info("shard %s: %d work item(s) done; merge when every shard has finished", shard, len(mine))
        return None
    return assemble_bundle(config, out, plan, dataset)


def merge_shards(config: StudyConfig, out: Path, shard_dirs: Sequence[Path] = ()) -> Bundle:
    """Join the shards' unit records (from their own output folders, if they wrote elsewhere) into one bundle.

    Every shard must have planned the same units from the same dictionaries: a dictionary fitted
    twice on different hardware can differ, and units of two different dictionaries cannot be joined.
    """
    dataset = ImageTreeDataset(config.dataset.path)
    out.mkdir(parents=True, exist_ok=True)
    work = WorkDir(out)
    key = _plan_fingerprint(config, load_model_specs(config.models_file), dataset)
    others = []
    for shard_dir in shard_dirs:
        if shard_dir.resolve() == out.resolve():
            continue
        other = WorkDir(shard_dir)
        if other.read_plan(key) is None:
            raise PsychinterpError(f"{shard_dir}: not a shard output folder of this study (no {other.plan_path})")
        others.append(other)
    if work.read_plan(key) is None and others:
        work.adopt_plan(others[0])  # the first shard's plan (and dictionaries), rather than planning again
    plan = plan_units(config, out, dataset)
    for other in others:
        theirs = other.read_plan(key)
        if theirs.get("units") != work.read_plan(key).get("units") or _shas(theirs) != _shas(work.read_plan(key)):
            raise PsychinterpError(
                f"{other.out}: planned other units or fitted other dictionaries than {out}; "
                "plan once (psychinterp build --jobs does) and give every shard the same plan"
            )
        log.info("merge: %d record(s) from %s", work.absorb(other), other.out)
    return assemble_bundle(config, out, plan, dataset)


def _shas(stored_plan: dict) -> list[str]:
    return [d["sha256"] for d in stored_plan.get("dictionaries", [])]
