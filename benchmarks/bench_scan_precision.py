"""Mixed-precision exemplar scans on GPU: speed against fp32, and the chosen exemplars unchanged.

`psychinterp build --device cuda` scans in fp16 autocast by default, then
re-scores in fp32 every image near a rank that exemplar selection reads
(stimuli.exemplars.exact_at_used_ranks). This script scans one dataset both
ways with a ResNet-50 and checks, for every unit and every query preset, that
the chosen exemplars equal those of the fp32 scan; it also counts how many
units fp16 alone would have changed. Needs a CUDA device; without one it
exits 1 (it could not measure).

Run: .venv/bin/python benchmarks/bench_scan_precision.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

IMAGES_PER_CLASS = 1024  # x 4 classes = 4096 images
N_UNITS = 64
BATCH = 128
PRESETS = ("easy", "hard99", "hard95", "hard85")


def main() -> int:
    import numpy as np
    import torch

    if not torch.cuda.is_available():
        print("bench_scan_precision: no CUDA device; mixed precision is only used on GPU")
        return 1
    from stimuli.demo.images import write_demo_dataset
    from stimuli.exemplars import (
        ImageTreeDataset,
        batch_activations,
        default_num_workers,
        exact_at_used_ranks,
        rescore_rows,
        scan_dataset,
        select_exemplars,
        used_rank_ranges,
    )
    from stimuli.registry import LoadedModel, build_architecture, eligible_layers
    from stimuli.specs import load_model_specs
    from stimuli.units import sample_units

    spec = load_model_specs()["resnet50"]
    torch.manual_seed(0)
    model = LoadedModel(spec, build_architecture(spec).to("cuda"))
    layers = eligible_layers(model)
    units = sample_units(spec.id, [(x.name, x.channels) for x in layers], N_UNITS, seed=0)
    refs = [u.ref for u in units]
    workers = default_num_workers()
    with tempfile.TemporaryDirectory() as tmp:
        dataset = ImageTreeDataset(write_demo_dataset(Path(tmp) / "images", images_per_class=IMAGES_PER_CLASS))
        n = len(dataset)
        by_layer = {}
        for ref in refs:
            by_layer.setdefault(ref.layer, []).append(ref.selector)
        decoded = torch.stack([dataset[i][1] for i in range(1024)]).cuda()
        forward = {}
        for precision in ("fp32", "fp16"):
            batch_activations(model, decoded[:BATCH], by_layer, precision)  # warm-up (cuDNN autotuning)
            torch.cuda.synchronize()
            start = time.perf_counter()
            for k in range(0, len(decoded), BATCH):
                batch_activations(model, decoded[k : k + BATCH], by_layer, precision)
            torch.cuda.synchronize()
            forward[precision] = len(decoded) / (time.perf_counter() - start)
        times, arrays = {}, {}
        for precision in ("fp32", "fp16"):
            torch.cuda.synchronize()
            start = time.perf_counter()
            scan = scan_dataset(model, refs, dataset, Path(tmp) / f"{precision}.npy", BATCH, workers, precision)
            torch.cuda.synchronize()
            times[precision] = time.perf_counter() - start
            arrays[precision] = np.array(scan.activations)
        rows = []
        for preset in PRESETS:
            repaired = arrays["fp16"].copy()
            ranges = used_rank_ranges(n, 20, 9, preset)
            start = time.perf_counter()
            rescored = exact_at_used_ranks(
                repaired, ranges, lambda r: rescore_rows(model, refs, dataset, r, BATCH, workers)
            )
            repair_s = time.perf_counter() - start
            raw_changed = fixed_changed = 0
            for j in range(N_UNITS):
                truth = select_exemplars(arrays["fp32"][:, j], 20, 9, preset)
                raw_changed += select_exemplars(arrays["fp16"][:, j], 20, 9, preset) != truth
                fixed_changed += select_exemplars(repaired[:, j], 20, 9, preset) != truth
            rows.append((preset, raw_changed, fixed_changed, rescored, repair_s))

    max_err = float(np.nanmax(np.abs(arrays["fp16"] - arrays["fp32"])))
    print(f"exemplar scan on {torch.cuda.get_device_name()}: {n} images, {N_UNITS} units, ResNet-50 (random init)")
    print(f"{'precision':<10}{'full scan s':>12}{'forward img/s':>15}")
    for p in ("fp32", "fp16"):
        print(f"{p:<10}{times[p]:>12.2f}{forward[p]:>15.0f}")
    print(f"largest |fp16 - fp32| activation difference: {max_err:.3g}")
    print()
    header = ("queries", "units changed by fp16", "after fp32 repair", "re-scored images", "repair s")
    print(f"{header[0]:<9}{header[1]:>23}{header[2]:>19}{header[3]:>18}{header[4]:>10}")
    for preset, raw, fixed, rescored, seconds in rows:
        print(f"{preset:<9}{raw:>23}{fixed:>19}{rescored:>18}{seconds:>10.2f}")
    changed = sum(r[2] for r in rows)
    verdict = "PASS" if changed == 0 else "FAIL"
    print(f"RESULT amp_exemplars_changed {changed} units target ==0 {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
