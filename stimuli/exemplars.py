"""Natural exemplars: one streaming pass over a dataset, then exact rank selection."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from contracts.bundle import write_json_atomic
from contracts.errors import ConfigError, PsychinterpError
from contracts.units import UnitRef
from stimuli.images import decode_stored_view, list_images
from stimuli.registry import LoadedModel, unit_activations
from stimuli.selectors import BoundUnit, Readout, as_bound
from stimuli.study import QUERY_PRESETS

log = logging.getLogger(__name__)


FILE_LIST_SUFFIXES = {".txt", ".lst"}


def read_file_list(path: Path) -> list[Path]:
    """Image paths from a text file, one per line; relative ones resolve against the file's folder."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"dataset file list {path}: cannot be read: {exc}") from None
    paths = [Path(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not paths:
        raise ConfigError(f"dataset file list {path}: lists no image paths")
    return paths


class ImageTreeDataset(Dataset):
    """The images of a study's dataset, decoded in DataLoader workers to the stored 224 px view.

    ``source`` is a folder (ImageNet train layout with class folders, the flat
    val layout, or any tree of images) or a text file listing image paths.
    """

    def __init__(self, source: Path):
        source = Path(source)
        if source.is_file() and source.suffix.lower() in FILE_LIST_SUFFIXES:
            self.root, self.paths = source.parent, read_file_list(source)
        elif source.is_file():
            raise ConfigError(f"dataset {source}: a file list must end in {sorted(FILE_LIST_SUFFIXES)}")
        else:
            self.root, self.paths = source, list_images(source)
        if not self.paths:
            raise ConfigError(f"dataset {source}: no image files found")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None]:
        pixels = decode_stored_view(self.root / self.paths[index])
        if pixels is None:
            return index, None
        return index, torch.from_numpy(pixels).permute(2, 0, 1)  # uint8 CHW

    def fingerprint(self) -> str:
        """Changes when the image list changes, so that stored row indices stay meaningful."""
        digest = hashlib.sha256()
        for path in self.paths:
            digest.update(path.as_posix().encode() + b"\0")
        return digest.hexdigest()


def default_num_workers() -> int:
    # One core stays with the forward pass.
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def _collate(batch: list[tuple[int, torch.Tensor | None]]) -> tuple[list[int], torch.Tensor | None, list[int]]:
    good = [(i, t) for i, t in batch if t is not None]
    bad = [i for i, t in batch if t is None]
    if not good:
        return [], None, bad
    return [i for i, _ in good], torch.stack([t for _, t in good]), bad


@dataclass
class ScanResult:
    activations: np.ndarray  # (n_images, n_units) float32; NaN rows are undecodable images
    paths: list[Path]
    skipped: int


Precision = Literal["fp32", "fp16", "bf16"]
_AUTOCAST = {"fp16": torch.float16, "bf16": torch.bfloat16}


def loader_for(dataset: Dataset, rows: Sequence[int] | None, batch_size: int, num_workers: int) -> DataLoader:
    subset = dataset if rows is None else Subset(dataset, list(rows))
    return DataLoader(subset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)


def model_inputs(model: LoadedModel, batch: torch.Tensor) -> torch.Tensor:
    """A uint8 image batch as [0, 1] RGB at the model's input size, on its device."""
    images = batch.to(model.device, non_blocking=True).float().div_(255)
    size = model.input_size
    if images.shape[-1] != size:
        images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
    return images


def batch_activations(
    model: LoadedModel,
    batch: torch.Tensor,
    by_layer: Mapping[str, Sequence[Readout]],
    precision: Precision = "fp32",
) -> dict[str, np.ndarray]:
    """Unit activations of a uint8 image batch; a batch that overflows in reduced precision is redone in fp32."""
    images = model_inputs(model, batch)
    if precision == "fp32":
        acts = unit_activations(model, images, by_layer)
    else:
        with torch.autocast(model.device.type, dtype=_AUTOCAST[precision]):
            acts = unit_activations(model, images, by_layer)
        if not all(torch.isfinite(a).all() for a in acts.values()):
            acts = unit_activations(model, images, by_layer)
    return {layer: a.float().cpu().numpy() for layer, a in acts.items()}


def _by_layer(
    units: Sequence[BoundUnit | UnitRef],
) -> tuple[dict[str, list[Readout]], dict[tuple[str, Readout], int]]:
    """The readouts wanted per layer, and each unit's column in the activation array."""
    units = [as_bound(u) for u in units]
    by_layer: dict[str, list[Readout]] = defaultdict(list)
    for unit in units:
        by_layer[unit.layer].append(unit.readout)
    return by_layer, {(u.layer, u.readout): j for j, u in enumerate(units)}


def _read_progress(path: Path, shape: tuple[int, int]) -> dict | None:
    try:
        progress = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return progress if progress.get("shape") == list(shape) else None


def scan_dataset(
    model: LoadedModel,
    units: Sequence[BoundUnit | UnitRef],
    dataset: ImageTreeDataset,
    array_path: Path,
    batch_size: int = 32,
    num_workers: int = 0,
    precision: Precision = "fp32",
    checkpoint_seconds: float = 30.0,
) -> ScanResult:
    """Activations of all ``units`` for every image, in one pass, into a disk-backed array.

    Progress is checkpointed next to the array (``<name>.progress.json``): a
    scan killed at any point resumes from its last checkpoint.
    """
    by_layer, columns = _by_layer(units)
    shape = (len(dataset), len(units))
    progress_path = array_path.with_name(array_path.name + ".progress.json")
    progress = _read_progress(progress_path, shape) if array_path.exists() else None
    if progress is not None:
        out = np.load(array_path, mmap_mode="r+")
    else:
        array_path.parent.mkdir(parents=True, exist_ok=True)
        out = np.lib.format.open_memmap(array_path, mode="w+", dtype=np.float32, shape=shape)
        out[:] = np.nan
        progress = {"shape": list(shape), "rows_done": 0, "skipped": 0, "skipped_examples": []}

    def checkpoint() -> None:
        out.flush()
        write_json_atomic(progress_path, progress)

    if progress["rows_done"] == 0:
        checkpoint()
    start = progress["rows_done"]
    if start < len(dataset):
        if start:
            log.info("scan %s: resuming at image %d of %d", model.spec.id, start, len(dataset))
        loader = loader_for(dataset, range(start, len(dataset)), batch_size, num_workers)
        last_checkpoint = time.monotonic()
        for indices, batch, bad in tqdm(loader, desc=f"scan {model.spec.id}", unit="batch", leave=False):
            if batch is not None:
                acts = batch_activations(model, batch, by_layer, precision)
                rows = np.asarray(indices)
                for layer, readouts in by_layer.items():
                    for k, readout in enumerate(readouts):
                        out[rows, columns[(layer, readout)]] = acts[layer][:, k]
            progress["skipped"] += len(bad)
            examples = progress["skipped_examples"]
            examples += [dataset.paths[i].as_posix() for i in bad[: max(0, 10 - len(examples))]]
            progress["rows_done"] = max([*indices, *bad]) + 1
            if time.monotonic() - last_checkpoint >= checkpoint_seconds:
                checkpoint()
                last_checkpoint = time.monotonic()
        checkpoint()
    if progress["skipped"]:
        log.warning(
            "scan %s: skipped %d image(s) that could not be decoded, e.g. %s",
            model.spec.id,
            progress["skipped"],
            ", ".join(progress["skipped_examples"][:3]),
        )
    return ScanResult(activations=out, paths=dataset.paths, skipped=progress["skipped"])


def query_start_rank(queries: str | int, n_images: int, n_references: int) -> int:
    """1-based rank, counted from each end, of the first query image."""
    if isinstance(queries, int):
        return queries
    if queries not in QUERY_PRESETS:
        raise PsychinterpError(f"unknown query preset {queries!r}; choose from {sorted(QUERY_PRESETS)} or a rank")
    if queries == "easy":
        return n_references + 1
    if queries == "extreme":
        return 1
    return int(QUERY_PRESETS[queries] * n_images) + 1


@dataclass(frozen=True)
class BatchSide:
    """One batch's images on one side, as dataset indices, with their 1-based ranks from that end."""

    references: tuple[int, ...]  # most extreme first
    reference_ranks: tuple[int, ...]
    query: int
    query_rank: int


@dataclass(frozen=True)
class UnitExemplars:
    max_side: tuple[BatchSide, ...]  # one per batch
    min_side: tuple[BatchSide, ...]


def _deal_side(
    order: np.ndarray, batches: int, per_batch: int, query_start: int, rng: np.random.Generator
) -> tuple[BatchSide, ...]:
    """Split one side's ranked list into bins; each batch takes one image per bin."""
    if query_start == 1:  # the extreme bin holds the queries, the references follow it
        query_ranks = np.arange(1, batches + 1)
        reference_ranks = np.arange(batches + 1, batches * (per_batch + 1) + 1)
    else:
        query_ranks = np.arange(query_start, query_start + batches)
        reference_ranks = np.arange(1, batches * per_batch + 1)
    bins = reference_ranks.reshape(per_batch, batches).copy()
    for row in bins:
        rng.shuffle(row)
    query_ranks = rng.permutation(query_ranks)
    return tuple(
        BatchSide(
            references=tuple(int(order[r - 1]) for r in bins[:, b]),
            reference_ranks=tuple(int(r) for r in bins[:, b]),
            query=int(order[query_ranks[b] - 1]),
            query_rank=int(query_ranks[b]),
        )
        for b in range(batches)
    )


def select_exemplars(
    column: np.ndarray, batches: int, per_batch: int, queries: str | int = "easy", seed: int = 0
) -> UnitExemplars:
    """Exact top/bottom ``batches * per_batch`` references and a query range, dealt into batches.

    Both sides come from one stable sort, so ties are broken by image index and
    the two sides never share an image. NaN rows (undecodable images) are never
    chosen. Bin shuffles are seeded.
    """
    valid = np.flatnonzero(~np.isnan(column))
    n_refs = batches * per_batch
    start = query_start_rank(queries, len(valid), n_refs)
    if start != 1 and start <= n_refs:
        raise PsychinterpError(
            f"queries {queries!r} start at rank {start}, inside the {n_refs} references; "
            f"the dataset ({len(valid)} decodable images) is too small for this preset"
        )
    deepest = max(start + batches - 1, n_refs + (batches if start == 1 else 0))
    if 2 * deepest > len(valid):
        raise PsychinterpError(
            f"need at least {2 * deepest} decodable images for {batches} batches x {per_batch} references "
            f"with queries {queries!r}; found {len(valid)}"
        )
    ascending = valid[np.argsort(column[valid], kind="stable")]
    rng = np.random.default_rng(seed)
    return UnitExemplars(
        max_side=_deal_side(ascending[::-1], batches, per_batch, start, rng),
        min_side=_deal_side(ascending, batches, per_batch, start, rng),
    )


def random_dataset_images(
    column: np.ndarray, used: set[int], batches: int, seed: int = 0
) -> tuple[tuple[int, int], ...]:
    """One random decodable image per batch, none of them among ``used``: (index, rank from the max end).

    The odd image of an odd-one-out trial whose config asks for a random dataset image.
    """
    valid = np.flatnonzero(~np.isnan(column))
    pool = np.setdiff1d(valid, np.fromiter(used, dtype=int, count=len(used)))
    if len(pool) < batches:
        raise PsychinterpError(f"need {batches} images besides the exemplars for random odd images; found {len(pool)}")
    descending = valid[np.argsort(-column[valid], kind="stable")]
    rank = {int(i): r + 1 for r, i in enumerate(descending)}
    picks = np.random.default_rng([seed, 0x0DD]).choice(pool, size=batches, replace=False)
    return tuple((int(i), rank[int(i)]) for i in picks)


# --- exact selection after a reduced-precision scan ------------------------------


def used_rank_ranges(n_valid: int, batches: int, per_batch: int, queries: str | int) -> list[tuple[int, int]]:
    """The 1-based rank ranges (from each end) that :func:`select_exemplars` reads."""
    n_refs = batches * per_batch
    start = query_start_rank(queries, n_valid, n_refs)
    if start == 1:
        return [(1, batches * (per_batch + 1))]
    return [(1, n_refs), (start, start + batches - 1)]


def near_used_ranks(column: np.ndarray, ranges: Sequence[tuple[int, int]], margin: float) -> np.ndarray:
    """Images whose value lies within ``margin`` of a used rank range, on either side."""
    valid = ~np.isnan(column)
    ordered = np.sort(column[valid])
    near = np.zeros(len(column), dtype=bool)
    for values in (ordered[::-1], ordered):  # max side, then min side
        for lo, hi in ranges:
            lo, hi = min(lo, len(values)), min(hi, len(values))
            a, b = sorted((values[lo - 1], values[hi - 1]))
            near |= valid & (column >= a - margin) & (column <= b + margin)
    return near


def exact_at_used_ranks(
    activations: np.ndarray,
    ranges: Sequence[tuple[int, int]],
    rescore: Callable[[np.ndarray], np.ndarray],
    initial_margin: float = 0.01,
    max_rounds: int = 6,
) -> int:
    """Replace reduced-precision activations by exact ones wherever they decide a used rank.

    Each unit's approximate values are re-scored (``rescore(rows) -> (rows,
    units)`` in fp32) for every image within a margin of a used rank range.
    Once the margin exceeds twice the largest error seen on the re-scored
    images, every image outside it is ranked correctly whatever its exact value,
    so the chosen exemplars are those of an fp32 scan. Updates ``activations``
    in place; returns the number of re-scored images.
    """
    n_units = activations.shape[1]
    # One column at a time, so memory stays that of one column, not of the whole array.
    spread = np.array([np.nanstd(activations[:, j]) for j in range(n_units)])
    margin = initial_margin * np.where(np.nan_to_num(spread) > 0, spread, 1.0)
    error = np.zeros(n_units)
    done = np.zeros(len(activations), dtype=bool)
    for _ in range(max_rounds):
        near = np.zeros(len(activations), dtype=bool)
        for j in range(n_units):
            near |= near_used_ranks(np.asarray(activations[:, j]), ranges, margin[j])
        rows = np.flatnonzero(near & ~done)
        if len(rows):
            exact = rescore(rows)
            error = np.maximum(error, np.nanmax(np.abs(exact - activations[rows]), axis=0))
            activations[rows] = exact
            done[rows] = True
        if np.all(2 * error < margin):
            return int(done.sum())
        margin = np.maximum(margin, 4 * error)
    raise PsychinterpError(
        f"reduced-precision activations differ from fp32 by up to {float(error.max()):.3g}; scan with --precision fp32"
    )


def rescore_rows(
    model: LoadedModel,
    units: Sequence[BoundUnit | UnitRef],
    dataset: Dataset,
    rows: np.ndarray,
    batch_size: int,
    num_workers: int,
) -> np.ndarray:
    """fp32 activations of ``units`` for the images at ``rows``."""
    by_layer, columns = _by_layer(units)
    result = np.full((len(rows), len(units)), np.nan, dtype=np.float32)
    position = {int(r): k for k, r in enumerate(rows)}
    for indices, batch, _bad in loader_for(dataset, [int(r) for r in rows], batch_size, num_workers):
        if batch is None:
            continue
        acts = batch_activations(model, batch, by_layer, "fp32")
        where = [position[i] for i in indices]
        for layer, readouts in by_layer.items():
            for k, readout in enumerate(readouts):
                result[where, columns[(layer, readout)]] = acts[layer][:, k]
    return result
