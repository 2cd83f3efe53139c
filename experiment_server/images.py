"""Images as a participant's browser receives them: nothing in a URL, a header or the bytes says which image it is.

A bundle stores each image once, named by its content hash, and a catch trial's query is a copy of
one of its references. Served as stored, a script would answer catch trials by comparing URLs or
bytes, and main trials by headers. So every image slot of every trial is served

- under a URL that names the session, the trial and the slot, never the image;
- freshly encoded: the PNG rows are filtered with filter types drawn per slot (from a keyed hash),
  so two slots showing the same pixels never share bytes, and every image has the same structure;
- padded with a private ancillary chunk to the size of the largest image of its trial, so sizes
  within a trial are equal;
- with a strong ETag keyed on the slot and the encoded bytes, and one fixed Last-Modified.

Only decoding the pixels, as a person looks, tells two images apart or alike. Encoded trials are
cached on disk (keyed by the server's secret), so a trial is encoded once for every session.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from contracts.bundle import Bundle, Trial

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Ancillary (lower case), private (lower case), reserved bit clear (upper case), safe to copy (lower case).
PADDING_CHUNK = b"psPd"
# Every image says it was last modified at this moment, so Last-Modified tells nothing.
LAST_MODIFIED = datetime(2000, 1, 1, tzinfo=UTC)


def slots(trial: Trial) -> list[str]:
    """The trial's image slots in a fixed order: max references, min references, queries."""
    refs = trial.references
    return (
        [f"max{i}" for i in range(len(refs.max))]
        + [f"min{i}" for i in range(len(refs.min))]
        + [f"q{i}" for i in range(len(trial.queries))]
    )


def slot_image(trial: Trial, slot: str) -> str | None:
    """The content hash shown in a slot, or None for a slot the trial does not have."""
    kind, digits = slot.rstrip("0123456789"), slot[len(slot.rstrip("0123456789")) :]
    images = {"max": trial.references.max, "min": trial.references.min, "q": trial.queries}.get(kind)
    if images is None or not digits or (len(digits) > 1 and digits[0] == "0") or int(digits) >= len(images):
        return None
    return images[int(digits)]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _filtered(pixels: np.ndarray, filters: np.ndarray) -> bytes:
    """PNG scanlines, each filtered by its own filter type (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth)."""
    height, width, channels = pixels.shape
    x = pixels.reshape(height, width * channels).astype(np.int16)
    left = np.zeros_like(x)
    left[:, channels:] = x[:, :-channels]
    up = np.zeros_like(x)
    up[1:] = x[:-1]
    up_left = np.zeros_like(x)
    up_left[1:, channels:] = x[:-1, :-channels]
    p = left + up - up_left
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
    predictions = np.stack([np.zeros_like(x), left, up, (left + up) // 2, paeth])
    rows = (x - predictions[filters, np.arange(height)]) % 256
    return np.concatenate([filters[:, None].astype(np.uint8), rows.astype(np.uint8)], axis=1).tobytes()


def encode_png(pixels: np.ndarray, seed: bytes) -> bytes:
    """Lossless PNG of uint8 HxWx3 pixels whose row filters are drawn from ``seed``."""
    height, width, _ = pixels.shape
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed).digest()[:8], "big"))
    filters = rng.integers(0, 5, size=height)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(_filtered(pixels, filters), 6))
        + _chunk(b"IEND", b"")
    )


def padded(png: bytes, size: int) -> bytes:
    """The PNG grown to exactly ``size`` bytes by a padding chunk before IEND (every image gets one)."""
    missing = size - len(png) - 12
    if missing < 0:
        raise ValueError(f"cannot pad a {len(png)}-byte image to {size} bytes")
    end = len(png) - 12  # the IEND chunk is the last 12 bytes
    return png[:end] + _chunk(PADDING_CHUNK, bytes(missing)) + png[end:]


@dataclass(frozen=True)
class ServedImage:
    data: bytes
    etag: str


class TrialImages:
    """The encoded, padded images of each trial's slots, cached on disk and in a small memory cache."""

    def __init__(self, bundle: Bundle, key: bytes, cache_dir: Path | None = None, memory_trials: int = 64):
        self.bundle = bundle
        self.key = key
        tag = hmac.new(key, bundle.manifest.study_id.encode(), hashlib.sha256).hexdigest()[:16]
        # Under the user's home, not a shared /tmp that another account could own and refill.
        self.cache_dir = cache_dir or Path.home() / ".psychinterp" / "served-images"
        self.cache_dir = self.cache_dir / tag
        self._memory: dict[str, dict[str, bytes]] = {}
        self._memory_trials = memory_trials
        self._lock = threading.Lock()

    def _mac(self, *parts: str) -> bytes:
        return hmac.new(self.key, "\x1f".join(parts).encode(), hashlib.sha256).digest()

    def _encode_trial(self, trial: Trial) -> dict[str, bytes]:
        encoded = {}
        for slot in slots(trial):
            with Image.open(self.bundle.image_path(slot_image(trial, slot))) as image:
                pixels = np.asarray(image.convert("RGB"))
            encoded[slot] = encode_png(pixels, self._mac(trial.trial_id, slot))
        size = max(len(v) for v in encoded.values()) + 12
        return {slot: padded(data, size) for slot, data in encoded.items()}

    def _folder(self, trial: Trial) -> Path:
        # Named by the trial and every image it shows: a rebuilt bundle with the same trial ids never
        # meets a stale cache.
        return (
            self.cache_dir
            / self._mac("folder", trial.trial_id, *(slot_image(trial, s) for s in slots(trial))).hex()[:32]
        )

    def _from_disk(self, trial: Trial) -> dict[str, bytes] | None:
        folder = self._folder(trial)
        names = slots(trial)
        try:
            return {slot: (folder / f"{slot}.png").read_bytes() for slot in names}
        except OSError:  # not there yet, or a cache that cannot be read: encode again
            return None

    def _to_disk(self, trial: Trial, images: dict[str, bytes]) -> None:
        """Best effort: a cache that was deleted, filled or made unwritable only costs encoding again (the
        images are served from memory), and leaves no temporary file. Only this account may read it."""
        folder = self._folder(trial)
        tmp = None
        try:
            self.cache_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            for level in (self.cache_dir, folder):
                level.mkdir(mode=0o700, exist_ok=True)
            for slot, data in images.items():
                tmp = folder / f".{slot}.{os.getpid()}.{threading.get_ident()}.tmp"
                with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
                    handle.write(data)
                os.replace(tmp, folder / f"{slot}.png")
                tmp = None
        except OSError as exc:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            log.warning("served-image cache %s: %s; serving trial %s from memory", self.cache_dir, exc, trial.trial_id)

    def _served(self, trial: Trial, images: dict[str, bytes]) -> dict[str, ServedImage]:
        """Each slot's bytes with its ETag, computed once per trial as it enters the memory cache."""
        return {
            slot: ServedImage(
                data,
                hmac.new(
                    self.key, trial.trial_id.encode() + slot.encode() + hashlib.sha256(data).digest(), hashlib.sha256
                ).hexdigest()[:32],
            )
            for slot, data in images.items()
        }

    def trial_images(self, trial: Trial) -> dict[str, ServedImage]:
        with self._lock:
            cached = self._memory.get(trial.trial_id)
        if cached is None:
            images = self._from_disk(trial)
            if images is None:
                images = self._encode_trial(trial)
                self._to_disk(trial, images)
            cached = self._served(trial, images)
            with self._lock:
                if len(self._memory) >= self._memory_trials:
                    self._memory.pop(next(iter(self._memory)))
                self._memory[trial.trial_id] = cached
        return cached

    def get(self, trial: Trial, slot: str) -> ServedImage | None:
        if slot_image(trial, slot) is None:
            return None
        return self.trial_images(trial)[slot]


def decode(data: bytes) -> np.ndarray:
    """Pixels of a served PNG (what a person sees)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))
