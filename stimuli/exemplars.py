"""Natural exemplars: one streaming pass over a dataset, then exact rank selection."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from stimuli.errors import PsychinterpError
from stimuli.images import decode_stored_view, list_images
from stimuli.registry import LoadedModel, unit_activations

log = logging.getLogger(__name__)


class ImageTreeDataset(Dataset):
    """Images under a folder, decoded in DataLoader workers to the stored 224 px view."""

    def __init__(self, root: Path):
        self.root = root
        self.paths = list_images(root)
        if not self.paths:
            raise PsychinterpError(f"dataset {root}: no image files found")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None]:
        pixels = decode_stored_view(self.root / self.paths[index])
        if pixels is None:
            return index, None
        return index, torch.from_numpy(pixels).permute(2, 0, 1)  # uint8 CHW


def _collate(batch: list[tuple[int, torch.Tensor | None]]) -> tuple[list[int], torch.Tensor | None, int]:
    good = [(i, t) for i, t in batch if t is not None]
    skipped = len(batch) - len(good)
    if not good:
        return [], None, skipped
    return [i for i, _ in good], torch.stack([t for _, t in good]), skipped


@dataclass(frozen=True)
class UnitRef:
    layer: str
    channel: int


@dataclass
class ScanResult:
    activations: np.ndarray  # (n_images, n_units) float32; NaN rows are undecodable images
    paths: list[Path]
    skipped: int


def scan_dataset(
    model: LoadedModel,
    units: Sequence[UnitRef],
    dataset: ImageTreeDataset,
    array_path: Path,
    batch_size: int = 32,
    num_workers: int = 0,
) -> ScanResult:
    """Activations of all ``units`` for every image, in one pass, into a disk-backed array."""
    by_layer: dict[str, list[int]] = defaultdict(list)
    for unit in units:
        by_layer[unit.layer].append(unit.channel)
    columns = {(u.layer, u.channel): j for j, u in enumerate(units)}
    array_path.parent.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(array_path, mode="w+", dtype=np.float32, shape=(len(dataset), len(units)))
    out[:] = np.nan
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    skipped = 0
    size = model.input_size
    for indices, batch, n_bad in tqdm(loader, desc=f"scan {model.spec.id}", unit="batch", leave=False):
        skipped += n_bad
        if batch is None:
            continue
        images = batch.float().div_(255)
        if images.shape[-1] != size:
            images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
        acts = unit_activations(model, images, by_layer)
        rows = np.asarray(indices)
        for layer, channels in by_layer.items():
            values = acts[layer].float().cpu().numpy()
            for k, channel in enumerate(channels):
                out[rows, columns[(layer, channel)]] = values[:, k]
    out.flush()
    if skipped:
        log.warning("scan %s: skipped %d image(s) that could not be decoded", model.spec.id, skipped)
    return ScanResult(activations=out, paths=dataset.paths, skipped=skipped)


QUERY_PRESETS: dict[str, float | None] = {
    "easy": None,  # the ranks just past the references: 181-200 with the defaults
    "extreme": None,  # Borowski et al. 2021: the most extreme bin supplies the queries
    "hard99": 0.01,  # ranks starting at the 1st / 99th percentile
    "hard95": 0.05,
    "hard85": 0.15,
}


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
