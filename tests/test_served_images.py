"""The served-image encoder: lossless, never the same bytes twice for one picture, one chunk length per
trial, catch queries that match no reference in bytes or pixels."""

import numpy as np
import pytest

from experiment_server.images import decode, encode_png, encode_trial_pngs, slot_image, slots


@pytest.mark.parametrize("kind", ["noise", "gradient", "flat"])
def test_every_row_filter_decodes_to_the_same_pixels(kind):
    rng = np.random.default_rng(1)
    if kind == "noise":
        pixels = rng.integers(0, 256, size=(37, 29, 3), dtype=np.uint8)
    elif kind == "gradient":
        pixels = np.broadcast_to(np.arange(29, dtype=np.uint8)[None, :, None] * 8, (37, 29, 3)).copy()
    else:
        pixels = np.full((37, 29, 3), 200, np.uint8)
    encodings = {encode_png(pixels, seed=bytes([s])) for s in range(6)}
    assert len(encodings) == 6  # one picture, six byte streams
    for data in encodings:
        assert np.array_equal(decode(data), pixels)


def chunk_lengths(png: bytes) -> list[tuple[bytes, int]]:
    """(type, length) of every chunk, as a script reads them from the header bytes."""
    import struct

    position, chunks = 8, []
    while position + 8 <= len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        chunks.append((png[position + 4 : position + 8], length))
        position += 12 + length
    return chunks


def test_every_chunk_has_one_length_within_a_trial_and_the_pixels_survive():
    """Row filters moved a picture's compressed size by ~1.5 %, two pictures' by ~47 %: "the query whose
    size is nearest a max reference" answered 21 of 24 catch trials from the IDAT lengths alone."""
    import zlib

    rng = np.random.default_rng(2)
    pixels = {
        "flat": np.full((24, 24, 3), 7, np.uint8),
        "noise": rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8),
        "gradient": np.broadcast_to(np.arange(24, dtype=np.uint8)[None, :, None] * 9, (24, 24, 3)).copy(),
        "small": rng.integers(0, 256, size=(5, 3, 3), dtype=np.uint8),
    }
    for seed in range(5):
        served = encode_trial_pngs(pixels, {k: bytes([seed]) + k.encode() for k in pixels})
        assert len({tuple(chunk_lengths(data)) for data in served.values()}) == 1
        assert len({len(data) for data in served.values()}) == 1
        for name, data in served.items():
            assert np.array_equal(decode(data), pixels[name])
            # signature 8, IHDR chunk 25, IDAT length and type 8 ... IDAT CRC 4, IEND chunk 12
            stream = zlib.decompressobj()
            stream.decompress(data[41:-16])
            assert stream.eof and not stream.unused_data  # one complete zlib stream, checksum included


@pytest.mark.parametrize("padding", range(10, 40))
def test_empty_deflate_blocks_fill_any_length_from_ten_bytes(padding):
    import zlib

    from experiment_server.images import MIN_PADDING, ZLIB_END, _deflate_body, zlib_stream

    raw = bytes(range(256)) * 3
    body = _deflate_body(raw)
    length = len(body) + padding + len(ZLIB_END) + 4
    assert padding >= MIN_PADDING
    stream = zlib_stream(raw, body, length)
    assert len(stream) == length and zlib.decompress(stream) == raw


def test_a_catch_copy_is_close_to_what_it_copies_but_never_equal():
    from experiment_server.config import CatchCopies
    from experiment_server.images import catch_copy

    rng = np.random.default_rng(3)
    smooth = np.clip(rng.normal(0, 1, (64, 64, 3)).cumsum(0).cumsum(1) * 4 + 128, 0, 255).astype(np.uint8)
    for seed in range(20):
        copy = catch_copy(smooth, CatchCopies(), True, bytes([seed]))
        assert copy.shape == smooth.shape and not np.array_equal(copy, smooth)
        difference = np.abs(copy.astype(float) - smooth).mean()
        unflipped = np.abs(copy[:, ::-1].astype(float) - smooth).mean()
        assert min(difference, unflipped) < 40  # a slight change: a person still sees the same picture
    off = CatchCopies(crop=0, flip=False, jitter=0)
    assert np.array_equal(catch_copy(smooth, off, True, b"x"), smooth)  # every part can be turned off


def test_slot_names_resolve_only_to_slots_the_trial_has():
    from contracts.bundle import References, Trial

    trial = Trial(
        trial_id="t",
        unit_id="u",
        condition="natural",
        kind="main",
        batch=0,
        max_side="left",
        references=References(min=["a", "b"], max=["c", "f"]),
        queries=["d", "e"],
    )
    assert slots(trial) == ["max0", "max1", "min0", "min1", "q0", "q1"]
    assert [slot_image(trial, s) for s in slots(trial)] == ["c", "f", "a", "b", "d", "e"]
    assert [slot_image(trial, s) for s in ["max2", "q2", "q", "q01", "x0", "-1", "q-1"]] == [None] * 7


class _Bundle:  # the two things TrialImages reads
    def __init__(self, root):
        self.root = root
        self.manifest = type("M", (), {"study_id": "s"})()

    def image_path(self, sha):
        return self.root / f"{sha}.png"


def _trial(shas):
    from contracts.bundle import References, Trial

    refs = References(min=[shas[0]], max=[shas[1]])
    return Trial(trial_id="t", unit_id="u", condition="natural", max_side="left", references=refs, queries=shas[2:])


def _grey_images(folder):
    from PIL import Image

    for name, value in (("a", 10), ("b", 20), ("c", 30), ("d", 40), ("e", 50)):
        Image.new("RGB", (4, 4), (value,) * 3).save(folder / f"{name}.png")


def test_a_rebuilt_bundle_with_the_same_trial_ids_never_gets_stale_cached_images(tmp_path):
    """The disk cache is keyed by the trial's images as well as its id."""
    from experiment_server.images import TrialImages

    _grey_images(tmp_path)
    images = TrialImages(_Bundle(tmp_path), b"k", cache_dir=tmp_path / "cache")
    first = decode(images.get(_trial(["a", "b", "c", "d"]), "q0").data)
    fresh = TrialImages(_Bundle(tmp_path), b"k", cache_dir=tmp_path / "cache")  # another process, same cache
    second = decode(fresh.get(_trial(["a", "b", "e", "d"]), "q0").data)
    assert first[0, 0, 0] == 30 and second[0, 0, 0] == 50


def test_the_served_image_cache_is_private_and_best_effort(tmp_path, caplog):
    """A deleted, full or unwritable cache gave 500s and left .tmp files; folders were 0755."""
    import stat

    from experiment_server.images import TrialImages

    _grey_images(tmp_path)
    images = TrialImages(_Bundle(tmp_path), b"k", cache_dir=tmp_path / "cache")
    images.get(_trial(["a", "b", "c", "d"]), "q0")
    written = [p for p in (tmp_path / "cache").rglob("*")]
    assert written and not [p for p in written if p.name.endswith(".tmp")]
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path

    (tmp_path / "blocked").write_text("a file where the cache folder should be")
    broken = TrialImages(_Bundle(tmp_path), b"k", cache_dir=tmp_path / "blocked")
    with caplog.at_level("WARNING", logger="experiment_server.images"):
        served = broken.get(_trial(["a", "b", "e", "d"]), "q0")
    assert decode(served.data)[0, 0, 0] == 50 and "serving trial t from memory" in caplog.text
