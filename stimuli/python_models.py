"""``source: python``: build a model from any importable callable that returns an ``nn.Module``.

The constructor is ``package.module:callable``, where the callable may be an attribute path
(``efficientnet_pytorch:EfficientNet.from_name``). ``import_path`` folders (relative to the
models file) are searched first, so a model from a paper's repository works without installing
it. Weights come from ``weights_file`` (or ``weights_url``), as for every other source.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from contracts.errors import PsychinterpError
from stimuli.specs import ModelSpec


@contextmanager
def _searched_first(folders: list[str]):
    """``folders`` at the front of ``sys.path`` while importing (the imported modules stay cached)."""
    added = [f for f in folders if f not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for folder in added:
            sys.path.remove(folder)


def resolve_constructor(spec: ModelSpec) -> Callable:
    """The callable named by ``spec.constructor``; every failure names the entry and what is wrong."""
    module_name, _, attribute = spec.constructor.partition(":")
    folders = [str(p) for p in spec.import_path]
    missing = [f for f in folders if not Path(f).is_dir()]
    if missing:
        raise PsychinterpError(f"model {spec.id!r}: import_path folder(s) {missing} do not exist")
    try:
        with _searched_first(folders):
            target = importlib.import_module(module_name)
    except ImportError as exc:
        where = f" (also searched {folders})" if folders else ""
        raise PsychinterpError(
            f"model {spec.id!r}: cannot import {module_name!r} for constructor {spec.constructor!r}{where}: {exc}"
        ) from None
    except Exception as exc:  # the user's module failed while importing
        raise PsychinterpError(
            f"model {spec.id!r}: importing {module_name!r} raised {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise PsychinterpError(f"model {spec.id!r}: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise PsychinterpError(f"model {spec.id!r}: {spec.constructor!r} is a {type(target).__name__}, not callable")
    return target
