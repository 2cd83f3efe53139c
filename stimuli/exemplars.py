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


@dataclass(frozen=True)
class UnitExemplars:
    """Image indices into the dataset, most extreme first."""

    max_references: np.ndarray
    min_references: np.ndarray
    max_query: int
    min_query: int


def select_exemplars(column: np.ndarray, references: int, query_offset: int = 0) -> UnitExemplars:
    """Top/bottom ``references`` images and, just beyond them, one query per side.

    Both sides come from one stable sort, so ties are broken by image index and
    the two sides never share an image. NaN rows (undecodable images) are never chosen.
    """
    valid = np.flatnonzero(~np.isnan(column))
    needed = 2 * (references + query_offset + 1)
    if len(valid) < needed:
        raise PsychinterpError(f"need at least {needed} decodable images, found {len(valid)}")
    values = column[valid]
    ascending = valid[np.argsort(values, kind="stable")]
    descending = ascending[::-1]
    q = references + query_offset
    return UnitExemplars(
        max_references=descending[:references],
        min_references=ascending[:references],
        max_query=int(descending[q]),
        min_query=int(ascending[q]),
    )
