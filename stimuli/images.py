"""Image files: discovery, decoding to the stored 224 px view, PNG encoding."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
STORED_RESIZE = 256
STORED_CROP = 224


def list_images(root: Path) -> list[Path]:
    """Every image file under ``root``, sorted, as paths relative to it."""
    if not root.is_dir():
        from contracts.errors import ConfigError

        raise ConfigError(f"dataset folder not found: {root}")
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def resize_center_crop(image: Image.Image, resize: int = STORED_RESIZE, crop: int = STORED_CROP) -> Image.Image:
    """Shorter side to ``resize``, then the central ``crop`` square (torchvision's convention)."""
    image = image.convert("RGB")
    w, h = image.size
    scale = resize / min(w, h)
    image = image.resize((max(crop, round(w * scale)), max(crop, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - crop) // 2, (h - crop) // 2
    return image.crop((left, top, left + crop, top + crop))


def decode_stored_view(path: Path) -> np.ndarray | None:
    """The 224 px view as uint8 HWC, or None when the file cannot be decoded."""
    try:
        with Image.open(path) as image:
            return np.array(resize_center_crop(image), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


def png_bytes(pixels: np.ndarray) -> bytes:
    """Deterministic PNG encoding of uint8 HWC pixels."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def write_image_folder(
    root: Path,
    class_names: Sequence[str],
    render: Callable[[str, np.random.Generator], np.ndarray],
    images_per_class: int,
    seed: int = 0,
) -> Path:
    """Write an ImageFolder tree (one folder per class) of generated JPEGs.

    Image ``i`` of class ``k`` comes from the generator seeded ``[seed, k, i]``, so a tree can
    grow later without changing what it holds; files already there are kept, so a rerun is quick.
    """
    for k, class_name in enumerate(class_names):
        folder = root / class_name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(images_per_class):
            path = folder / f"{class_name}_{i:05d}.jpg"
            if path.exists():
                continue
            pixels = render(class_name, np.random.default_rng([seed, k, i]))
            tmp = path.with_suffix(".tmp")
            Image.fromarray(pixels).save(tmp, format="JPEG", quality=92)
            tmp.replace(path)  # a killed run leaves no half-written image behind
    return root
