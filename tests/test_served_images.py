"""The served-image encoder: lossless, never the same bytes twice for one picture, exact padding."""

import numpy as np
import pytest

from experiment_server.images import PADDING_CHUNK, decode, encode_png, padded, slot_image, slots


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


def test_padding_reaches_the_exact_size_and_keeps_the_pixels():
    pixels = np.random.default_rng(2).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    data = encode_png(pixels, b"s")
    grown = padded(data, len(data) + 500)
    assert len(grown) == len(data) + 500 and PADDING_CHUNK in grown
    assert np.array_equal(decode(grown), pixels)
    assert len(padded(data, len(data) + 12)) == len(data) + 12  # the largest image gets an empty chunk
    with pytest.raises(ValueError, match="cannot pad"):
        padded(data, len(data))


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
