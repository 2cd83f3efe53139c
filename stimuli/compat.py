"""Make ``import torchvision`` work when its compiled ops cannot load.

The registry's torchvision 0.28.0 wheel is a CUDA build. Paired with the CPU
build of torch 2.13.0, its ``_C`` extension fails to load, and torchvision's own
import then dies in ``register_fake("torchvision::nms")`` because the op schema
was never defined. This module defines the schemas that torchvision's import
needs, and only in that case. ``torchvision.ops`` stays unusable; nothing in
this project calls it. On a matching install (CPU or CUDA) it does nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

LUCENT_MISSING = (
    "lucent is not installed ({reason}). Install it without its stale pins: "
    "pip install --no-deps torch-lucent==0.1.8   (see DEVELOPERS.md)"
)

# Copied from torchvision/csrc/ops/{nms,quantized/cpu/qnms_kernel}.cpp (0.28.0).
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)

_library = None  # keeps the registration alive for the life of the process


def _extension_loads(package_dir: Path) -> bool:
    import torch

    candidates = sorted(package_dir.glob("_C*.so")) + sorted(package_dir.glob("_C*.pyd"))
    if not candidates:
        return True  # nothing to load: let torchvision report its own problem
    try:
        torch.ops.load_library(str(candidates[0]))
    except OSError:
        return False
    return True


def ensure_torchvision_importable() -> bool:
    """Define torchvision's op schemas if its extension cannot load.

    Returns True when it had to register them. Call before the first import of
    torchvision, timm, open_clip or lucent.
    """
    global _library
    if _library is not None or "torchvision" in sys.modules:
        return False
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    if _extension_loads(Path(next(iter(spec.submodule_search_locations)))):
        return False

    import torch

    library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        library.define(schema)
    _library = library
    return True
