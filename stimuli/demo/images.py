"""A procedural image dataset for the offline demo: gratings, blobs, checkerboards, textures.

The images differ in colour, orientation, spatial frequency and shape, so even
a small model's units rank them in visibly different ways.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 256


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 1, 3)


def _grating(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    theta = rng.uniform(0, np.pi)
    freq = rng.uniform(2, 16) / SIZE
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 6.3))
    a, b = _colour(rng), _colour(rng)
    return wave[..., None] * a + (1 - wave[..., None]) * b


def _blobs(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    image = np.ones((SIZE, SIZE, 3)) * _colour(rng)
    for _ in range(rng.integers(1, 6)):
        cy, cx, r = rng.uniform(0, SIZE), rng.uniform(0, SIZE), rng.uniform(15, 80)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2) < r**2
        image[mask] = _colour(rng)
    return image


def _checkerboard(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    period = rng.uniform(8, 64)
    board = ((yy // period + xx // period) % 2).astype(float)
    return board[..., None] * _colour(rng) + (1 - board[..., None]) * _colour(rng)


def _texture(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    noise = rng.normal(size=(SIZE // 8, SIZE // 8, 3))
    smooth = (
        np.asarray(
            Image.fromarray(((noise - noise.min()) / np.ptp(noise) * 255).astype(np.uint8)).resize(
                (SIZE, SIZE), Image.BICUBIC
            )
        )
        / 255.0
    )
    return 0.5 * smooth + 0.5 * _colour(rng)


GENERATORS = {"gratings": _grating, "blobs": _blobs, "checkerboards": _checkerboard, "textures": _texture}


def write_demo_dataset(root: Path, images_per_class: int = 80, seed: int = 0) -> Path:
    """Write an ImageFolder tree (one folder per class) of JPEGs; skips files already there."""
    from stimuli.images import write_image_folder

    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(float)

    def render(name: str, rng: np.random.Generator) -> np.ndarray:
        return (np.clip(GENERATORS[name](rng, yy, xx), 0, 1) * 255).astype(np.uint8)

    return write_image_folder(root, list(GENERATORS), render, images_per_class, seed)
