"""Exemplar scan overhead: the full scan against a bare forward pass over the same decoded tensors.

The scan decodes JPEGs in DataLoader workers, runs the model with hooks, keeps
only the sampled units' scalars and writes them to a disk-backed array. The
baseline runs the same model over the same images, already decoded in memory.
A second part checks that peak memory does not grow with the number of images
beyond the disk-backed array.

Run: .venv/bin/python benchmarks/bench_scan.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_IMAGES = 2048
BATCH = 32
N_UNITS = 64
TARGET = 1.25
MODEL = {
    "id": "bench_resnet18",
    "display_name": "ResNet-18 (random init)",
    "source": "torchvision",
    "constructor": "resnet18",
    "layers": {"include": ["layer?.*"]},
    "metadata": {"train_images": 1},
}


def _setup(root: Path, n_images: int):
    import torch

    from stimuli.demo.images import write_demo_dataset
    from stimuli.exemplars import ImageTreeDataset
    from stimuli.registry import LoadedModel, build_architecture, eligible_layers
    from stimuli.specs import ModelSpec
    from stimuli.units import sample_units

    write_demo_dataset(root / "images", images_per_class=n_images // 4)
    spec = ModelSpec.model_validate(MODEL)
    torch.manual_seed(0)
    model = LoadedModel(spec=spec, module=build_architecture(spec))
    layers = eligible_layers(model)
    units = sample_units(spec.id, [(l.name, l.channels) for l in layers], N_UNITS, seed=0)
    return model, ImageTreeDataset(root / "images"), [u.ref for u in units]


def measure_peak(n_images: int, workdir: str) -> None:
    """Child process: scan ``n_images`` and print peak RSS."""
    import resource

    from stimuli.exemplars import scan_dataset

    root = Path(workdir)
    model, dataset, units = _setup(root, n_images)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scan_dataset(model, units, dataset, root / "acts.npy", batch_size=BATCH, num_workers=1)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"images": n_images, "rss_before_kib": before, "rss_peak_kib": after}))


def main() -> None:
    import numpy as np
    import torch

    from stimuli.exemplars import scan_dataset
    from stimuli.images import decode_stored_view

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model, dataset, units = _setup(root, N_IMAGES)
        decoded = [
            torch.from_numpy(decode_stored_view(dataset.root / p)).permute(2, 0, 1).float().div(255)
            for p in dataset.paths
        ]
        module = model.module
        with torch.no_grad():
            module(model.normalize(torch.stack(decoded[:BATCH])))  # warm-up
            start = time.perf_counter()
            for k in range(0, len(decoded), BATCH):
                module(model.normalize(torch.stack(decoded[k : k + BATCH])))
            bare = time.perf_counter() - start
        del decoded
        start = time.perf_counter()
        scan = scan_dataset(model, units, dataset, root / "acts.npy", batch_size=BATCH, num_workers=1)
        full = time.perf_counter() - start
        assert np.isfinite(scan.activations).all()

    peaks = []
    for n in (512, 2048):
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(
                [sys.executable, __file__, "--peak", str(n), tmp], capture_output=True, text=True, check=True
            )
            peaks.append(json.loads(out.stdout.strip().splitlines()[-1]))
    growth_kib = peaks[1]["rss_peak_kib"] - peaks[0]["rss_peak_kib"]
    array_kib = (peaks[1]["images"] - peaks[0]["images"]) * N_UNITS * 4 / 1024

    ratio = full / bare
    print(f"exemplar scan: {N_IMAGES} images, {N_UNITS} units, ResNet-18 (random init), batch {BATCH}, 2 threads")
    print(f"{'measurement':<44}{'seconds':>10}{'images/s':>10}")
    print(f"{'bare forward over decoded tensors':<44}{bare:>10.2f}{N_IMAGES / bare:>10.1f}")
    print(f"{'full scan (decode, forward, hooks, write)':<44}{full:>10.2f}{N_IMAGES / full:>10.1f}")
    print()
    print(f"{'images':>8}{'peak RSS MiB':>14}")
    for p in peaks:
        print(f"{p['images']:>8}{p['rss_peak_kib'] / 1024:>14.1f}")
    print(f"peak growth from 512 to 2048 images: {growth_kib / 1024:.1f} MiB")
    print(f"(the disk-backed activation array grows {array_kib / 1024:.2f} MiB)")
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"RESULT scan_overhead {ratio:.2f} x target <={TARGET} {verdict}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--peak":
        measure_peak(int(sys.argv[2]), sys.argv[3])
    else:
        main()
