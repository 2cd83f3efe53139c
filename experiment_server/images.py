"""Images as a participant's browser receives them: nothing in a URL, a header or the bytes says which image it is.

A bundle stores each image once, named by its content hash, and a catch trial's query is a copy of
one of its references. Served as stored, a script would answer catch trials by comparing URLs or
bytes, and main trials by headers. So every image slot of every trial is served

- under a URL that names the session, the trial and the slot, never the image;
- freshly encoded: the PNG rows are filtered with filter types drawn per slot (from a keyed hash),
  so two slots showing the same pixels never share bytes, and every image has the same structure;
- with compressed data of one length within its trial (empty deflate blocks fill each image's data
  to the longest's), so every chunk, and so every file, of a trial has the same length;
- for a catch trial, each query as a fresh transformed copy (a small crop and resize, perhaps a
  mirror, a slight colour jitter: ``CatchCopies``), so that no query equals a reference in pixels;
- with a strong ETag keyed on the slot and the encoded bytes, and one fixed Last-Modified.

Only decoding the pixels and comparing them as a person looks tells two images apart or alike. Encoded
trials are cached on disk (keyed by the server's secret), so a trial is encoded once for every session.
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
from experiment_server.config import CatchCopies

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Part of every cache folder's name: a change of how trials are encoded never meets an older cache.
ENCODING_VERSION = "2"
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


def scanlines(pixels: np.ndarray, seed: bytes) -> bytes:
    """The PNG scanlines of uint8 HxWx3 pixels, each row filtered by a type drawn from ``seed``."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed).digest()[:8], "big"))
    return _filtered(pixels, rng.integers(0, 5, size=pixels.shape[0]))


def _deflate_body(raw: bytes) -> bytes:
    """The zlib header and ``raw`` compressed, ended by a sync flush (byte-aligned, no final block yet)."""
    compressor = zlib.compressobj(6)
    return compressor.compress(raw) + compressor.flush(zlib.Z_SYNC_FLUSH)


def _bits_to_bytes(bits: list[int]) -> bytes:
    """Deflate's bit order: the first bit is the least significant bit of the first byte."""
    bits = bits + [0] * (-len(bits) % 8)
    return bytes(sum(bit << i for i, bit in enumerate(bits[k : k + 8])) for k in range(0, len(bits), 8))


def _empty_blocks(fixed: int) -> bytes:
    """``fixed`` empty fixed-Huffman blocks, then one empty stored block: 5, 6 or 7 bytes for 0, 1, 2 that
    decompress to nothing. (A fixed block is BFINAL 0, BTYPE 01, end-of-block code 0000000: 10 bits; a
    stored block is BFINAL 0, BTYPE 00, padding to the byte, LEN 0 and NLEN 0xFFFF.)"""
    bits = [0, 1, 0] + [0] * 7
    return _bits_to_bytes(bits * fixed + [0, 0, 0]) + b"\x00\x00\xff\xff"


ZLIB_END = b"\x01\x00\x00\xff\xff"  # an empty final stored block (the Adler-32 of the data follows)
MIN_PADDING = 10  # any padding of 10 bytes or more is a sum of 5-, 6- and 7-byte groups


def _padding(n: int) -> bytes:
    """Exactly ``n`` (>= 10) bytes of empty deflate blocks."""
    if n < MIN_PADDING:
        raise ValueError(f"deflate padding of {n} bytes: at least {MIN_PADDING}")
    groups, rest = divmod(n, 5)
    fixed = {0: [], 1: [1], 2: [2], 3: [1, 2], 4: [2, 2]}[rest]
    return b"".join(_empty_blocks(k) for k in fixed) + _empty_blocks(0) * (groups - len(fixed))


def zlib_stream(raw: bytes, body: bytes, length: int) -> bytes:
    """A zlib stream of exactly ``length`` bytes that decompresses to ``raw``: its compressed ``body`` (from
    :func:`_deflate_body`), empty blocks to fill, the final block and the checksum."""
    pad = length - len(body) - len(ZLIB_END) - 4
    return body + _padding(pad) + ZLIB_END + struct.pack(">I", zlib.adler32(raw) & 0xFFFFFFFF)


def png(width: int, height: int, stream: bytes) -> bytes:
    """A truecolour 8-bit PNG of one IDAT chunk holding ``stream``."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", stream) + _chunk(b"IEND", b"")


def encode_trial_pngs(pixels: dict[str, np.ndarray], seeds: dict[str, bytes]) -> dict[str, bytes]:
    """PNGs of several images whose every chunk has the same length in all of them (so do the files): each
    image's compressed data is filled with empty deflate blocks to the length of the longest plus a margin.
    Only decoding tells the images apart; neither sizes nor chunk lengths do."""
    raws = {slot: scanlines(image, seeds[slot]) for slot, image in pixels.items()}
    bodies = {slot: _deflate_body(raw) for slot, raw in raws.items()}
    length = max(len(b) for b in bodies.values()) + MIN_PADDING + len(ZLIB_END) + 4
    return {
        slot: png(pixels[slot].shape[1], pixels[slot].shape[0], zlib_stream(raws[slot], bodies[slot], length))
        for slot in pixels
    }


def encode_png(pixels: np.ndarray, seed: bytes) -> bytes:
    """Lossless PNG of uint8 HxWx3 pixels whose row filters are drawn from ``seed``."""
    return encode_trial_pngs({"image": pixels}, {"image": seed})["image"]


def catch_copy(pixels: np.ndarray, settings: CatchCopies, flip: bool, seed: bytes) -> np.ndarray:
    """A slightly cropped, resized, perhaps mirrored and colour-jittered copy of uint8 HxWx3 ``pixels``."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(b"catch" + seed).digest()[:8], "big"))
    height, width, _ = pixels.shape
    image = Image.fromarray(pixels)
    if settings.crop:
        cut = rng.uniform(settings.crop / 2, settings.crop)
        h, w = max(1, round(height * (1 - cut))), max(1, round(width * (1 - cut)))
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        image = image.crop((left, top, left + w, top + h)).resize((width, height), Image.Resampling.BICUBIC)
    if flip and settings.flip and rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    x = np.asarray(image, dtype=np.float64)
    if settings.jitter:
        brightness, contrast, saturation = rng.uniform(1 - settings.jitter, 1 + settings.jitter, size=3)
        x = x * brightness
        x = (x - x.mean()) * contrast + x.mean()
        grey = x.mean(axis=2, keepdims=True)
        x = (x - grey) * saturation + grey
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def unlike(copy: np.ndarray, others: list[np.ndarray]) -> np.ndarray:
    """``copy``, nudged by one level in one pixel should it equal one of ``others`` (a flat image)."""
    while any(o.shape == copy.shape and np.array_equal(o, copy) for o in others):
        copy = copy.copy()
        copy[0, 0, 0] = (int(copy[0, 0, 0]) + 1) % 256
    return copy


@dataclass(frozen=True)
class ServedImage:
    data: bytes
    etag: str


class TrialImages:
    """The encoded, padded images of each trial's slots, cached on disk and in a small memory cache."""

    def __init__(
        self,
        bundle: Bundle,
        key: bytes,
        cache_dir: Path | None = None,
        memory_trials: int = 64,
        catch_copies: CatchCopies | None = None,
        flip_allowed: bool = True,
    ):
        self.bundle = bundle
        self.key = key
        self.catch_copies = catch_copies or CatchCopies()
        self.flip_allowed = flip_allowed
        tag = hmac.new(key, bundle.manifest.study_id.encode(), hashlib.sha256).hexdigest()[:16]
        # Under the user's home, not a shared /tmp that another account could own and refill.
        self.cache_dir = cache_dir or Path.home() / ".psychinterp" / "served-images"
        self.cache_dir = self.cache_dir / tag
        self._memory: dict[str, dict[str, bytes]] = {}
        self._memory_trials = memory_trials
        self._lock = threading.Lock()
        # One lock per trial being encoded: participants who reach a cold trial together wait for one encoding.
        self._encoding: dict[str, threading.Lock] = {}

    def _mac(self, *parts: str) -> bytes:
        return hmac.new(self.key, "\x1f".join(parts).encode(), hashlib.sha256).digest()

    def _encode_trial(self, trial: Trial) -> dict[str, bytes]:
        pixels = {}
        for slot in slots(trial):
            with Image.open(self.bundle.image_path(slot_image(trial, slot))) as image:
                pixels[slot] = np.asarray(image.convert("RGB"))
        if trial.kind == "catch":
            # Queries copy references (or, odd-one-out, each other): each is served as a transformed copy.
            queries = [slot for slot in pixels if slot.startswith("q")]
            originals = list(pixels.values())
            for slot in queries:
                copy = catch_copy(pixels[slot], self.catch_copies, self.flip_allowed, self._mac(trial.trial_id, slot))
                pixels[slot] = unlike(copy, originals + [pixels[q] for q in queries if q != slot])
        return encode_trial_pngs(pixels, {slot: self._mac(trial.trial_id, slot) for slot in pixels})

    def _folder(self, trial: Trial) -> Path:
        # Named by the trial and every image it shows: a rebuilt bundle with the same trial ids never
        # meets a stale cache.
        return (
            self.cache_dir
            / self._mac(
                "folder",
                ENCODING_VERSION,
                self.catch_copies.model_dump_json(),
                str(self.flip_allowed),
                trial.trial_id,
                *(slot_image(trial, s) for s in slots(trial)),
            ).hex()[:32]
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
            encoding = self._encoding.setdefault(trial.trial_id, threading.Lock()) if cached is None else None
        if cached is None:
            with encoding:
                with self._lock:
                    cached = self._memory.get(trial.trial_id)  # another request encoded it meanwhile
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
            with self._lock:
                self._encoding.pop(trial.trial_id, None)
        return cached

    def get(self, trial: Trial, slot: str) -> ServedImage | None:
        if slot_image(trial, slot) is None:
            return None
        return self.trial_images(trial)[slot]


def decode(data: bytes) -> np.ndarray:
    """Pixels of a served PNG (what a person sees)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))
