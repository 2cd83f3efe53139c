"""Shapes world: a procedural image dataset that a small model can learn in minutes.

Each image shows one coloured shape on a textured background. The class is the
conjunction of the shape's form and colour (``red_disc``, ``blue_cross`` ...); its surface
pattern (solid, stripes at any orientation, dots), size, position and rotation, and the
background (flat, grating, checkerboard, smooth noise), vary freely. A model has to
see colour and shape, and it meets orientation and texture on the way, so its units
come to respond to all four.

Images are written as ImageFolder trees (one folder per class), the layout any real
study's dataset has.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("disc", "square", "triangle", "cross")
COLOURS = {"red": 0.0, "green": 1 / 3, "blue": 2 / 3}  # hue
CLASSES = tuple(f"{colour}_{shape}" for colour in COLOURS for shape in SHAPES)


def _rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.asarray(colorsys.hsv_to_rgb(hue % 1.0, saturation, value))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(float) / size
    # Muted colours, so the object's colour is what stands out.
    a = _rgb(rng.uniform(), rng.uniform(0.0, 0.35), rng.uniform(0.35, 0.9))
    b = _rgb(rng.uniform(), rng.uniform(0.0, 0.35), rng.uniform(0.1, 0.65))
    kind = rng.integers(4)
    if kind == 0:
        mix = np.zeros((size, size))
    elif kind == 1:
        theta, freq = rng.uniform(0, np.pi), rng.uniform(3, 12)
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 6.3))
    elif kind == 2:
        period = rng.uniform(0.06, 0.25)
        mix = ((np.floor(yy / period) + np.floor(xx / period)) % 2).astype(float)
    else:
        coarse = rng.uniform(size=(6, 6))
        mix = np.asarray(Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)) / 255
    return mix[..., None] * a + (1 - mix[..., None]) * b


def _shape_mask(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    """Antialiased mask of one shape at a random size, position and rotation."""
    scale = 4  # drawn large, then reduced: smooth edges
    big = size * scale
    radius = rng.uniform(0.2, 0.34) * big
    cx, cy = rng.uniform(radius, big - radius, size=2)
    angle = rng.uniform(0, 2 * np.pi)
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "disc":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
    else:
        if shape == "square":
            corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * 0.75
        elif shape == "triangle":
            t = np.array([90, 210, 330]) * np.pi / 180
            corners = np.stack([np.cos(t), np.sin(t)], axis=1)
        else:  # a plus-shaped cross
            w = 0.33
            arm = np.array([[-w, -1], [w, -1], [w, -w]])  # one quarter; the others are its rotations
            quarter = np.array([[0, -1], [1, 0]])
            corners = np.concatenate([arm @ np.linalg.matrix_power(quarter, k).T for k in range(4)])
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        points = corners @ rotation.T * radius + [cx, cy]
        draw.polygon([tuple(p) for p in points], fill=255)
    return np.asarray(canvas.resize((size, size), Image.BOX), dtype=float) / 255


def _surface(rng: np.random.Generator, hue: float, size: int) -> np.ndarray:
    colour = _rgb(hue + rng.normal(0, 0.02), rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0))
    kind = rng.integers(3)
    if kind == 0:
        return np.broadcast_to(colour, (size, size, 3))
    yy, xx = np.mgrid[0:size, 0:size].astype(float) / size
    darker = colour * rng.uniform(0.3, 0.6)
    if kind == 1:
        theta, freq = rng.uniform(0, np.pi), rng.uniform(8, 16)
        mix = np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta))) > 0
    else:
        period = rng.uniform(0.06, 0.12)
        mix = ((xx % period - period / 2) ** 2 + (yy % period - period / 2) ** 2) > (period / 3.5) ** 2
    return np.where(mix[..., None], colour, darker)


def render(rng: np.random.Generator, class_name: str, size: int = 128) -> np.ndarray:
    """One uint8 RGB image of the given class."""
    colour, shape = class_name.split("_")
    mask = _shape_mask(rng, shape, size)[..., None]
    image = mask * _surface(rng, COLOURS[colour], size) + (1 - mask) * _background(rng, size)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def write_shapes_world(root: Path, images_per_class: int, seed: int = 0, size: int = 128) -> Path:
    """Write an ImageFolder tree of JPEGs; files already there are kept, so a rerun is quick."""
    from stimuli.images import write_image_folder

    return write_image_folder(root, CLASSES, lambda name, rng: render(rng, name, size), images_per_class, seed)
