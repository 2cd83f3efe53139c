"""Direction units in the scan: 64 channels and 256 directions against the same scan with the 64 channels only.

The directions are 128 linear directions (read from the channel means the scan computes anyway)
and 128 encoder latents (a ReLU per position, in the forward hook), spread over four layers of a
random-init ResNet-18 at 224 px. Each scan runs twice, alternating, and the faster run of each
counts. A second part scans 256 and 1,024 images with the directions in child processes: peak
memory must not grow with the number of images beyond the disk-backed array.

Run: .venv/bin/python benchmarks/bench_directions_scan.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scan import MODEL  # noqa: E402  (the same random-init ResNet-18)

N_IMAGES = 1024
BATCH = 32
N_CHANNELS = 64
N_DIRECTIONS = 128  # and as many latents: 256 dictionary rows in all
TARGET = 1.3


def _setup(root: Path, n_images: int):
    import numpy as np
    import torch

    from stimuli.demo.images import write_demo_dataset
    from stimuli.exemplars import ImageTreeDataset
    from stimuli.registry import LoadedModel, build_architecture, eligible_layers
    from stimuli.selectors import BoundUnit, LatentReadout, LinearReadout
    from stimuli.specs import ModelSpec
    from stimuli.units import sample_units

    write_demo_dataset(root / "images", images_per_class=n_images // 4)
    spec = ModelSpec.model_validate(MODEL)
    torch.manual_seed(0)
    model = LoadedModel(spec=spec, module=build_architecture(spec))
    layers = eligible_layers(model)
    channels = [u.ref for u in sample_units(spec.id, [(l.name, l.channels) for l in layers], N_CHANNELS, seed=0)]
    rng = np.random.default_rng(0)
    chosen = [layers[i] for i in np.linspace(0, len(layers) - 1, 4).round().astype(int)]
    directions = []
    for k in range(N_DIRECTIONS):
        layer = chosen[k % len(chosen)]
        vector = rng.normal(size=layer.channels).astype(np.float32)
        directions.append(BoundUnit(layer.name, LinearReadout(vector / np.linalg.norm(vector))))
        weights = rng.normal(size=layer.channels).astype(np.float32) / np.sqrt(layer.channels)
        directions.append(BoundUnit(layer.name, LatentReadout(weights, float(rng.normal(0, 0.1)))))
    return model, ImageTreeDataset(root / "images"), channels, directions


def measure_peak(n_images: int, workdir: str) -> None:
    """Child process: scan ``n_images`` with every direction and print peak RSS."""
    import resource

    from stimuli.exemplars import scan_dataset

    root = Path(workdir)
    model, dataset, channels, directions = _setup(root, n_images)
    scan_dataset(model, [*channels, *directions], dataset, root / "acts.npy", batch_size=BATCH, num_workers=1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"images": n_images, "rss_peak_kib": peak}))


def main() -> None:
    import numpy as np
    import torch

    from stimuli.exemplars import scan_dataset

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, dataset, channels, directions = _setup(root, N_IMAGES)
        runs: dict[str, list[float]] = {"channels": [], "directions": []}
        for attempt in range(2):
            for name, units in (("channels", channels), ("directions", [*channels, *directions])):
                path = root / f"{name}-{attempt}.npy"
                start = time.perf_counter()
                scan = scan_dataset(model, units, dataset, path, batch_size=BATCH, num_workers=1)
                runs[name].append(time.perf_counter() - start)
                assert np.isfinite(scan.activations).all()
                if name == "directions":  # the channels' columns are the channels-only scan's
                    alone = np.load(root / f"channels-{attempt}.npy")
                    np.testing.assert_allclose(np.asarray(scan.activations)[:, :N_CHANNELS], alone, rtol=1e-5)
                del scan
    peaks = []
    for n in (256, 1024):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(
                [sys.executable, __file__, "--peak", str(n), tmp], capture_output=True, text=True, check=True
            )
            peaks.append(json.loads(out.stdout.strip().splitlines()[-1]))
    n_units = N_CHANNELS + 2 * N_DIRECTIONS
    growth_mib = (peaks[1]["rss_peak_kib"] - peaks[0]["rss_peak_kib"]) / 1024
    array_mib = (peaks[1]["images"] - peaks[0]["images"]) * n_units * 4 / 2**20

    base, test = min(runs["channels"]), min(runs["directions"])
    ratio = test / base
    print(f"scan: {N_IMAGES} images, ResNet-18 (random init) at 224 px, batch {BATCH}, 2 threads, 1 decode worker")
    print(f"{'scan':<58}{'seconds (best of 2)':>20}{'images/s':>10}")
    print(f"{f'{N_CHANNELS} channels':<58}{base:>20.2f}{N_IMAGES / base:>10.1f}")
    label = f"{N_CHANNELS} channels + {N_DIRECTIONS} directions + {N_DIRECTIONS} latents"
    print(f"{label:<58}{test:>20.2f}{N_IMAGES / test:>10.1f}")
    print()
    print(f"{'images':>8}{'peak RSS MiB':>14}   (channels and all directions)")
    for p in peaks:
        print(f"{p['images']:>8}{p['rss_peak_kib'] / 1024:>14.1f}")
    print(
        f"peak growth from 256 to 1,024 images: {growth_mib:.1f} MiB (the disk-backed array grows {array_mib:.2f} MiB)"
    )
    verdict = "PASS" if ratio <= TARGET and growth_mib < 32 + array_mib else "FAIL"
    print(f"RESULT directions_scan_overhead {ratio:.2f} x target <={TARGET} {verdict}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--peak":
        measure_peak(int(sys.argv[2]), sys.argv[3])
    else:
        main()
